"""Calibration: the same small scenario in the simulator and on a real local testnet, claim latency side by side.

    python -m sims.calibrate [--nodes 5] [--jobs 20] [--redundancy 1] [--no-real]

The real side runs ``sandrun-p2p testnet --json`` (separate agent processes on loopback, a local chain). Claim
latency is read from its summary: from a job's ``submitted_at`` (the testnet's client, just before
``POST /v1/jobs``) to the earliest of its ``claims[].at`` (each claimant's own record of its claim), the same
span the simulator measures (submission to first claim). The simulator is then
fed what the testnet run measured (arrival rate, execution time) and the testnet's protocol parameters, and
both distributions are printed. Exit status: 0 with both sides; 1 when the real side is unavailable or
failed (the reason is printed; ``--no-real`` skips it and exits 0).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import scenario as sc_mod
from .engine import Simulator
from .metrics import claim_latencies, quantiles

ROWS = ("p50", "p90", "p99", "mean", "max")


@dataclass
class RealRun:
    """What one testnet run measured."""

    claim_latency: list[float]  # submission -> first claim
    submit_times: list[float]
    exec_times: list[float]
    settled: int
    jobs: int
    wall_s: float
    notes: list[str] = field(default_factory=list)
    # origin's announcement (after escrow) -> first claim
    from_announce: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        span = max(self.submit_times) - min(self.submit_times) if len(self.submit_times) > 1 else 0.0
        return (len(self.submit_times) - 1) / span if span > 0 else 1.0


def sim_side(nodes: int, jobs: int, k: int, rate: float = 2.0, runtime: float = 1.0) -> list[float]:
    """Claim latencies (s) of the calibration scenario in the simulator, with the testnet's protocol values."""
    from sandrun_p2p.agent.testnet import TESTNET_CORE

    # escrow funding: not modelled
    proto = {key: v for key, v in TESTNET_CORE.items() if key != "require_escrow"}
    d = {
        "name": "calibration",
        "seed": 1,
        "protocol": {"shard_bits": 0, **proto},
        # loopback testnet: sub-millisecond links; the agent's own processing dominates
        "network": {"latency": {"dist": "uniform", "mean": 0.0005, "spread": 0.5}, "mesh_degree": 6},
        "nodes": [{"count": nodes, "max_jobs": 2}],
        "jobs": {
            "count": jobs,
            "rate": rate,
            "start": 1.0,
            "mix": [{"timeout": 30, "runtime_mean": runtime, "runtime_cv": 0.3, "redundancy": k}],
        },
    }
    sim = Simulator(sc_mod.from_dict(d))
    sim.run()
    return claim_latencies(sim)


def from_summary(summary: dict) -> tuple[list[float], list[float], list[float], list[float]]:
    """From ``testnet --json``: per job, claim latency (``submitted_at`` to the earliest of ``claims[].at``),
    submission time and latency from the origin's announcement (``announced_at``, after the escrow), and every
    execution time (``runs[]``: running to committed)."""
    lat, submits, execs, from_announce = [], [], [], []
    for j in summary.get("jobs", []):
        if "submitted_at" not in j:
            raise ValueError("the testnet summary has no jobs[].submitted_at (an older sandrun-p2p?)")
        submits.append(float(j["submitted_at"]))
        if j.get("claims"):
            first = min(float(c["at"]) for c in j["claims"])
            lat.append(first - float(j["submitted_at"]))
            if j.get("announced_at") is not None:
                from_announce.append(first - float(j["announced_at"]))
        execs += [float(r["committed_at"]) - float(r["started_at"]) for r in j.get("runs", [])]
    return lat, submits, execs, from_announce


def real_side(nodes: int, jobs: int, k: int, timeout: int) -> tuple[RealRun | None, str]:
    exe = shutil.which("sandrun-p2p") or str(Path(sys.executable).with_name("sandrun-p2p"))
    if not Path(exe).exists():
        return None, "sandrun-p2p is not installed"
    with tempfile.TemporaryDirectory(prefix="sims-calibrate-") as tmp:
        cmd = [
            exe,
            "testnet",
            "--nodes",
            str(nodes),
            "--jobs",
            str(jobs),
            "--redundancy",
            str(k),
            "--json",
            "--timeout",
            str(timeout),
            "--data-dir",
            tmp,
        ]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 180)
        except subprocess.TimeoutExpired:
            return None, f"testnet did not finish within {timeout + 180} s"
    try:
        summary = json.loads(p.stdout)
        lat, submits, execs, from_announce = from_summary(summary)
    except json.JSONDecodeError:
        return None, f"testnet exited {p.returncode} without a JSON summary: {p.stderr.strip()[-400:]}"
    except (ValueError, KeyError, TypeError) as e:
        return None, f"testnet summary not understood: {e}"
    t = summary.get("totals", {})
    n = len(summary.get("jobs", []))
    run = RealRun(
        lat,
        submits,
        execs,
        int(t.get("settled", 0)),
        int(t.get("jobs", n)),
        float(summary.get("wall_s", 0.0)),
    )
    run.from_announce = from_announce
    if p.returncode:
        run.notes.append(f"testnet exited {p.returncode}: {run.settled} of {run.jobs} jobs settled")
    if not lat:
        return (
            None,
            f"testnet ran ({run.settled} of {run.jobs} settled) but no job has a claim in its summary",
        )
    if len(lat) < n:
        run.notes.append(f"{n - len(lat)} job(s) without a claim")
    return run, ""


def table(columns: dict[str, list[float] | None]) -> str:
    """Quantiles of each named sample side by side (``None``: not measured)."""
    qs = {name: quantiles(v) if v else None for name, v in columns.items()}
    lines = [
        f"{'':>6} " + " ".join(f"{name:>14}" for name in columns),
        f"{'n':>6} " + " ".join(f"{len(v) if v else 'n/a':>14}" for v in columns.values()),
    ]
    for q in ROWS:
        lines.append(f"{q:>6} " + " ".join(f"{r[q]:14.4f}" if r else f"{'n/a':>14}" for r in qs.values()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--redundancy", type=int, default=1)
    ap.add_argument("--timeout", type=int, default=300, help="the testnet's --timeout (mesh and jobs)")
    ap.add_argument("--no-real", action="store_true", help="simulator side only")
    a = ap.parse_args(argv)
    real: RealRun | None = None
    why = "skipped (--no-real)"
    if not a.no_real:
        print(
            f"running a real testnet: {a.nodes} agents, {a.jobs} jobs, k={a.redundancy} ...", file=sys.stderr
        )
        real, why = real_side(a.nodes, a.jobs, a.redundancy, a.timeout)
    rate = real.rate if real else 2.0
    runtime = statistics.median(real.exec_times) if real and real.exec_times else 1.0
    sim = sim_side(a.nodes, a.jobs, a.redundancy, rate, runtime)
    print(f"claim latency (s), submission -> first claim; {a.nodes} nodes, {a.jobs} jobs, k={a.redundancy}")
    print(
        table(
            {
                "simulator": sim,
                "testnet": real.claim_latency if real else None,
                "testnet*": real.from_announce if real else None,
            }
        )
    )
    print(
        "testnet*: from the origin's announcement, after its escrow transaction (submission also includes the "
        "upload and the escrow)"
    )
    print(
        f"simulator fed: arrival rate {rate:.2f}/s, execution time {runtime:.3f} s"
        + (" (both measured on the testnet)" if real else " (defaults)")
    )
    if real is None:
        print(f"real side unavailable: {why}")
        return 0 if a.no_real else 1
    print(
        f"testnet: {real.settled} of {real.jobs} settled, {real.wall_s} s wall; the simulator does not model "
        "escrow funding (the testnet's nodes claim only once the chain shows the job funded)"
    )
    for n in real.notes:
        print(f"note: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
