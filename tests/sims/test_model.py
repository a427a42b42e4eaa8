"""Chain gas model against the measured contract, no simulator workarounds firing, NodeCore's caches."""

from __future__ import annotations

import copy
import heapq
import importlib.util
from pathlib import Path

import pytest

from sandrun_p2p.protocol import messages as m
from sandrun_p2p.protocol.claiming import Capabilities
from sandrun_p2p.protocol.events import (
    CapabilitiesChanged,
    ChainUpdate,
    JobEvent,
    Received,
    SetTimer,
    Start,
    Tick,
)
from sandrun_p2p.protocol.jobspec import JobSpec, Manifest
from sandrun_p2p.protocol.node import CoreConfig, NodeCore, _parse_spec
from sandrun_p2p.protocol.verification import commitment
from sims import metrics, scenario
from sims.chain import GAS, MEASURED_PER_JOB, ChainModel
from sims.engine import Simulator
from sims.runner import run_scenario

SCEN = Path(__file__).resolve().parents[2] / "sims" / "scenarios"


def _job_gas(k: int) -> int:
    """One job through the model as NodeCore drives it: fund, k commits, k reveals, one settle."""
    ch = ChainModel({}, 10**18, 0.5)
    jid = bytes(32)
    ch.fund(jid, k, k // 2 + 1)
    root, salt = b"r" * 32, b"s" * 32
    nodes = [bytes([i + 1]) * 32 for i in range(k)]
    for n in nodes:
        assert ch.apply(n, "commit", jid, {"commitment": commitment(jid, n, root, salt)}).ok
    for n in nodes:
        assert ch.apply(n, "reveal", jid, {"root": root, "salt": salt}).ok
    r = ch.apply(nodes[0], "settle", jid, {"root": root})
    assert r.ok and r.event == "job_settled"
    return ch.jobs[jid].gas


def test_gas_model_reproduces_the_measured_contract() -> None:
    assert _job_gas(1) == pytest.approx(MEASURED_PER_JOB["k1"], rel=1e-4)
    assert _job_gas(3) == pytest.approx(MEASURED_PER_JOB["k3_separate_reveals"], rel=5e-3)
    # the aggregated-reveal figure is cheaper than what NodeCore's separate reveals cost
    assert MEASURED_PER_JOB["k3_one_reveal_tx"] < _job_gas(3)
    assert set(GAS) >= {"fund", "commit", "reveal", "settle", "settle_per_payee", "refund", "slash"}


@pytest.mark.parametrize(
    "name,over",
    [
        ("adversaries", {"jobs.count": 120, "seed": 6}),
        ("churn", {"jobs.count": 150}),
        ("partition_heal", {"jobs.count": 80, "nodes.0.count": 40}),
    ],
)
def test_no_timer_is_rearmed_in_the_past(name: str, over: dict) -> None:
    """The engine's guard against NodeCore re-arming a timer in the past (fixed in the protocol) stays silent."""
    m_ = run_scenario(scenario.load(SCEN / f"{name}.toml", over))["metrics"]
    assert m_["jobs"]["submitted"] == over["jobs.count"]
    assert m_["anomalies"].get("timer_in_past", 0) == 0


SPEC = JobSpec(
    "bafysim0000000001", Manifest("main.py", timeout=60, memory_mb=256, cpu=2), deadline=1000, nonce=b"\x01"
)


def test_spec_cache_is_keyed_by_the_dict_object() -> None:
    d = SPEC.to_dict()
    a = _parse_spec(d)
    assert _parse_spec(d) is a and a == SPEC and a.job_id == SPEC.job_id
    other = {**d, "nonce": b"\x02"}  # an equal-looking but different dict parses on its own
    b = _parse_spec(other)
    assert b is not a and b.job_id != a.job_id


def _caps(cpus: int) -> Capabilities:
    return Capabilities.from_dict({"cpus": cpus, "mem_mb": 4096, "enforced": ["network"], "max_jobs": 2})


def _announce(core: NodeCore, spec: JobSpec, origin: bytes, now: float) -> None:
    body = {"spec": spec.to_dict(), "seed": b"s" * 32, "origin_ts": 0}
    core.handle(Received(m.Message(m.JOB, origin, 1, 0, body, b"")), now)


def test_eligible_pool_follows_own_capabilities_and_adverts() -> None:
    """The pool shared by jobs with one manifest is rebuilt when this node's caps or a peer's advert change."""
    me, peer = b"\x01" * 32, b"\x02" * 32
    core = NodeCore(me, _caps(4), CoreConfig(advert_interval=10))
    core.handle(Start(), 0.0)
    advert = {
        "caps": _caps(1).to_dict(),
        "shard_bits": 0,
        "shards": [],
        "eth": b"",
        "interval": 10,
        "load": 0,
    }
    core.handle(Received(m.Message(m.ADVERT, peer, 1, 0, advert, b"")), 0.0)
    _announce(core, SPEC, peer, 1.0)
    assert core.eligible_nodes(core.jobs[SPEC.job_id], 1.0) == [me]  # the peer has 1 CPU, the job needs 2
    core.handle(CapabilitiesChanged(_caps(1)), 2.0)
    spec2 = JobSpec(SPEC.code_cid, SPEC.manifest, deadline=1000, nonce=b"\x02")
    _announce(core, spec2, peer, 3.0)
    assert core.eligible_nodes(core.jobs[spec2.job_id], 3.0) == []
    core.handle(Received(m.Message(m.ADVERT, peer, 2, 0, {**advert, "caps": _caps(8).to_dict()}, b"")), 4.0)
    spec3 = JobSpec(SPEC.code_cid, SPEC.manifest, deadline=1000, nonce=b"\x03")
    _announce(core, spec3, peer, 5.0)
    assert core.eligible_nodes(core.jobs[spec3.job_id], 5.0) == [peer]
    core.handle(ChainUpdate("staked", node=peer), 5.0)  # not required here: no change
    assert core.eligible_nodes(core.jobs[spec3.job_id], 5.0) == [peer]


def test_a_repeated_advert_is_refreshed_in_place() -> None:
    """The same advert again updates its time in place; the eligible pools change only if it had expired."""
    me, peer = b"\x01" * 32, b"\x02" * 32
    core = NodeCore(me, _caps(4), CoreConfig(advert_interval=10))
    advert = {
        "caps": _caps(8).to_dict(),
        "shard_bits": 0,
        "shards": [],
        "eth": b"",
        "interval": 10,
        "load": 0,
    }
    core.handle(Received(m.Message(m.ADVERT, peer, 1, 0, advert, b"")), 0.0)
    a, version = core.adverts[peer], core._adv_version
    core.handle(Received(m.Message(m.ADVERT, peer, 2, 0, {**advert, "caps": _caps(8).to_dict()}, b"")), 10.0)
    assert core.adverts[peer] is a and a.at == 10.0 and core._adv_version == version
    core.handle(Received(m.Message(m.ADVERT, peer, 3, 0, {**advert, "load": 1}, b"")), 50.0)  # expired at 40
    assert core.adverts[peer] is a and a.at == 50.0 and core._adv_version == version + 1
    core.handle(Received(m.Message(m.ADVERT, peer, 4, 0, {**advert, "caps": _caps(2).to_dict()}, b"")), 51.0)
    assert core.adverts[peer] is not a and core._adv_version == version + 2  # new capabilities: a new advert


def test_a_quiet_final_job_wakes_only_to_be_forgotten() -> None:
    """Once final and stepped, a job's pending wake-ups (here: its deadline) are dropped; forgetting stays."""
    origin = b"\x02" * 32
    core = NodeCore(b"\x01" * 32, None, CoreConfig(advert_interval=10, forget_after=600))  # a light node
    spec = JobSpec(SPEC.code_cid, SPEC.manifest, deadline=100, nonce=b"\x04")
    _announce(core, spec, origin, 1.0)
    assert core.next_deadline() == 11.0  # no eligible node yet: look again after one advert interval
    core.handle(ChainUpdate("job_settled", spec.job_id, data={"root": b"r" * 32}), 2.0)
    assert core.next_deadline() == 11.0  # not stepped since it settled: it may still have something to do
    # nothing to do; the deadline wake (100) is dropped; forgetting: 2 + 600 rounded up to a multiple of 600 / 4
    assert core.handle(Tick(), 11.0) == [SetTimer(750.0)]
    assert spec.job_id in core.jobs
    core.handle(Tick(), 750.0)
    assert spec.job_id not in core.jobs


@pytest.mark.parametrize("revealed", [True, False])
def test_a_job_settled_with_every_commitment_revealed_is_quiet_at_once(revealed: bool) -> None:
    """Nothing is left to judge when the reveal window closes: its wake-up is dropped at settlement. A
    commitment still unrevealed keeps it, and the close reports the silence."""
    origin, winner = b"\x02" * 32, b"\x03" * 32
    core = NodeCore(b"\x01" * 32, None, CoreConfig(advert_interval=10, forget_after=600))  # a bystander
    spec = JobSpec(SPEC.code_cid, SPEC.manifest, deadline=1000, nonce=b"\x05")
    jid, root, salt = spec.job_id, b"r" * 32, b"s" * 32
    _announce(core, spec, origin, 1.0)
    core.handle(
        Received(m.Message(m.CLAIM, winner, 1, 0, {"job": jid, "caps": _caps(4).to_dict()}, b"")), 1.1
    )
    body = {"job": jid, "commitment": commitment(jid, winner, root, salt)}
    core.handle(Received(m.Message(m.COMMIT, winner, 2, 0, body, b"")), 30.0)
    assert core.jobs[jid].reveal_deadline == 40.0
    if revealed:
        body = {"job": jid, "root": root, "salt": salt, "trace_cid": "t", "result_cid": "r"}
        core.handle(Received(m.Message(m.REVEAL, winner, 3, 0, body, b"")), 30.5)
    core.handle(ChainUpdate("job_settled", jid, data={"root": root}), 33.0)
    if revealed:
        assert core.next_deadline() == 750.0  # only forgetting is left (33 + 600, rounded up to 150 s)
        return
    states = []
    while (t := core.next_deadline()) is not None and t <= 40.0:  # earlier wake-ups of the open job, then 40
        states += [a.state for a in core.handle(Tick(), t) if isinstance(a, JobEvent)]
    assert states == ["evidence"] and core.next_deadline() == 750.0


def _settle_one(
    core: NodeCore, nonce: bytes, settled: float | None, t0: float = 0.0, deadline: int = 1000
) -> bytes:
    """A k=1 job through a bystander: announced at t0 + 1, claimed at + 1.1, committed at + 30, revealed, settled."""
    origin, winner = b"\x02" * 32, b"\x03" * 32
    spec = JobSpec(SPEC.code_cid, SPEC.manifest, deadline=int(t0) + deadline, nonce=nonce)
    jid, root, salt = spec.job_id, b"r" * 32, b"s" * 32
    _announce(core, spec, origin, t0 + 1.0)
    claim = {"job": jid, "caps": _caps(4).to_dict()}
    core.handle(Received(m.Message(m.CLAIM, winner, 1, 0, claim, b"")), t0 + 1.1)
    body = {"job": jid, "commitment": commitment(jid, winner, root, salt)}
    core.handle(Received(m.Message(m.COMMIT, winner, 2, 0, body, b"")), t0 + 30.0)
    body = {"job": jid, "root": root, "salt": salt, "trace_cid": "t", "result_cid": "r"}
    core.handle(Received(m.Message(m.REVEAL, winner, 3, 0, body, b"")), t0 + 30.5)
    if settled is not None:
        core.handle(ChainUpdate("job_settled", jid, data={"root": root}), settled)
    return jid


def test_jobs_that_finished_close_together_are_forgotten_by_one_wake_up() -> None:
    """Forgetting times are rounded up to a quarter of forget_after: one tick per node forgets them all."""
    core = NodeCore(b"\x01" * 32, None, CoreConfig(advert_interval=10, forget_after=20))  # a bystander
    a, b = _settle_one(core, b"\x06", 33.0), _settle_one(core, b"\x07", 34.5)
    assert core.jobs[a].forget_at == core.jobs[b].forget_at == 55.0  # 53 and 54.5, rounded up to 5 s
    assert core.next_deadline() == 55.0  # both are at rest: only forgetting is left
    core.handle(Tick(), 54.9)
    assert a in core.jobs and b in core.jobs
    core.handle(Tick(), 55.0)
    assert a not in core.jobs and b not in core.jobs


def test_a_forgotten_jobs_leftover_wake_ups_are_dropped() -> None:
    """The job's deadline (1000) is still queued when its view goes at 55: no tick for it."""
    core = NodeCore(b"\x01" * 32, None, CoreConfig(advert_interval=10, forget_after=20))  # a bystander
    jid = _settle_one(core, b"\x08", 33.0)
    assert (1000, jid) in core._pending
    assert core.handle(Tick(), 55.0) == []  # forgotten; nothing left to wake for (was: SetTimer(1000))
    assert jid not in core.jobs and core.next_deadline() is None


def test_a_quiet_jobs_only_wake_up_left_is_its_forgetting() -> None:
    """Its deadline (a day ahead) would find it forgotten: purged while the view is still there."""
    core = NodeCore(b"\x01" * 32, None, CoreConfig(advert_interval=10, forget_after=20))  # a bystander
    jids = [_settle_one(core, bytes([i]) * 4, 33.0, deadline=86_400) for i in range(3)]
    assert all(core.jobs[j].quiet for j in jids) and len(core._timers) > 3
    core._purge_timers()
    assert sorted(core._timers) == sorted((55.0, j) for j in jids) and core._pending == set(core._timers)


def test_the_sweeps_wake_up_survives_a_purge() -> None:
    """A job accepted here that the chain has not closed yet keeps the sweep armed (its key names no job)."""
    core = NodeCore(b"\x01" * 32, None, CoreConfig(advert_interval=10, forget_after=20))  # a bystander
    _settle_one(core, b"\x09", None)
    sweeps = [key for key in core._timers if key[1] == b""]
    assert sweeps
    core._purge_timers()
    assert [key for key in core._timers if key[1] == b""] == sweeps


def test_wake_ups_that_would_do_nothing_do_not_pile_up() -> None:
    """Each job's deadline wake-up (a day ahead) outlives the job: they are purged, not queued until due."""
    core = NodeCore(b"\x01" * 32, None, CoreConfig(advert_interval=10, forget_after=20))  # a bystander
    for i in range(300):
        t0 = 40.0 * i
        while (t := core.next_deadline()) is not None and t <= t0:
            core.handle(Tick(), t)
        _settle_one(core, i.to_bytes(4, "big"), t0 + 33.0, t0, deadline=86_400)
    assert len(core.jobs) <= 2
    assert len(core._timers) <= 64 and core._pending == set(core._timers)  # (was: one per job, 300)
    # forgetting the last job but one (settled at 11,953; + 20, rounded up)
    assert core.next_deadline() == 11975.0


def test_timer_events_run_after_the_other_events_of_their_instant_by_node() -> None:
    """Their order must not depend on when NodeCore armed them (a dropped wake-up re-arms the next one early)."""
    sim = Simulator(scenario.load(SCEN / "baseline.toml", {"nodes.0.count": 4}))
    sim._apply(sim.nodes[1], [SetTimer(5.0)], 0.0)
    sim._apply(sim.nodes[0], [SetTimer(5.0)], 0.0)
    sim.call_at(5.0, print)
    assert [heapq.heappop(sim.heap)[2] for _ in range(3)] == [-1, 0, 1]


def test_forgetting_settled_jobs_sooner_changes_no_metric_of_the_scale_scenario() -> None:
    """bench/sim_scale.py keeps a settled job's view 60 s instead of 600 s (memory): same metrics, fewer views."""
    spec = importlib.util.spec_from_file_location(
        "sim_scale", Path(__file__).resolve().parents[2] / "bench" / "sim_scale.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # 400 simulated seconds: the 60 s forgetting happens, the 600 s one does not
    doc = bench.scenario(100, 800)
    assert doc["protocol"]["forget_after"] == bench.FORGET_AFTER == 60.0
    runs = []
    for forget in (600.0, 60.0):
        doc["protocol"]["forget_after"] = forget
        sim = Simulator(scenario.from_dict(copy.deepcopy(doc)))
        sim.run()
        runs.append((metrics.compute(sim), sum(len(n.core.jobs) for n in sim.nodes), sim.events))
    (kept_m, kept_views, kept_events), (forgot_m, forgot_views, forgot_events) = runs
    assert forgot_m == kept_m and kept_m["jobs"]["accepted"] == 800
    assert forgot_views < kept_views / 2
    # forgetting costs few events: one tick per node forgets the jobs settled within the same 15 s
    assert forgot_events < kept_events * 1.01
