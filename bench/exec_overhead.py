"""Sandbox overhead per job: ``python3 -c pass`` through LocalExecutor.run vs bare, median of N runs.

Usage: .venv/bin/python bench/exec_overhead.py [N]   (goal: p50 overhead <= 40 ms with full isolation)
       .venv/bin/python bench/exec_overhead.py --gpu [N]   (a small examples/gpu-cuda run, CUDA start-up
       included on both sides: what the sandbox adds to a GPU job; needs an NVIDIA GPU)
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import trio

from sandrun_p2p.exec import LocalExecutor
from sandrun_p2p.protocol.jobspec import Manifest


def bare(n: int, argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(argv, check=True, cwd=cwd, env=env, stdout=subprocess.DEVNULL)
        out.append(time.perf_counter() - t)
    return out


async def sandboxed(ex: LocalExecutor, job: Path, n: int, m: Manifest) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        r = await ex.run(job, m, i.to_bytes(32, "big"))
        out.append(time.perf_counter() - t)
        assert r.trace.exit_code == 0, r.stderr.read_text()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("runs", nargs="?", type=int, default=50, help="runs of each kind (default 50)")
    ap.add_argument("--gpu", action="store_true", help="a small CUDA job (examples/gpu-cuda) instead of pass")
    args = ap.parse_args()
    n = args.runs
    interp = "/usr/bin/python3"  # the interpreter the sandbox resolves for "python3"
    with tempfile.TemporaryDirectory() as td:
        ex = LocalExecutor(work_root=Path(td) / "runs", detect_gpus=args.gpu)
        if args.gpu and not ex.gpus:
            raise SystemExit("exec_overhead.py --gpu: no NVIDIA GPU seen through NVML on this machine")
        if args.gpu:
            job = Path(td) / "job"
            shutil.copytree(Path(__file__).resolve().parents[1] / "examples" / "gpu-cuda", job)
            env = {"N": "1024", "ROUNDS": "10"}
            m = Manifest.from_dict({**json.loads((job / "job.json").read_text()), "env": env})
            what = "examples/gpu-cuda, N=1024 ROUNDS=10"
            b_times = bare(n, [interp, "xorshift.py"], cwd=job, env={**env, "PATH": "/usr/bin:/bin"})
        else:
            job = Path(td) / "job"
            job.mkdir()
            (job / "main.py").write_text("pass\n")
            m = Manifest.from_dict({"entrypoint": "main.py", "args": [], "timeout": 30})
            what = "python3 -c pass"
            b_times = bare(n, [interp, "-c", "pass"])
        b = statistics.median(b_times) * 1000
        s_times = trio.run(sandboxed, ex, job, n, m)
        s = statistics.median(s_times) * 1000
        p90 = statistics.quantiles(s_times, n=10)[-1] * 1000
    print(f"runs: {n} of {what}")
    print(f"bare                     p50 {b:7.1f} ms")
    print(f"sandboxed (full run)     p50 {s:7.1f} ms   p90 {p90:7.1f} ms")
    print(f"overhead                 p50 {s - b:7.1f} ms   ratio {s / b:5.2f}x   (goal <= 40 ms)")
    print("enforced: " + ", ".join(f"{k}={v}" for k, v in ex.enforced.items()))
    if args.gpu:
        print("gpus: " + ", ".join(g["model"] for g in ex.gpus))


if __name__ == "__main__":
    main()
