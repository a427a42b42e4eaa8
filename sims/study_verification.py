"""Adaptive verification vs plain 2-of-3 under 20% colluders: one table and one plot.

    python -m sims.study_verification --out DIR [--jobs 1000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
from pathlib import Path

SCEN = Path(__file__).parent / "scenarios"
#: checks only on trusted nodes (JobSpec.executors); until enough are trusted, two random checkers that must agree
GATED = {"verification.gate_checks": True, "verification.open_check_redundancy": 2}
CASES = [
    ("2-of-3 random committees", "collusion_20.toml", {}),
    ("adaptive (trust.py)", "collusion_20_adaptive.toml", {}),
    ("adaptive, always-cheat colluders", "collusion_20_adaptive.toml", {"adversaries.0.strategy": "always"}),
    ("adaptive, sleeper colluders", "collusion_20_adaptive.toml", {"adversaries.0.strategy": "sleeper"}),
    ("adaptive + trust-gated checks", "collusion_20_adaptive.toml", GATED),
    ("gated, always-cheat colluders", "collusion_20_adaptive.toml", {**GATED, "adversaries.0.strategy": "always"}),
    ("gated, sleeper colluders", "collusion_20_adaptive.toml", {**GATED, "adversaries.0.strategy": "sleeper"}),
]


def _one(case: tuple[str, str, dict, int]) -> dict:
    from . import scenario
    from .runner import run_scenario

    label, file, over, jobs = case
    m = run_scenario(scenario.load(SCEN / file, {**over, "jobs.count": jobs}))["metrics"]
    st = m["stake"]
    return {"label": label, "wrong_rate": m["wrong_accepted"]["rate"], "wrong": m["wrong_accepted"]["count"],
            "overhead": m["executions"]["per_accepted_job"], "accepted": m["jobs"]["accepted"],
            "cheaters": st["cheaters"], "cheaters_slashed": st["cheaters_slashed"],
            "honest_slashed": st["honest_slashed"], "gas_per_job": m["gas"]["per_job"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--jobs", type=int, default=1000)
    a = ap.parse_args(argv)
    with multiprocessing.get_context("spawn").Pool() as pool:
        rows = pool.map(_one, [(lbl, f, o, a.jobs) for lbl, f, o in CASES])
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "verification.json").write_text(json.dumps(rows, indent=1) + "\n")
    from .plots import verification_plot

    verification_plot(rows, 0.2, a.out / "verification.png")
    print("| scheme | executions/job | wrong accepted | cheaters slashed | honest slashed | gas/job |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['overhead']:.2f} | {r['wrong']}/{r['accepted']} ({r['wrong_rate']:.2e}) | "
              f"{r['cheaters_slashed']}/{r['cheaters']} | {r['honest_slashed']} | {r['gas_per_job']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
