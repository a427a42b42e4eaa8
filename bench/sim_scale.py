"""Simulator scale: wall time and peak memory for N nodes x J jobs (message-level, real NodeCore).

    python bench/sim_scale.py                       # 1k and 10k nodes, 100k jobs each (the goal: 10k x 100k <= 60 s)
    python bench/sim_scale.py --nodes 10000 --jobs 2000

Each size runs in a fresh process (peak RSS is per process). Shards are sized to ~20 nodes
(shard_bits = round(log2(N / 20))); jobs arrive at 20% of the network's capacity.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys


def scenario(nodes: int, jobs: int) -> dict:
    bits = max(0, round(math.log2(nodes / 20)))
    return {
        "name": f"scale_{nodes}x{jobs}",
        "seed": 1,
        "horizon": 1e7,
        "drain": 5.0,
        "protocol": {"shard_bits": bits, "advert_interval": 60, "fallback_interval": 2, "commit_grace": 10,
                     "reveal_window": 10, "require_stake": True},
        "nodes": [{"count": nodes, "max_jobs": 2}],
        "jobs": {"count": jobs, "rate": 0.02 * nodes, "mix": [{"timeout": 120, "runtime_mean": 20}]},
    }


def one(nodes: int, jobs: int) -> dict:
    from sims import scenario as sc_mod
    from sims.runner import run_scenario

    doc = run_scenario(sc_mod.from_dict(scenario(nodes, jobs)), None, plots=False)
    m = doc["metrics"]
    return {"nodes": nodes, "jobs": jobs, **doc["run"], "accepted": m["jobs"]["accepted"],
            "sim_seconds": m["sim_seconds"], "shards": m["shards"],
            "us_per_job": round(doc["run"]["wall_s"] / jobs * 1e6)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, action="append")
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(one(a.nodes[0], a.jobs)))
        return 0
    for n in a.nodes or [1000, 10_000]:
        p = subprocess.run([sys.executable, __file__, "--child", "--nodes", str(n), "--jobs", str(a.jobs)],
                           capture_output=True, text=True)
        if p.returncode:
            print(f"{n} nodes: failed\n{p.stderr[-2000:]}")
            continue
        r = json.loads(p.stdout)
        goal = "" if (n, a.jobs) != (10_000, 100_000) else f"  (goal <= 60 s: {'met' if r['wall_s'] <= 60 else 'NOT met'})"
        print(f"{n:>6} nodes x {a.jobs:>6} jobs: {r['wall_s']:8.1f} s wall, {r['peak_rss_mb']:7.1f} MB peak, "
              f"{r['events']:>9} events, {r['us_per_job']} us/job, {r['accepted']} accepted, "
              f"{r['shards']} shards{goal}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
