"""GPU job: multiplies two matrices on the GPU with PyTorch when it is there, and records the device.

It needs a node with a GPU (manifest gpu.required); on a network without one it is refunded with the
reason ("no GPU meets the requirement"). Results are rounded before hashing (compare rule), since GPU
kernels need not be bit-identical across cards.
"""
import json

try:
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator(device="cpu").manual_seed(7)
    a = torch.rand(512, 512, generator=g).to(dev)
    b = torch.rand(512, 512, generator=g).to(dev)
    c = (a @ b).sum().item()
    name = torch.cuda.get_device_name(0) if dev == "cuda" else "cpu"
except ImportError:
    dev, name, c = "none", "torch not installed", 0.0
with open("matmul.json", "w") as f:
    json.dump({"device": dev, "name": name, "checksum": round(c, 3)}, f, sort_keys=True)
    f.write("\n")
print(dev, name)
