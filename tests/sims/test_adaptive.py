"""Adaptive verification with optimistic finality in the simulator (the real NodeCore, seeded adversaries)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from sims import scenario
from sims.engine import HONEST, Simulator, correct_root

SCEN = Path(scenario.__file__).parent / "scenarios" / "collusion_20_optimistic.toml"


@cache
def _run(strategy: str, jobs: int = 400, window: float = 600.0) -> Simulator:
    sc = scenario.load(
        SCEN,
        {"jobs.count": jobs, "adversaries.0.strategy": strategy, "verification.challenge_window": window},
    )
    sim = Simulator(sc)
    sim.run()
    return sim


@pytest.mark.parametrize("strategy", ["committee", "always"])
def test_every_cheater_slashed_no_honest_node_and_no_wrong_result_final(strategy: str) -> None:
    sim = _run(strategy)
    slashed = {n for n, w in sim.chain.slashed_wei.items() if w > 0}
    cheaters = [n for n in sim.nodes if n.kind != HONEST and n.cheated]
    assert len(cheaters) >= 30  # most of the 40 colluders cheated at least once
    assert all(n.nid in slashed for n in cheaters)
    assert not [n for n in sim.nodes if n.kind == HONEST and n.nid in slashed]
    s = sim.client.summary()
    prim = [r for r in sim.jobs if r.check_of is None]
    assert s["released"] == len(prim)  # every job got a result
    assert s["wrong_final"] == 0 and all(r.final_root == correct_root(r.comp) for r in prim)
    assert not sim.client.ledger.open and sim.open == 0  # every window ended before the run did


def test_overturned_results_were_wrong_at_release_and_are_right_now() -> None:
    sim = _run("committee")
    c = sim.client
    over = [r for r in sim.jobs if r.check_of is None and c.released[r.i] != r.final_root]
    assert over and len(over) == c.overturned == c.summary()["wrong_provisional"]
    assert all(c.released[r.i] != correct_root(r.comp) == r.final_root for r in over)


def test_without_a_window_results_are_final_at_release() -> None:
    sim = _run("committee", jobs=150, window=0.0)
    s = sim.client.summary()
    assert s["audits"] == 0 and s["overturned"] == 0 and s["wrong_final"] == s["wrong_provisional"]
    assert sim.now < 1000  # no window keeps the run going


def test_study_pools_seeds_per_case_and_run_length() -> None:
    from sims import study_verification as sv

    run = {
        "label": "x",
        "accepted": 100,
        "executions": 125,
        "released": 100,
        "wrong_provisional": 2,
        "wrong_final": 0,
        "cheaters": 4,
        "cheaters_slashed": 4,
        "honest_slashed": 0,
        "gas": 1000,
        "submitted": 100,
    }
    rows = sv.pool_rows(
        [{**run, "case": "sleeper", "jobs": 10, "seed": s} for s in (4, 5)]
        + [{**run, "case": "committee", "jobs": 10, "seed": 4}]
    )
    assert [(r["case"], r["seeds"]) for r in rows] == [("committee", [4]), ("sleeper", [4, 5])]
    assert (
        rows[1]["overhead"] == 1.25
        and rows[1]["wrong_provisional_rate"] == 0.02
        and rows[1]["released"] == 200
    )
    assert "| x | 10 x 2 | 1.250 | 4/200 (2.0e-02) | 0/200 (0.0e+00) | 8/8 | 0 | 10 |" in sv.table(rows)


def test_study_rejects_an_unknown_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sims import study_verification as sv

    with pytest.raises(SystemExit):
        sv.main(["--out", str(tmp_path), "--cases", "committee,nosuch"])
    assert "unknown case(s) nosuch" in capsys.readouterr().err
