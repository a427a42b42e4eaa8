"""`sandrun-p2p testnet` end to end on the real contracts (anvil when installed, else the embedded devnet)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_testnet_three_nodes_three_jobs_k2_settle(tmp_path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "sandrun_p2p", "testnet", "--nodes", "3", "--jobs", "3", "--redundancy", "2",
         "--json", "--data-dir", str(tmp_path / "net"), "--timeout", "120"],
        capture_output=True, text=True, timeout=280,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["chain"] in ("anvil", "embedded")
    assert out["chain"] in r.stderr  # the progress output says which chain it used
    assert out["totals"]["settled"] == 3 and out["totals"]["not_settled"] == 0
    for j in out["jobs"]:
        assert j["state"] == "settled"
        assert len(j["claimants"]) == 2
        assert set(j["trace_roots"].values()) == {j["accepted_root"]}
        assert j["paid_wei"] > 0
    assert "mesh formed" in r.stderr and "stopping every node" in r.stderr


def test_testnet_rejects_bad_arguments() -> None:
    r = subprocess.run([sys.executable, "-m", "sandrun_p2p", "testnet", "--nodes", "2", "--redundancy", "3"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--redundancy must be between 1 and" in r.stderr
