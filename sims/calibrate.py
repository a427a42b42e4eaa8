"""Calibration: the same small scenario (10 nodes, 50 jobs by default) in the simulator and on a real local testnet.

    python -m sims.calibrate [--nodes 10] [--jobs 50] [--redundancy 1] [--no-real]

Prints both claim-latency distributions side by side. The real side runs ``sandrun-p2p testnet --json``;
when that command is missing, fails, or its summary carries no claim timestamps, the real column says
so (exit status 0: the simulator side is still valid; 1 only if the simulator itself fails).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from typing import Any

from . import scenario as sc_mod
from .metrics import quantiles
from .runner import run_scenario


def sim_side(nodes: int, jobs: int, k: int) -> dict[str, Any]:
    d = {
        "name": "calibration",
        "seed": 1,
        "protocol": {"shard_bits": 0, "advert_interval": 10, "fallback_interval": 2, "commit_grace": 10,
                     "reveal_window": 10, "require_stake": True},
        # loopback testnet: sub-millisecond links; the agent's own processing dominates
        "network": {"latency": {"dist": "uniform", "mean": 0.0005, "spread": 0.5}, "mesh_degree": 6},
        "nodes": [{"count": nodes, "max_jobs": 2}],
        "jobs": {"count": jobs, "rate": 2.0, "mix": [{"timeout": 30, "runtime_mean": 1.0, "redundancy": k}]},
    }
    return run_scenario(sc_mod.from_dict(d), None, plots=False)["metrics"]


def _claim_latencies(summary: dict[str, Any]) -> list[float]:
    """Seconds from submission to first claim, when the testnet summary carries timestamps."""
    out = []
    for j in summary.get("jobs", []):
        t0 = j.get("submitted_at")
        times = [c.get("at") for c in j.get("claimants", []) if isinstance(c, dict) and c.get("at") is not None]
        if t0 is not None and times:
            out.append(min(times) - t0)
    return out


def real_side(nodes: int, jobs: int, k: int, timeout: int) -> tuple[dict[str, float] | None, str]:
    exe = shutil.which("sandrun-p2p")
    if exe is None:
        return None, "sandrun-p2p is not installed"
    cmd = [exe, "testnet", "--nodes", str(nodes), "--jobs", str(jobs), "--redundancy", str(k), "--json",
           "--timeout", str(timeout)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 120)
    except subprocess.TimeoutExpired:
        return None, f"testnet did not finish within {timeout + 120} s"
    try:
        summary = json.loads(p.stdout)
    except json.JSONDecodeError:
        return None, f"testnet exited {p.returncode} without a JSON summary: {p.stderr.strip()[-300:]}"
    lat = _claim_latencies(summary)
    if not lat:
        t = summary.get("totals", {})
        return None, (f"testnet ran ({t.get('settled')} of {t.get('jobs')} settled, {t.get('jobs_wall_s')} s) but its "
                      "summary has no per-job submission/claim timestamps (needs jobs[].submitted_at and "
                      "jobs[].claimants[].at)")
    return quantiles(lat), ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--redundancy", type=int, default=1)
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--no-real", action="store_true")
    a = ap.parse_args(argv)
    sim = sim_side(a.nodes, a.jobs, a.redundancy)
    s = sim["claim_latency_s"]
    real, why = (None, "skipped (--no-real)") if a.no_real else real_side(a.nodes, a.jobs, a.redundancy, a.timeout)
    print(f"claim latency (s), {a.nodes} nodes, {a.jobs} jobs, k={a.redundancy}")
    print(f"{'':>6} {'simulator':>12} {'testnet':>12}")
    for q in ("p50", "p90", "p99", "mean", "max"):
        r = f"{real[q]:12.4f}" if real else f"{'n/a':>12}"
        print(f"{q:>6} {s[q]:12.4f} {r}")
    if real is None:
        print(f"real side unavailable: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
