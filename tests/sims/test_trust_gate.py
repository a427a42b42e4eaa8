"""Trust-gated spot checks: the spec's executors allowlist (jobspec/node) and its use by adaptive verification."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandrun_p2p.protocol import messages as m
from sandrun_p2p.protocol import trust
from sandrun_p2p.protocol.claiming import Capabilities
from sandrun_p2p.protocol.encoding import tagged_hash
from sandrun_p2p.protocol.errors import SpecError
from sandrun_p2p.protocol.events import JobEvent, Publish, Received, Start, Tick
from sandrun_p2p.protocol.jobspec import JobSpec, Manifest
from sandrun_p2p.protocol.node import CoreConfig, NodeCore
from sims import scenario
from sims.engine import Simulator

SCEN = Path(__file__).resolve().parents[2] / "sims" / "scenarios"
ME, PEER, OTHER = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
CAPS = Capabilities.from_dict({"cpus": 4, "mem_mb": 4096, "enforced": ["network"], "max_jobs": 2})


def _spec(executors: tuple[bytes, ...] = (), k: int = 1) -> JobSpec:
    return JobSpec(
        "bafysim0000000001",
        Manifest("main.py"),
        redundancy=k,
        quorum=k,
        deadline=1000,
        nonce=b"\x01",
        executors=executors,
    )


def test_executors_field_is_optional_and_validated() -> None:
    plain = _spec()
    assert "executors" not in plain.to_dict()
    legacy = {
        "code_cid": "bafysim0000000001",
        "manifest": Manifest("main.py").to_dict(),
        "redundancy": 1,
        "quorum": 1,
        "deadline": 1000,
        "nonce": b"\x01",
        "payment_wei": 0,
        "encrypted": False,
    }
    assert plain.job_id == tagged_hash("job", legacy)  # ids of ordinary jobs unchanged
    gated = _spec((PEER, OTHER))
    assert gated.job_id != plain.job_id
    assert JobSpec.from_dict(gated.to_dict()) == gated
    for bad in ([OTHER, PEER], [PEER, PEER], [b"\x02" * 31], ["x" * 32]):
        with pytest.raises(SpecError, match="executors"):
            JobSpec.from_dict({**plain.to_dict(), "executors": bad})
    with pytest.raises(SpecError, match="fewer than redundancy"):
        JobSpec.from_dict({**_spec(k=3).to_dict(), "executors": [PEER]})


def _core() -> NodeCore:
    core = NodeCore(ME, CAPS, CoreConfig(advert_interval=10))
    core.handle(Start(), 0.0)
    advert = {"caps": CAPS.to_dict(), "shard_bits": 0, "shards": [], "eth": b"", "interval": 10, "load": 0}
    for n in (PEER, OTHER):
        core.handle(Received(m.Message(m.ADVERT, n, 1, 0, advert, b"")), 0.0)
    return core


def _announce(core: NodeCore, spec: JobSpec, now: float) -> list:
    body = {"spec": spec.to_dict(), "seed": b"s" * 32, "origin_ts": 0}
    return core.handle(Received(m.Message(m.JOB, OTHER, 2, 0, body, b"")), now)


def test_only_listed_executors_are_eligible_and_may_claim() -> None:
    core = _core()
    spec = _spec((PEER,))
    out = _announce(core, spec, 1.0)
    assert core.eligible_nodes(core.jobs[spec.job_id], 1.0) == [PEER]
    assert not any(isinstance(a, Publish) and a.kind == m.CLAIM for a in out)  # this node is not listed
    claim = {"job": spec.job_id, "caps": CAPS.to_dict()}
    out = core.handle(Received(m.Message(m.CLAIM, OTHER, 3, 0, claim, b"")), 1.1)
    assert [(a.state, a.detail) for a in out if isinstance(a, JobEvent)] == [
        ("claim-rejected", "not among the job's executors")
    ]
    out = core.handle(Received(m.Message(m.CLAIM, PEER, 2, 0, claim, b"")), 1.2)
    assert any(isinstance(a, JobEvent) and a.state == "claimed" and a.node == PEER for a in out)
    # the same computation without a list: every node is eligible, the pool is shared but not the filter
    plain = _spec()
    _announce(core, plain, 1.3)
    assert sorted(core.eligible_nodes(core.jobs[plain.job_id], 1.3)) == sorted([ME, PEER, OTHER])


def test_no_eligible_reason_names_the_list() -> None:
    core = _core()
    spec = JobSpec("bafysim0000000002", Manifest("main.py"), deadline=1000, executors=(b"\x09" * 32,))
    _announce(core, spec, 1.0)
    out = core.handle(Tick(), 12.0)  # one advert interval later
    failed = [a.detail for a in out if isinstance(a, JobEvent) and a.state == "failed"]
    assert failed and "not among the job's executors" in failed[0]


def test_check_executors_excludes_the_checked_and_the_untrusted() -> None:
    book = trust.TrustBook(trust.TrustPolicy(probation=1, check_pool_min=2))
    a, b, c, d = (bytes([i]) * 32 for i in (4, 3, 2, 1))
    for n, v in ((a, 3), (b, 1), (c, 2)):
        for _ in range(v):
            book.verified(n)
    book.fault(c)
    assert trust.check_executors(book, [a, b, c, d], exclude={a}) == ()  # only b qualifies: below the minimum
    # sorted by id; c faulty, d unknown
    assert trust.check_executors(book, [a, b, c, d], exclude=set()) == (
        b,
        a,
    )
    assert trust.check_executors(book, [a, b, c, d], exclude=set(), limit=1) == (a,)  # the most trusted
    assert trust.check_plan(True, book.policy) == trust.Plan(1, 1)
    assert trust.check_plan(False, trust.TrustPolicy(open_check_redundancy=2)) == trust.Plan(2, 2)


def test_gated_checks_never_run_on_the_checked_executor() -> None:
    sc = scenario.load(
        SCEN / "collusion_20_adaptive.toml",
        {"jobs.count": 250, "verification.gate_checks": True, "verification.open_check_redundancy": 2},
    )
    sim = Simulator(sc)
    sim.run()
    checks = [r for r in sim.jobs if r.check_of is not None]
    gated = [r for r in checks if r.spec.executors]
    assert len(gated) >= 20 and sim.client.gated == len(gated)
    for r in gated:
        assert not set(r.spec.executors) & set(r.check_of.payees)
        assert all(p in r.spec.executors for p in r.payees)
        assert r.spec.redundancy in (1, 4)  # a check, or a tie-break (dispute_redundancy)
    assert all(r.spec.redundancy in (2, 4) for r in checks if not r.spec.executors)
    assert sim.anomalies.get("timer_in_past", 0) == 0
