"""Adaptive verification vs plain 2-of-3 under 20% colluders: one table and one plot.

    python -m sims.study_verification --out DIR [--jobs 1000,10000] [--seeds 4,5] [--cases 2of3,committee]

Each case runs once per (run length, seed) through the real NodeCore; results are appended to
DIR/verification.json (so runs can be split over several invocations), pooled over seeds per (case,
run length), printed as a table and drawn in DIR/verification.png with plain 2-of-3's 3f^2-2f^3.
"Provisional" counts wrong results when they were released to the client; "final" after every
challenge window has ended (the same for schemes without a window).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
from pathlib import Path
from typing import Any

SCEN = Path(__file__).parent / "scenarios"
F = 0.2  # colluding share in every case
#: name -> (label, scenario file, overrides)
CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "2of3": ("2-of-3 random committees, colluding group", "collusion_20.toml", {}),
    "committee": ("adaptive optimistic, colluding group", "collusion_20_optimistic.toml", {}),
    "always": (
        "adaptive optimistic, always-cheat",
        "collusion_20_optimistic.toml",
        {"adversaries.0.strategy": "always"},
    ),
    "sleeper": (
        "adaptive optimistic, sleepers",
        "collusion_20_optimistic.toml",
        {"adversaries.0.strategy": "sleeper"},
    ),
    "nowindow": (
        "adaptive gated, no window, sleepers",
        "collusion_20_optimistic.toml",
        {"adversaries.0.strategy": "sleeper", "verification.challenge_window": 0.0},
    ),
}


def run_case(name: str, jobs: int, seed: int) -> dict[str, Any]:
    """One seeded run: raw counts (pooled later)."""
    from . import metrics, scenario
    from .engine import Simulator
    from .runner import no_gc_passes

    label, file, over = CASES[name]
    sim = Simulator(scenario.load(SCEN / file, {**over, "jobs.count": jobs, "seed": seed}))
    with no_gc_passes():
        sim.run()
    m = metrics.compute(sim)
    wrong = m["wrong_accepted"]["count"]
    c = sim.client.summary() if sim.client is not None else {}
    st = m["stake"]
    return {
        "case": name,
        "label": label,
        "jobs": jobs,
        "seed": seed,
        "accepted": m["jobs"]["accepted"],
        "executions": m["executions"]["started"],
        "released": c.get("released", m["jobs"]["accepted"]),
        "wrong_provisional": c.get("wrong_provisional", wrong),
        "wrong_final": wrong,
        "cheaters": st["cheaters"],
        "cheaters_slashed": st["cheaters_slashed"],
        "honest_slashed": st["honest_slashed"],
        "gas": m["gas"]["total"],
        "submitted": m["jobs"]["submitted"],
        "audits": c.get("audits", 0),
        "disputes": c.get("disputes", 0),
        "overturned": c.get("overturned", 0),
    }


def _run(args: tuple[str, int, int]) -> dict[str, Any]:
    return run_case(*args)


def pool_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pool runs over seeds per (case, run length), in CASES order then by run length."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["case"], r["jobs"]), []).append(r)
    order = list(CASES)
    rows = []
    for (case, jobs), rs in sorted(groups.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])):
        s = {
            k: sum(r[k] for r in rs)
            for k in (
                "accepted",
                "executions",
                "released",
                "wrong_provisional",
                "wrong_final",
                "cheaters",
                "cheaters_slashed",
                "honest_slashed",
                "gas",
                "submitted",
            )
        }
        rows.append(
            {
                "case": case,
                "label": rs[0]["label"],
                "jobs": jobs,
                "seeds": sorted(r["seed"] for r in rs),
                **s,
                "overhead": s["executions"] / max(1, s["accepted"]),
                "wrong_provisional_rate": s["wrong_provisional"] / max(1, s["released"]),
                "wrong_final_rate": s["wrong_final"] / max(1, s["accepted"]),
                "gas_per_job": s["gas"] / max(1, s["submitted"]),
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| scheme, adversary | jobs x seeds | executions/job | wrong accepted, provisional | wrong accepted, final "
        "| cheaters slashed | honest slashed | gas/job |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['label']} | {r['jobs']} x {len(r['seeds'])} | {r['overhead']:.3f} | "
            f"{r['wrong_provisional']}/{r['released']} ({r['wrong_provisional_rate']:.1e}) | "
            f"{r['wrong_final']}/{r['accepted']} ({r['wrong_final_rate']:.1e}) | "
            f"{r['cheaters_slashed']}/{r['cheaters']} | {r['honest_slashed']} | {r['gas_per_job']:,.0f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--jobs", default="1000", help="run lengths, comma-separated")
    ap.add_argument("--seeds", default="4", help="seeds, comma-separated (pooled per row)")
    ap.add_argument("--cases", default="2of3,committee,always,sleeper", help=f"of {','.join(CASES)}")
    ap.add_argument("--procs", type=int, default=2)
    a = ap.parse_args(argv)
    cases = a.cases.split(",")
    bad = [c for c in cases if c not in CASES]
    if bad:
        ap.error(f"unknown case(s) {', '.join(bad)}; known: {', '.join(CASES)}")
    tasks = [(c, int(j), int(s)) for c in cases for j in a.jobs.split(",") for s in a.seeds.split(",")]
    with multiprocessing.get_context("spawn").Pool(max(1, a.procs)) as pool:
        new = pool.map(_run, tasks)
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "verification.json"
    old = json.loads(path.read_text()) if path.exists() else []
    keep = {(r["case"], r["jobs"], r["seed"]) for r in new}
    runs = [r for r in old if (r["case"], r["jobs"], r["seed"]) not in keep] + new
    path.write_text(json.dumps(runs, indent=1) + "\n")
    rows = pool_rows(runs)
    from .plots import verification_plot

    verification_plot(rows, F, a.out / "verification.png")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
