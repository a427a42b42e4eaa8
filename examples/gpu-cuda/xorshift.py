"""GPU job with no dependency but the NVIDIA driver: one CUDA kernel, loaded through the driver API.

Each of N GPU threads runs ROUNDS steps of xorshift32 from the seed ``i + 1``; the job writes the
SHA-256 of the N results (little-endian uint32) and a few of them to ``xorshift.json``. Integer
arithmetic is bit-exact on every NVIDIA card, so peers with different GPUs reach the same trace root
without a compare rule. It never falls back to the CPU: no driver or no device is a failed run
(exit status 3), and the runtime error is on stderr.

Locally: ``sandrun-p2p exec --code examples/gpu-cuda --manifest examples/gpu-cuda/job.json``.
"""

import ctypes
import hashlib
import json
import os
import sys

PTX = rb"""
.version 6.0
.target sm_50
.address_size 64
.visible .entry xorshift(.param .u64 out, .param .u32 n, .param .u32 rounds)
{
  .reg .pred %p<3>;
  .reg .b32 %r<10>;
  .reg .b64 %rd<4>;
  ld.param.u64 %rd1, [out];
  ld.param.u32 %r1, [n];
  ld.param.u32 %r2, [rounds];
  mov.u32 %r3, %ctaid.x;
  mov.u32 %r4, %ntid.x;
  mov.u32 %r5, %tid.x;
  mad.lo.u32 %r6, %r3, %r4, %r5;
  setp.ge.u32 %p1, %r6, %r1;
  @%p1 bra DONE;
  add.u32 %r7, %r6, 1;
  mov.u32 %r8, 0;
LOOP:
  setp.ge.u32 %p2, %r8, %r2;
  @%p2 bra STORE;
  shl.b32 %r9, %r7, 13;
  xor.b32 %r7, %r7, %r9;
  shr.u32 %r9, %r7, 17;
  xor.b32 %r7, %r7, %r9;
  shl.b32 %r9, %r7, 5;
  xor.b32 %r7, %r7, %r9;
  add.u32 %r8, %r8, 1;
  bra LOOP;
STORE:
  cvta.to.global.u64 %rd2, %rd1;
  mul.wide.u32 %rd3, %r6, 4;
  add.u64 %rd2, %rd2, %rd3;
  st.global.u32 [%rd2], %r7;
DONE:
  ret;
}
"""


def fail(msg: str) -> None:
    print(msg, file=sys.stderr)
    sys.exit(3)


try:
    cuda = ctypes.CDLL("libcuda.so.1")
except OSError as e:
    fail(f"no NVIDIA driver library in this sandbox: {e}")


def check(rc: int, what: str) -> None:
    if rc != 0:
        name = ctypes.c_char_p()
        cuda.cuGetErrorName(rc, ctypes.byref(name))
        fail(f"{what} failed: {(name.value or b'?').decode()} ({rc})")


n, rounds = int(os.environ.get("N", "1048576")), int(os.environ.get("ROUNDS", "1000"))
dev, ctx, mod, fn, buf = (
    ctypes.c_int(),
    ctypes.c_void_p(),
    ctypes.c_void_p(),
    ctypes.c_void_p(),
    ctypes.c_uint64(),
)
check(cuda.cuInit(0), "cuInit")
check(cuda.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
check(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
check(cuda.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
check(cuda.cuModuleLoadData(ctypes.byref(mod), ctypes.c_char_p(PTX)), "cuModuleLoadData")
check(cuda.cuModuleGetFunction(ctypes.byref(fn), mod, b"xorshift"), "cuModuleGetFunction")
check(cuda.cuMemAlloc_v2(ctypes.byref(buf), ctypes.c_size_t(4 * n)), "cuMemAlloc")
args = [buf, ctypes.c_uint32(n), ctypes.c_uint32(rounds)]
params = (ctypes.c_void_p * 3)(*(ctypes.cast(ctypes.byref(a), ctypes.c_void_p) for a in args))
block = 256
check(
    cuda.cuLaunchKernel(fn, (n + block - 1) // block, 1, 1, block, 1, 1, 0, None, params, None),
    "cuLaunchKernel",
)
check(cuda.cuCtxSynchronize(), "cuCtxSynchronize")
host = (ctypes.c_uint32 * n)()
check(cuda.cuMemcpyDtoH_v2(host, buf, ctypes.c_size_t(4 * n)), "cuMemcpyDtoH")
check(cuda.cuMemFree_v2(buf), "cuMemFree")
check(cuda.cuModuleUnload(mod), "cuModuleUnload")
check(cuda.cuDevicePrimaryCtxRelease_v2(dev), "cuDevicePrimaryCtxRelease")

digest = hashlib.sha256(bytes(host)).hexdigest()  # ctypes arrays are native (little-endian) uint32
with open("xorshift.json", "w") as f:
    json.dump({"n": n, "rounds": rounds, "sha256": digest, "first": list(host[:4])}, f, sort_keys=True)
    f.write("\n")
print(f"n={n} rounds={rounds} sha256={digest}")
