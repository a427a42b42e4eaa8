"""Calibration: claim latency read from the testnet's JSON summary, and the simulator side of the comparison."""

from __future__ import annotations

import pytest

from sims.calibrate import from_summary, sim_side, table


def test_claim_latency_from_the_testnet_summary() -> None:
    summary = {"jobs": [
        {"job_id": "01", "submitted_at": 10.0, "announced_at": 10.1, "claims": [{"node": "bb", "at": 10.25}, {"node": "aa", "at": 10.4}],
         "runs": [{"node": "bb", "started_at": 10.25, "committed_at": 11.0}]},
        {"job_id": "02", "submitted_at": 20.0, "claims": [{"node": "aa", "at": 20.5}], "runs": []},
        {"job_id": "03", "submitted_at": 30.0, "claims": [], "runs": []},  # nobody claimed: no latency
    ]}  # fmt: skip
    lat, submits, execs, from_announce = from_summary(summary)
    assert [round(x, 6) for x in lat] == [0.25, 0.5]
    assert [round(x, 6) for x in from_announce] == [0.15]  # only job 01 names its announcement
    assert submits == [10.0, 20.0, 30.0]
    assert [round(x, 6) for x in execs] == [0.75]


def test_summary_without_submission_times_is_refused() -> None:
    with pytest.raises(ValueError, match="submitted_at"):
        from_summary({"jobs": [{"job_id": "01", "claimants": ["aa"]}]})


def test_sim_side_runs_the_testnet_parameters() -> None:
    lat = sim_side(5, 20, 1, rate=4.0, runtime=0.5)
    assert len(lat) == 20 and all(0 <= x < 5 for x in lat)
    out = table({"simulator": lat, "testnet": None})
    assert "p99" in out and "n/a" in out
    assert out.splitlines()[1].split() == ["n", "20", "n/a"]
