"""Sandbox overhead per job: ``python3 -c pass`` through LocalExecutor.run vs bare, median of N runs.

Usage: .venv/bin/python bench/exec_overhead.py [N]   (goal: p50 overhead <= 40 ms with full isolation)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import trio

from sandrun_p2p.exec import LocalExecutor
from sandrun_p2p.protocol.jobspec import Manifest


def bare(n: int, interp: str) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run([interp, "-c", "pass"], check=True)
        out.append(time.perf_counter() - t)
    return out


async def sandboxed(ex: LocalExecutor, job: Path, n: int) -> list[float]:
    m = Manifest.from_dict({"entrypoint": "main.py", "args": [], "timeout": 30})
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
    n = ap.parse_args().runs
    with tempfile.TemporaryDirectory() as td:
        job = Path(td) / "job"
        job.mkdir()
        (job / "main.py").write_text("pass\n")
        ex = LocalExecutor(work_root=Path(td) / "runs", detect_gpus=False)
        interp = "/usr/bin/python3"  # the interpreter the sandbox resolves for "python3"
        b = statistics.median(bare(n, interp)) * 1000
        s_times = trio.run(sandboxed, ex, job, n)
        s = statistics.median(s_times) * 1000
        p90 = statistics.quantiles(s_times, n=10)[-1] * 1000
    print(f"runs: {n}")
    print(f"bare python3 -c pass     p50 {b:7.1f} ms")
    print(f"sandboxed (full run)     p50 {s:7.1f} ms   p90 {p90:7.1f} ms")
    print(f"overhead                 p50 {s - b:7.1f} ms   ratio {s / b:5.2f}x   (goal <= 40 ms)")
    print("enforced: " + ", ".join(f"{k}={v}" for k, v in ex.enforced.items()))


if __name__ == "__main__":
    main()
