"""Calibration: the same small scenario in the simulator and on a real local testnet, claim latency side by side.

    python -m sims.calibrate [--nodes 5] [--jobs 20] [--redundancy 1] [--no-real]

The real side runs ``sandrun-p2p testnet --json --data-dir TMP`` (separate agent processes on loopback, a
local chain). Its JSON summary has no per-job times, so claim latency is read from the agents' journals
afterwards (the same ``events`` that ``GET /v1/jobs/<id>`` serves): from the origin's ``announced`` event to
the first ``claimed`` event (each claimant records its own claim when it publishes it). The simulator is then
fed what the testnet run measured (arrival rate, execution time) and the testnet's protocol parameters, and
both distributions are printed. Exit status: 0 with both sides; 1 when the real side is unavailable or
failed (the reason is printed; ``--no-real`` skips it and exits 0).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
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

    claim_latency: list[float]
    submit_times: list[float]
    exec_times: list[float]
    settled: int
    jobs: int
    wall_s: float
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        span = max(self.submit_times) - min(self.submit_times) if len(self.submit_times) > 1 else 0.0
        return (len(self.submit_times) - 1) / span if span > 0 else 1.0


def sim_side(nodes: int, jobs: int, k: int, rate: float = 2.0, runtime: float = 1.0) -> list[float]:
    """Claim latencies (s) of the calibration scenario in the simulator, with the testnet's protocol values."""
    from sandrun_p2p.agent.testnet import TESTNET_CORE

    proto = {key: v for key, v in TESTNET_CORE.items() if key != "require_escrow"}  # escrow funding: not modelled
    d = {
        "name": "calibration",
        "seed": 1,
        "protocol": {"shard_bits": 0, **proto},
        # loopback testnet: sub-millisecond links; the agent's own processing dominates
        "network": {"latency": {"dist": "uniform", "mean": 0.0005, "spread": 0.5}, "mesh_degree": 6},
        "nodes": [{"count": nodes, "max_jobs": 2}],
        "jobs": {"count": jobs, "rate": rate, "start": 1.0,
                 "mix": [{"timeout": 30, "runtime_mean": runtime, "runtime_cv": 0.3, "redundancy": k}]},
    }
    sim = Simulator(sc_mod.from_dict(d))
    sim.run()
    return claim_latencies(sim)


def _journal(node_dir: Path) -> tuple[str, list[tuple[str, str, str, float]]]:
    """(this node's id, [(job_id, state, node, at)]) from an agent's data directory (read-only)."""
    me = json.loads((node_dir / "control.json").read_text())["node_id"]
    db = sqlite3.connect(f"file:{node_dir / 'journal.sqlite'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT job_id, state, node, at FROM events ORDER BY id").fetchall()
    finally:
        db.close()
    return me, [(bytes(j).hex(), s, bytes(n).hex(), float(a)) for j, s, n, a in rows]


def from_journals(data_dir: Path, job_ids: list[str]) -> tuple[list[float], list[float], list[float]]:
    """Per job: claim latency, submission time (origin's clock) and execution time (claimant's clock)."""
    announced: dict[str, float] = {}
    first_claim: dict[str, float] = {}
    running: dict[tuple[str, str], float] = {}
    execs: dict[str, float] = {}
    for node_dir in sorted(p for p in data_dir.iterdir() if (p / "journal.sqlite").is_file()):
        me, rows = _journal(node_dir)
        for jid, state, node, at in rows:
            if node != me:
                continue  # only what this node did itself, on its own clock
            if state == "announced":
                announced[jid] = at
            elif state == "claimed":
                first_claim[jid] = min(at, first_claim.get(jid, at))
            elif state == "running":
                running[(jid, me)] = at
            elif state == "committed" and (jid, me) in running and jid not in execs:
                execs[jid] = at - running[(jid, me)]
    lat = [first_claim[j] - announced[j] for j in job_ids if j in announced and j in first_claim]
    return lat, [announced[j] for j in job_ids if j in announced], list(execs.values())


def real_side(nodes: int, jobs: int, k: int, timeout: int) -> tuple[RealRun | None, str]:
    exe = shutil.which("sandrun-p2p") or str(Path(sys.executable).with_name("sandrun-p2p"))
    if not Path(exe).exists():
        return None, "sandrun-p2p is not installed"
    with tempfile.TemporaryDirectory(prefix="sims-calibrate-") as tmp:
        cmd = [exe, "testnet", "--nodes", str(nodes), "--jobs", str(jobs), "--redundancy", str(k), "--json",
               "--timeout", str(timeout), "--data-dir", tmp]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 180)
        except subprocess.TimeoutExpired:
            return None, f"testnet did not finish within {timeout + 180} s"
        try:
            summary = json.loads(p.stdout)
        except json.JSONDecodeError:
            return None, f"testnet exited {p.returncode} without a JSON summary: {p.stderr.strip()[-400:]}"
        ids = [j["job_id"] for j in summary.get("jobs", [])]
        lat, submits, execs = from_journals(Path(tmp), ids)
    t = summary.get("totals", {})
    run = RealRun(lat, submits, execs, int(t.get("settled", 0)), int(t.get("jobs", len(ids))),
                  float(summary.get("wall_s", 0.0)))
    if p.returncode:
        run.notes.append(f"testnet exited {p.returncode}: {run.settled} of {run.jobs} jobs settled")
    if not lat:
        return None, (f"testnet ran ({run.settled} of {run.jobs} settled) but no job had both an 'announced' "
                      "event at its origin and a 'claimed' event in the agents' journals")
    if len(lat) < len(ids):
        run.notes.append(f"{len(ids) - len(lat)} job(s) without a claim in the journals")
    return run, ""


def table(sim: list[float], real: list[float] | None) -> str:
    s, r = quantiles(sim), quantiles(real) if real else None
    lines = [f"{'':>6} {'simulator':>12} {'testnet':>12}", f"{'n':>6} {len(sim):>12} {len(real) if real else 'n/a':>12}"]
    for q in ROWS:
        lines.append(f"{q:>6} {s[q]:12.4f} " + (f"{r[q]:12.4f}" if r else f"{'n/a':>12}"))
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
        print(f"running a real testnet: {a.nodes} agents, {a.jobs} jobs, k={a.redundancy} ...", file=sys.stderr)
        real, why = real_side(a.nodes, a.jobs, a.redundancy, a.timeout)
    rate = real.rate if real else 2.0
    runtime = statistics.median(real.exec_times) if real and real.exec_times else 1.0
    sim = sim_side(a.nodes, a.jobs, a.redundancy, rate, runtime)
    print(f"claim latency (s), origin's announcement -> first claim; {a.nodes} nodes, {a.jobs} jobs, "
          f"k={a.redundancy}")
    print(table(sim, real.claim_latency if real else None))
    print(f"simulator fed: arrival rate {rate:.2f}/s, execution time {runtime:.3f} s"
          + (" (both measured on the testnet)" if real else " (defaults)"))
    if real is None:
        print(f"real side unavailable: {why}")
        return 0 if a.no_real else 1
    print(f"testnet: {real.settled} of {real.jobs} settled, {real.wall_s} s wall; the simulator does not model "
          "escrow funding (the testnet's nodes claim only once the chain shows the job funded)")
    for n in real.notes:
        print(f"note: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
