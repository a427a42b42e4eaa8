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
    sc = scenario.load(SCEN, {"jobs.count": jobs, "adversaries.0.strategy": strategy,
                              "verification.challenge_window": window})
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
