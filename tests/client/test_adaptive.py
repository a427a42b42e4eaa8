"""Adaptive verification in the client (sandrun_p2p.client.adaptive) against a scripted network.

The network is a stand-in for the peer (nodes, job views, stored traces) that runs every job on the first
allowed node(s) in a fixed rotation; bad nodes report a wrong stdout hash, as the agent's test-only faulty
executor does. Every other piece is real: job specs and records, trust rules, traces and their digests.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from sandrun_p2p.client import RecordStore
from sandrun_p2p.client.adaptive import AdaptiveVerifier, TrustStore
from sandrun_p2p.client.errors import ClientError, ResultRejected
from sandrun_p2p.client.records import JobRecord
from sandrun_p2p.client.sdk import Update
from sandrun_p2p.protocol import trust
from sandrun_p2p.protocol.claiming import REQUIRED_ENFORCEMENT
from sandrun_p2p.protocol.encoding import canonical, sha256
from sandrun_p2p.protocol.jobspec import JobSpec
from sandrun_p2p.protocol.trace import Trace, computation_digest

from .helpers import MANIFEST

CAPS = {
    "cpus": 4,
    "mem_mb": 8192,
    "disk_mb": 10000,
    "gpus": [],
    "max_jobs": 2,
    "enforced": sorted(REQUIRED_ENFORCEMENT),
}
POLICY = trust.TrustPolicy(probation=2, dispute_redundancy=2, verdict_target=0.05, check_pool_min=1)


class FakeNet:
    """Peer + client stand-in: runs each job on its first allowed node(s) in rotation."""

    def __init__(self, root: Path, n: int, bad: set[int]) -> None:
        self.ids = [bytes([i + 1]) * 32 for i in range(n)]
        self.bad = {self.ids[i] for i in bad}
        self.records = RecordStore(root)
        self.views: dict[str, dict[str, Any]] = {}
        self.blobs: dict[str, bytes] = {}
        self.turn = 0
        self.jobs_run: list[tuple[str, tuple[bytes, ...]]] = []
        self.tamper_trace = False
        self.fail_tiebreaks = 0  # the next this many tie-break jobs (k >= 2 re-runs) end refunded
        self.failed: set[str] = set()

    # -- the Client surface AdaptiveVerifier uses
    async def submit(
        self, code: Any, manifest: Any, *, redundancy: int, quorum: int, executors: tuple[bytes, ...] = ()
    ) -> JobRecord:
        return self._run(redundancy, quorum, executors, note="")

    async def rerun(
        self, job_id: str, *, redundancy: int, quorum: int | None, executors: tuple[bytes, ...] = ()
    ) -> JobRecord:
        return self._run(redundancy, quorum or redundancy, tuple(executors), note=job_id)

    async def wait(self, job_id: str, timeout: float | None = None) -> Update:
        return Update("refunded", "quorum not reached") if job_id in self.failed else Update("settled")

    def peer_of(self, rec: JobRecord) -> FakeNet:
        return self

    async def nodes(self) -> list[dict[str, Any]]:
        return [{"node_id": n.hex(), "caps": CAPS, "staked": True, "fresh": True} for n in self.ids]

    async def job(self, job_id: str) -> dict[str, Any]:
        return self.views[job_id]

    async def blob(self, cid: str, *, tar: bool = False) -> bytes:
        return self.blobs[cid]

    # -- the scripted network
    def _run(self, k: int, q: int, executors: tuple[bytes, ...], note: str) -> JobRecord:
        spec = JobSpec.from_dict(
            {
                "code_cid": "bafkreiabcdefgh",
                "manifest": MANIFEST,
                "redundancy": k,
                "quorum": q,
                "deadline": 2_000_000_000,
                "nonce": os.urandom(16),
                "payment_wei": 10**15,
                "executors": sorted(executors),
            }
        )
        jid = spec.job_id.hex()
        pool = sorted(executors) if executors else self.ids
        picked = [pool[(self.turn + i) % len(pool)] for i in range(k)]
        self.turn += 1
        reveals = {}
        roots = []
        for n in picked:
            t = Trace(
                spec.job_id, b"e" * 32, "exited", 0, sha256(b"bad" if n in self.bad else b"ok"), sha256(b"")
            )
            data = canonical(t.to_dict())
            cid = f"trace-{jid[:8]}-{n.hex()[:4]}"
            self.blobs[cid] = canonical({**t.to_dict(), "status": "killed"}) if self.tamper_trace else data
            reveals[n.hex()] = {"root": t.root.hex(), "trace_cid": cid, "result_cid": "x"}
            roots.append(t.root.hex())
        accepted = max(set(roots), key=roots.count)
        self.views[jid] = {"accepted_root": accepted, "reveals": reveals}
        self.jobs_run.append((jid, tuple(picked)))
        if note and k >= 2 and self.fail_tiebreaks:
            self.fail_tiebreaks -= 1
            self.failed.add(jid)
        rec = JobRecord(job_id=jid, spec=JobRecord.spec_dict(spec), peer="fake", notes=[note] if note else [])
        self.records.save(rec)
        return rec


def verifier(tmp_path: Path, n: int = 6, bad: set[int] | None = None) -> tuple[AdaptiveVerifier, FakeNet]:
    net = FakeNet(tmp_path / "home", n, bad or set())
    return AdaptiveVerifier(net, TrustStore(tmp_path / "home", POLICY)), net  # type: ignore[arg-type]


async def test_value_picks_redundancy(tmp_path: Path) -> None:
    v, net = verifier(tmp_path)
    low = await v.submit("code", MANIFEST, value_usd=0.05)
    high = await v.submit("code", MANIFEST, value_usd=POLICY.high_value_usd)
    assert net.records.load(low.job_id).job_spec().redundancy == 1
    spec = net.records.load(high.job_id).job_spec()
    assert (spec.redundancy, spec.quorum) == (3, 2)


async def test_unknown_executor_is_always_checked_and_agreement_releases(tmp_path: Path) -> None:
    v, net = verifier(tmp_path)
    rec = await v.submit("code", MANIFEST, value_usd=0.05)
    out = await v.verify(rec.job_id)
    assert (
        out.checked and out.check_rate == 1.0 and out.verdict == "released" and out.result_job == rec.job_id
    )
    assert len(out.reruns) == 1 and not out.caught
    primary, check = net.jobs_run[0][1], net.jobs_run[1][1]
    assert not set(primary) & set(check), "a check never runs on the executor it checks"
    again = TrustStore(tmp_path / "home", POLICY)  # persisted
    assert all(again.book.records[n].verified == 1 for n in (*primary, *check))
    assert stat.S_IMODE(again.path.stat().st_mode) == 0o600


async def test_trusted_executors_are_checked_less_often(tmp_path: Path) -> None:
    v, net = verifier(tmp_path, n=4)
    rates = []
    for _ in range(24):
        rec = await v.submit("code", MANIFEST, value_usd=0.05)
        rates.append((await v.verify(rec.job_id)).check_rate)
    assert rates[0] == 1.0
    assert rates[-1] < POLICY.spot_max, "executors off probation get spot-checked, not always"
    assert sum(len(o) for _, o in net.jobs_run) < 2 * 24, "fewer executions than checking every job"


async def test_wrong_result_is_overturned_and_its_executor_never_trusted(tmp_path: Path) -> None:
    v, net = verifier(tmp_path, n=6, bad={0})
    rec = await v.submit("code", MANIFEST, value_usd=0.05)  # rotation: node 0 runs the first job
    assert net.jobs_run[0][1] == (net.ids[0],)
    out = await v.verify(rec.job_id)
    assert out.verdict == "overturned" and out.caught == [net.ids[0].hex()]
    assert out.result_job != rec.job_id and out.result_job in out.reruns
    good = computation_digest(Trace(b"\0" * 32, b"e" * 32, "exited", 0, sha256(b"ok"), sha256(b"")))
    assert (await v.settled_run(out.result_job)).digest == good
    book = TrustStore(tmp_path / "home", POLICY).book
    assert book.records[net.ids[0]].faults == 1 and book.trust(net.ids[0]) == 0.0
    for _ in range(8):  # anything it runs later is checked, never by it, and overturned
        start = len(net.jobs_run)
        r = await v.submit("code", MANIFEST, value_usd=0.05)
        o = await v.verify(r.job_id)
        assert all(net.ids[0] not in ex for _, ex in net.jobs_run[start:][1:]), (
            "a re-run went to the caught node"
        )
        if net.jobs_run[start][1] == (net.ids[0],):
            assert o.check_rate == 1.0 and o.verdict == "overturned"
        else:
            assert o.verdict == "released"


async def test_outvoted_dissenter_in_a_quorum_job_gets_a_fault(tmp_path: Path) -> None:
    v, net = verifier(tmp_path, n=4, bad={1})
    rec = await v.submit("code", MANIFEST, value_usd=5.0)  # 2-of-3 on nodes 0, 1, 2; the check on node 3
    out = await v.verify(rec.job_id)
    assert out.verdict == "released" and out.executors == [net.ids[0].hex(), net.ids[2].hex()]
    assert v.store.book.records[net.ids[1]].faults == 1


async def test_trace_that_does_not_hash_to_the_root_is_refused(tmp_path: Path) -> None:
    v, net = verifier(tmp_path)
    net.tamper_trace = True
    rec = await v.submit("code", MANIFEST, value_usd=0.05)
    with pytest.raises(ResultRejected, match="does not hash to its accepted root"):
        await v.verify(rec.job_id)


def test_corrupt_trust_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "trust.json").write_text("{not json")
    with pytest.raises(ClientError, match="trust file .* is unreadable"):
        TrustStore(tmp_path)
    assert (tmp_path / "trust.json").read_text() == "{not json", "nothing overwritten"


async def test_a_tiebreak_that_does_not_settle_is_skipped_not_fatal(tmp_path: Path) -> None:
    v, net = verifier(tmp_path, n=6, bad={0})
    net.fail_tiebreaks = 1
    rec = await v.submit("code", MANIFEST, value_usd=0.05)
    out = await v.verify(rec.job_id)
    # check, the refunded tie-break, the deciding one
    assert out.verdict == "overturned" and len(out.reruns) == 3
    assert out.reruns[1] in net.failed and out.result_job == out.reruns[0]  # the check had it right


async def test_no_verdict_after_the_tiebreaks_is_undecided(tmp_path: Path) -> None:
    v, net = verifier(tmp_path, n=6, bad={0})
    net.fail_tiebreaks = 3
    rec = await v.submit("code", MANIFEST, value_usd=0.05)
    out = await v.verify(rec.job_id)
    assert out.verdict == "undecided" and out.result_job == "" and not out.caught


def test_cli_refuses_adaptive_with_a_fixed_redundancy(tmp_path: Path) -> None:
    """--verify adaptive picks k itself: a --redundancy next to it is bad input, refused before any peer is asked."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "sandrun_p2p",
            "submit",
            "--code",
            "x.py",
            "--manifest",
            "job.json",
            "--verify",
            "adaptive",
            "--redundancy",
            "2",
            "--peer",
            "http://127.0.0.1:9",
            "--json",
        ],
        cwd=tmp_path,
        env={"PYTHONPATH": str(root), "SANDRUN_P2P_HOME": str(tmp_path), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2, p.stderr
    out = json.loads(p.stdout)
    assert out["error"] == "BadJob" and "leave --redundancy out" in out["message"]


# ---------------------------------------------------------------- audits (optimistic finality in the client)

AUDITED = trust.TrustPolicy(
    probation=2,
    dispute_redundancy=2,
    verdict_target=0.05,
    check_pool_min=1,
    spot_min=0.0,
    spot_max=0.0,
    challenge_window=3600.0,
)
GOOD = computation_digest(Trace(b"\0" * 32, b"e" * 32, "exited", 0, sha256(b"ok"), sha256(b"")))


def trusted_network(tmp_path: Path, bad: set[int]) -> tuple[AdaptiveVerifier, FakeNet]:
    """Four nodes this client already trusts (off probation; with spot rates 0 nothing is re-run unless a node
    is caught), node ``bad`` among them returning wrong results."""
    net = FakeNet(tmp_path / "home", 4, bad)
    store = TrustStore(tmp_path / "home", AUDITED)
    for n in net.ids:
        store.book.records[n] = trust.TrustRecord(verified=10)
    return AdaptiveVerifier(net, store, max_audits=8), net  # type: ignore[arg-type]


async def released_unchecked(v: AdaptiveVerifier, node: bytes) -> str:
    rec = await v.submit("code", MANIFEST, value_usd=0.05, executors=(node,))
    out = await v.verify(rec.job_id)
    assert out.verdict == "released" and not out.checked and not out.audits
    return rec.job_id


async def test_a_caught_node_s_earlier_result_is_audited_and_overturned(tmp_path: Path) -> None:
    v, net = trusted_network(tmp_path, bad={1})
    bad = net.ids[1]
    earlier = await released_unchecked(v, bad)  # a wrong result, given out unchecked (trusted node, rate 0)
    # a 2-of-3 job on nodes 1, 2, 3 outvotes node 1: a fault, so its results still in the window are audited
    net.turn = 1
    rec = await v.submit("code", MANIFEST, value_usd=5.0)
    out = await v.verify(rec.job_id)
    assert out.verdict == "released" and not out.checked
    assert [a["job_id"] for a in out.audits] == [earlier] and out.audits_left == 0
    audit = out.audits[0]
    assert audit["verdict"] == "overturned" and audit["caught"] == [bad.hex()]
    assert audit["result_job"] in audit["reruns"]
    assert (await v.settled_run(audit["result_job"])).digest == GOOD
    assert all(bad not in ex for jid, ex in net.jobs_run if jid in audit["reruns"]), (
        "audited by the caught node"
    )
    # persisted: the ledger now holds the winning result, vouched for by the nodes that backed it (audited again
    # only if one of them is caught later), and node 1's faults
    again = TrustStore(tmp_path / "home", AUDITED)
    held = again.ledger.open[bytes.fromhex(earlier)]
    assert held.root == GOOD and bad not in held.vouchers and len(held.vouchers) >= 2
    assert again.book.records[bad].faults >= 1 and bytes.fromhex(earlier) not in again.ledger.by_node.get(
        bad, []
    )


async def test_an_audit_that_confirms_leaves_the_result_and_its_executor_alone(tmp_path: Path) -> None:
    v, net = trusted_network(tmp_path, bad={1})
    good_node = net.ids[2]
    earlier = await released_unchecked(v, good_node)
    v.store.book.fault(good_node)  # say it was caught elsewhere: its result is audited and holds
    rec = await v.submit("code", MANIFEST, value_usd=0.05, executors=(net.ids[3],))
    out = await v.verify(rec.job_id)
    assert [(a["job_id"], a["verdict"], a["caught"], a["result_job"]) for a in out.audits] == [
        (earlier, "released", [], "")
    ]


async def test_results_past_their_window_are_final_and_not_audited(tmp_path: Path, monkeypatch) -> None:
    from types import SimpleNamespace

    from sandrun_p2p.client import adaptive

    clock = [1_000_000.0]
    monkeypatch.setattr(adaptive, "time", SimpleNamespace(time=lambda: clock[0]))
    v, net = trusted_network(tmp_path, bad={1})
    await released_unchecked(v, net.ids[1])
    clock[0] += AUDITED.challenge_window + 1  # the window closed: that result is final
    net.turn = 1
    out = await v.verify((await v.submit("code", MANIFEST, value_usd=5.0)).job_id)
    assert v.store.book.records[net.ids[1]].faults == 1 and out.audits == []
    assert TrustStore(tmp_path / "home", AUDITED).ledger.open.keys() == {bytes.fromhex(out.job_id)}


async def test_audits_past_the_limit_are_done_by_the_next_verification(tmp_path: Path) -> None:
    v, net = trusted_network(tmp_path, bad={1})
    v.max_audits = 1
    first = await released_unchecked(v, net.ids[1])
    second = await released_unchecked(v, net.ids[1])
    net.turn = 1
    out = await v.verify((await v.submit("code", MANIFEST, value_usd=5.0)).job_id)
    assert [a["job_id"] for a in out.audits] == [first] and out.audits_left == 1
    nxt = await v.verify((await v.submit("code", MANIFEST, value_usd=0.05, executors=(net.ids[2],))).job_id)
    assert [(a["job_id"], a["verdict"]) for a in nxt.audits] == [
        (second, "overturned")
    ] and nxt.audits_left == 0


def test_a_trust_file_with_a_bad_open_result_is_a_clear_error(tmp_path: Path) -> None:
    store = TrustStore(tmp_path, AUDITED)
    store.save()
    doc = (tmp_path / "trust.json").read_text().replace('"open": {}', '"open": {"nothex": [1, 2]}')
    (tmp_path / "trust.json").write_text(doc)
    with pytest.raises(ClientError, match="trust file .* is unreadable"):
        TrustStore(tmp_path, AUDITED)
    assert (tmp_path / "trust.json").read_text() == doc, "nothing overwritten"


def test_no_window_means_no_ledger(tmp_path: Path) -> None:
    store = TrustStore(tmp_path, POLICY)  # challenge_window 0: results are final at once
    store.ledger.release(b"\1" * 32, GOOD, (b"\2" * 32,), 0.0)
    store.save()
    assert TrustStore(tmp_path, POLICY).ledger.open == {}


async def test_the_cli_names_an_overturned_earlier_result_and_the_run_to_use(tmp_path: Path) -> None:
    from sandrun_p2p.client_cli import outcome_lines

    v, net = trusted_network(tmp_path, bad={1})
    earlier = await released_unchecked(v, net.ids[1])
    net.turn = 1
    out = await v.verify((await v.submit("code", MANIFEST, value_usd=5.0)).job_id)
    text = "\n".join(outcome_lines(out))
    use = out.audits[0]["result_job"]
    assert f"audit of earlier job {earlier[:16]}" in text and "WRONG" in text
    assert f"sandrun-p2p submit --result {use} --out DIR" in text
