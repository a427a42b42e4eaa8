"""A run split over processes by shard group gives the metrics of the whole run (per-node random streams)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sims import runner, scenario
from sims.engine import Simulator
from sims.runner import run_scenario, shard_groups

SCEN = Path(__file__).resolve().parents[2] / "sims" / "scenarios"


def small(name: str, **over) -> scenario.Scenario:
    return scenario.load(SCEN / f"{name}.toml", {"rng_streams": "node", **over})


@pytest.mark.parametrize(
    "name,over",
    [
        # k=1 and 2-of-3 jobs, 8 shards; some nodes serve 2 shards (coupled shards stay in one process), joiners
        (
            "baseline",
            {
                "jobs.count": 300,
                "nodes.0.count": 120,
                "nodes.0.shards_per_node": 1,
                "churn.joins": 10,
                "churn.join_start": 5,
                "churn.join_end": 30,
            },
        ),
        # every cheating kind: executions, reveals and slashes per shard
        (
            "adversaries",
            {"jobs.count": 120},
        ),
        # the partition is drawn on the shared stream
        (
            "partition_heal",
            {"jobs.count": 200, "nodes.0.count": 80},
        ),
    ],
)
@pytest.mark.parametrize(
    "workers,group_nodes",
    [
        (2, 0),  # one group per process
        (2, 15),  # groups of ~15 nodes, several after one another in each of 2 processes
        (1, 15),  # the same in this process, no fork
    ],
)
def test_split_run_gives_the_whole_runs_metrics(
    name: str, over: dict, workers: int, group_nodes: int
) -> None:
    sc = small(name, **over)
    whole = run_scenario(sc, plots=False, group_nodes=0)
    assert "groups" not in whole["run"]
    split = run_scenario(sc, plots=False, workers=workers, group_nodes=group_nodes)
    assert split["run"]["processes"] == workers
    assert split["run"]["groups"] >= (workers if group_nodes == 0 else 4)
    assert split["metrics"] == whole["metrics"]
    assert split["run"]["events"] == whole["run"]["events"]
    assert whole["metrics"]["jobs"]["submitted"] == over["jobs.count"]


def test_a_process_that_takes_no_piece_changes_nothing() -> None:
    """The processes take pieces as they free up; one that finds none left (more processes than pieces here)
    reports so, and the run ends as the whole run does, with its metrics and its event count."""
    sc = small("baseline", **{"jobs.count": 120, "nodes.0.count": 60})
    whole = run_scenario(sc, plots=False, group_nodes=0)
    sim = Simulator(sc)
    pieces = runner._pieces(sim, shard_groups(sim, 2))
    assert len(pieces) == 2
    with runner.no_gc_passes():
        runner._run_split(sim, pieces, processes=4)  # (at least two of the four take nothing)
    assert runner.metrics_mod.compute(sim) == whole["metrics"]
    assert sim.events == whole["run"]["events"]


def test_shard_groups_never_split_a_node() -> None:
    sc = small("baseline", **{"nodes.0.count": 60, "nodes.0.shards_per_node": 2, "protocol.shard_bits": 4})
    sim = Simulator(sc)
    groups = shard_groups(sim, 2)
    assert sorted(s for g in groups for s in g) == list(range(16))
    for n in sim.nodes:
        assert sum(1 for g in groups if n.shards & g) == 1  # every node's shards lie in exactly one group


@pytest.mark.parametrize(
    "over,why",
    [
        ({"rng_streams": "global"}, "rng_streams"),
        ({"churn.fraction": 0.3, "churn.crash_rate_per_h": 2.0}, "crashes"),
    ],
)
def test_unsplittable_runs_are_refused_with_the_reason(over: dict, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        run_scenario(small("baseline", **{"jobs.count": 10, **over}), plots=False, workers=2)


def test_unknown_rng_streams_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="rng_streams"):
        small("baseline", rng_streams="shard")


def test_a_failing_process_is_an_error_not_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(sim: Simulator, shards: frozenset[int], members: list[int], conn: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(runner, "_worker", broken)  # the forked workers inherit the patch
    with pytest.raises(RuntimeError, match="simulator process failed"):
        run_scenario(small("baseline", **{"jobs.count": 10, "nodes.0.count": 40}), plots=False, workers=2)


def test_cli_group_nodes_gives_the_same_metrics_and_rejects_a_negative_size(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from sims.cli import main

    args = ["run", str(SCEN / "baseline.toml"), "--json", "--no-plots"]
    sets = ["--set", "rng_streams=node", "--set", "jobs.count=40", "--set", "nodes.0.count=60"]
    docs = []
    for g in ("0", "10"):
        assert main([*args, *sets, "--group-nodes", g]) == 0
        docs.append(json.loads(capsys.readouterr().out))
    assert "groups" not in docs[0]["run"] and docs[1]["run"]["groups"] >= 4
    assert docs[0]["metrics"] == docs[1]["metrics"]
    with pytest.raises(SystemExit, match="--group-nodes must be 0 or more"):
        main([*args, "--group-nodes", "-1"])
