"""GPU job: multiplies two matrices on the GPU with PyTorch and records the device.

It needs a node with a GPU (manifest gpu.required) and PyTorch in the host's /usr or in a job runtime the
operator offers (`sandrun-p2p agent --job-runtime /opt/torch/.venv`); on a network without a GPU node it is
refunded with the reason ("no GPU meets the requirement"). It never falls back to the CPU: no PyTorch or no CUDA device is a failed run (exit status 3, reason on
stderr). Results are rounded before hashing (compare rule), since GPU kernels need not be bit-identical
across cards. examples/gpu-cuda needs nothing but the NVIDIA driver.
"""

import json
import sys

try:
    import torch
except ImportError:
    print("PyTorch is not installed in this node's job runtime", file=sys.stderr)
    sys.exit(3)
if not torch.cuda.is_available():
    print("PyTorch sees no CUDA device in this sandbox", file=sys.stderr)
    sys.exit(3)
g = torch.Generator(device="cpu").manual_seed(7)
a = torch.rand(512, 512, generator=g).to("cuda")
b = torch.rand(512, 512, generator=g).to("cuda")
c = (a @ b).sum().item()
with open("matmul.json", "w") as f:
    json.dump({"device": "cuda", "checksum": round(c, 3)}, f, sort_keys=True)
    f.write("\n")
print("cuda")
