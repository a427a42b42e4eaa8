"""Adaptive verification end to end: real agents (one with the test-only faulty executor), the client SDK.

The primary job is pinned to the faulty node (``JobSpec.executors``) so the test does not depend on the claim
ranking; everything after that is the verifier's own choice: an always-on check for an unknown executor on
another node, a tie-break, the verdict, and the result of a re-run handed out instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sandrun_p2p.client import Client
from sandrun_p2p.client.adaptive import AdaptiveVerifier, TrustStore
from sandrun_p2p.protocol import trust

from .cluster import ROOT, running_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
EX = ROOT / "examples" / "primes"
FAULTY = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    with running_cluster(tmp_path_factory.mktemp("adaptive"), 4, faulty=(FAULTY,)) as c:
        yield c


async def test_faulty_executor_is_caught_by_a_spot_check_and_its_result_replaced(
    cluster, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("SANDRUN_P2P_HOME", str(tmp_path / "home"))
    policy = trust.TrustPolicy(dispute_redundancy=2, verdict_target=0.05)  # 3 honest nodes can outvote one
    bad = cluster.nodes[FAULTY].node_id
    async with Client(str(cluster.nodes[0].data_dir)) as c:
        v = AdaptiveVerifier(c, TrustStore(c.records.root, policy), timeout=120)
        rec = await v.submit(
            EX, EX / "job.json", value_usd=0.05, encrypt=False, escrow="peer", executors=[bad]
        )
        assert rec.job_spec().redundancy == 1
        out = await v.verify(rec.job_id)
        assert out.checked and out.check_rate == 1.0
        assert out.verdict == "overturned" and out.caught == [bad.hex()]
        assert out.executors == [bad.hex()] and len(out.reruns) >= 2
        for jid in out.reruns:  # nobody re-ran it on the node being checked
            view = await c.peer().job(jid)  # the peer the jobs went through
            assert bad.hex() not in view["reveals"]
        trace = await c.result(out.result_job, tmp_path / "out")
    assert trace.status == "exited" and (tmp_path / "out").exists()
    again = TrustStore(tmp_path / "home" / "client", policy)
    assert again.book.records[bad].faults == 1 and again.book.trust(bad) == 0.0


def test_cli_submit_verify_adaptive(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """`sandrun-p2p submit --verify adaptive` on an honest mesh: k = 1 from the value, the unknown executor's
    result spot-checked on another node, released, fetched and verified; the trust file remembers both."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT), "SANDRUN_P2P_HOME": str(tmp_path / "home")}
    with running_cluster(tmp_path_factory.mktemp("adaptive-cli"), 3) as c:
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "sandrun_p2p",
                "submit",
                "--peer",
                str(c.nodes[0].data_dir),
                "--code",
                str(EX),
                "--manifest",
                str(EX / "job.json"),
                "--verify",
                "adaptive",
                "--value-usd",
                "0.05",
                "--escrow",
                "peer",
                "--no-encrypt",
                "--out",
                str(tmp_path / "out"),
                "--timeout",
                "120",
                "--json",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    ver = out["verification"]
    assert ver["checked"] and ver["verdict"] == "released" and len(ver["reruns"]) == 1 and not ver["caught"]
    assert out["status"] == "exited" and (tmp_path / "out" / "primes.txt").exists()
    book = json.loads((tmp_path / "home" / "client" / "trust.json").read_text())["nodes"]
    assert len(book) == 2 and all(v[0] == 1 for v in book.values())  # both executors verified once
