"""NodeCore end to end on the in-memory network: claiming, fallback, quorum, evidence, refunds."""

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandrun_p2p.protocol import claiming
from sandrun_p2p.protocol import messages as m
from sandrun_p2p.protocol.encoding import sha256
from sandrun_p2p.protocol.events import (
    ChainUpdate,
    ExecutionFailed,
    JobEvent,
    Received,
    Start,
    SubmitJob,
    SubmitTx,
    Tick,
)
from sandrun_p2p.protocol.identity import NodeKey
from sandrun_p2p.protocol.jobspec import JobSpec
from sandrun_p2p.protocol.memnet import CPU, Loop, make_spec
from sandrun_p2p.protocol.node import CoreConfig, NodeCore

SEED = b"\x07" * 32


def committers(loop: Loop, jid: bytes) -> list[bytes]:
    return sorted({n for n, tx in loop.txs if tx.kind == "commit" and tx.job_id == jid})


def states(loop: Loop, nid: bytes, jid: bytes) -> list[str]:
    return [e.state for e in loop.nodes[nid].events if e.job_id == jid]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_job_is_run_by_exactly_the_top_k_and_settles(k):
    loop = Loop(6, seed=k)
    loop.start()
    loop.run(1)
    ids = sorted(loop.nodes)
    jid = loop.submit(ids[0], make_spec(1, k=k))
    loop.run(60)
    top = claiming.rank(jid, SEED, ids)[:k]
    assert committers(loop, jid) == sorted(top)
    assert sorted(n for n, node in loop.nodes.items() if jid in node.executions) == sorted(top)
    assert loop.settled[jid] == sha256(b"right", jid)
    settlers = [n for n, tx in loop.txs if tx.kind == "settle"]
    assert len(settlers) == 1 and settlers[0] in top
    for nid in ids:
        assert states(loop, nid, jid)[-1] == "settled"


@settings(max_examples=25)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 3), stagger=st.floats(0.0, 0.5))
def test_divergent_views_still_yield_exactly_k_committed_executions(seed, k, stagger):
    # Nodes start at different times, so the job is announced while adverts are still spreading.
    loop = Loop(7, seed=seed)
    ids = sorted(loop.nodes)
    loop.start(stagger=stagger)
    jid = loop.submit(ids[seed % 7], make_spec(seed, k=k))
    loop.run(120)
    assert jid in loop.settled
    assert len(committers(loop, jid)) == k


def test_killed_claimant_is_replaced_by_the_fallback_rank():
    loop = Loop(5, seed=11)
    loop.start()
    loop.run(1)
    ids = sorted(loop.nodes)
    spec = make_spec(2, k=2)
    jid = spec.job_id
    ranked = claiming.rank(jid, SEED, ids)
    victim = ranked[0]
    origin = ranked[-1]
    loop.submit(origin, spec)
    loop.run(1.2)  # claims are out, executions (1 s) not finished
    assert jid in loop.nodes[victim].executions
    loop.kill(victim)
    loop.run(120)
    assert jid in loop.settled
    assert committers(loop, jid) == sorted([ranked[1], ranked[2]])
    assert "lapsed" in states(loop, origin, jid)


def test_gpu_job_in_a_cpu_mesh_fails_with_the_reason_and_is_refunded_after_the_deadline():
    loop = Loop(4, seed=5)
    loop.start()
    loop.run(1)
    ids = sorted(loop.nodes)
    spec = make_spec(3, k=1, deadline=40, gpu={"required": True, "min_vram_gb": 16})
    jid = loop.submit(ids[0], spec)
    loop.run(30)
    failed = [e for e in loop.nodes[ids[0]].events if e.job_id == jid and e.state == "failed"]
    assert failed and "no eligible node among 4 known: 4 x no GPU meets the requirement" in failed[0].detail
    assert not any(jid in n.executions for n in loop.nodes.values())
    assert jid not in loop.refunded  # the contract refunds only after the deadline
    loop.run(60)
    assert jid in loop.refunded
    refunders = [n for n, tx in loop.txs if tx.kind == "refund"]
    assert refunders == [ids[0]]


def test_a_one_gpu_node_claims_one_gpu_job_at_a_time_and_the_next_goes_to_another_gpu_node():
    gpu = dataclasses.replace(CPU, gpus=(claiming.Gpu("A100", 40960, "8.0", "12.4"),), max_jobs=4)
    loop = Loop(3, seed=9, caps=[gpu, gpu, CPU], run_time=10)
    loop.start()
    loop.run(1)
    ids = sorted(loop.nodes)
    gpu_nodes = ids[:2]
    # two GPU jobs that both rank the same GPU node first: before, it claimed and ran both at once
    specs = [make_spec(i, k=1, gpu={"required": True, "min_vram_gb": 16}) for i in range(40)]
    first = {s.job_id: claiming.rank(s.job_id, SEED, gpu_nodes)[0] for s in specs}
    a, b = [s for s in specs if first[s.job_id] == gpu_nodes[0]][:2]
    for s in (a, b):
        loop.submit(ids[2], s)
    loop.run(5)  # both announced and claimed, the first still running (10 s)
    busy = loop.nodes[gpu_nodes[0]]
    assert busy.executions == [a.job_id] or busy.executions == [b.job_id]
    assert loop.nodes[gpu_nodes[1]].executions == [b.job_id if busy.executions == [a.job_id] else a.job_id]
    retries = []
    real = busy.core._retry_deferred
    busy.core._retry_deferred = lambda now, out: (retries.append(now), real(now, out))[1]
    loop.run(9)  # messages keep arriving; the deferred job is not looked at again while its GPU stays busy
    assert retries == []
    loop.run(120)
    assert retries  # once the GPU freed
    assert a.job_id in loop.settled and b.job_id in loop.settled
    assert busy.core.gpus_busy == 0 and busy.core.running == 0


def test_wrong_result_is_outvoted_and_reported_for_slashing():
    loop = Loop(5, seed=2)
    loop.start()
    loop.run(1)
    ids = sorted(loop.nodes)
    spec = make_spec(4, k=3)
    jid = spec.job_id
    top = claiming.rank(jid, SEED, ids)[:3]
    loop.nodes[top[1]].faulty = True
    loop.submit(ids[0], spec)
    loop.run(60)
    assert loop.settled[jid] == sha256(b"right", jid)
    slashes = [(n, tx.args["node"], tx.args["kind"]) for n, tx in loop.txs if tx.kind == "slash"]
    assert slashes and all(acc == top[1] and kind == "dissent" for _, acc, kind in slashes)
    assert all(n in (top[0], top[2]) for n, _, _ in slashes)


def test_two_faulty_of_three_means_no_honest_quorum_is_faked():
    loop = Loop(5, seed=2)
    loop.start()
    loop.run(1)
    ids = sorted(loop.nodes)
    spec = make_spec(5, k=3)
    jid = spec.job_id
    top = claiming.rank(jid, SEED, ids)[:3]
    loop.nodes[top[0]].faulty = True
    loop.nodes[top[2]].faulty = True
    loop.submit(ids[0], spec)
    loop.run(60)
    # Colluding majority wins the vote (the protocol cannot know better), the honest node is the dissenter:
    # this is why the simulator studies committee selection and adaptive redundancy.
    assert loop.settled[jid] == sha256(b"wrong", jid)


def test_encrypted_job_starts_only_with_the_origins_key_grant():
    loop = Loop(4, seed=8)
    loop.start()
    loop.run(1)
    ids = sorted(loop.nodes)
    spec = make_spec(6, k=2)
    spec = type(spec).from_dict({**spec.to_dict(), "encrypted": True})
    loop.submit(ids[0], spec)
    loop.run(60)
    assert spec.job_id in loop.settled
    for nid, node in loop.nodes.items():
        for jid, grant in zip(node.executions, node.grants, strict=True):
            if jid == spec.job_id and nid != ids[0]:
                assert grant == b"sealed-key-for-" + nid[:8]


def test_same_seed_same_run():
    def run():
        loop = Loop(6, seed=4)
        loop.start(stagger=0.1)
        ids = sorted(loop.nodes)
        for i in range(3):
            loop.submit(ids[i], make_spec(10 + i, k=2))
        loop.run(90)
        return [
            (n, [(e.job_id, e.state, e.node, e.detail) for e in node.events])
            for n, node in loop.nodes.items()
        ]

    assert run() == run()


def _core(i: int, cfg: CoreConfig | None = None) -> tuple[NodeKey, NodeCore]:
    key = NodeKey.from_seed(bytes([i]) * 32)
    return key, NodeCore(key.node_id, CPU, cfg or CoreConfig())


def test_equivocating_commitments_produce_evidence_with_both_signed_messages():
    ka, a = _core(1)
    kb, _ = _core(2)
    spec = make_spec(7, k=1)
    jid = spec.job_id
    advert = m.decode(
        m.encode(
            kb,
            m.ADVERT,
            {"caps": CPU.to_dict(), "shard_bits": 0, "shards": [], "eth": b"", "interval": 10, "load": 0},
            1,
            0,
        )
    )
    a.handle(Received(advert), 0.0)
    # Make b the only eligible node besides a, then have b claim.
    a.caps = None
    a.handle(SubmitJob(spec, SEED), 0.0)
    a.handle(Received(m.decode(m.encode(kb, m.CLAIM, {"job": jid, "caps": CPU.to_dict()}, 2, 0))), 0.1)
    c1 = m.decode(m.encode(kb, m.COMMIT, {"job": jid, "commitment": b"\x01" * 32}, 3, 0))
    c2 = m.decode(m.encode(kb, m.COMMIT, {"job": jid, "commitment": b"\x02" * 32}, 4, 0))
    a.handle(Received(c1), 1.0)
    out = a.handle(Received(c2), 1.1)
    slash = [x for x in out if isinstance(x, SubmitTx) and x.kind == "slash"]
    assert len(slash) == 1
    ev = slash[0].args["evidence"]
    assert ev.kind == "equivocation" and ev.accused == kb.node_id and ev.items == (c1.raw, c2.raw)
    # Both items verify as b's signed messages.
    assert [m.decode(i).body["commitment"] for i in ev.items] == [b"\x01" * 32, b"\x02" * 32]


def test_reveal_without_commitment_is_rejected_and_a_second_reveal_is_equivocation():
    loop = Loop(3, seed=9)
    loop.start()
    loop.run(1)
    ids = sorted(loop.nodes)
    spec = make_spec(8, k=1)
    jid = loop.submit(ids[0], spec)
    executor = claiming.rank(jid, SEED, ids)[0]
    observer, outsider = [n for n in ids if n != executor]
    loop.run(5)
    assert loop.settled[jid] == sha256(b"right", jid)

    def forged(nid, seq):
        body = {"job": jid, "root": b"\x09" * 32, "salt": b"\x00" * 32, "trace_cid": "x", "result_cid": "y"}
        return m.encode(loop.nodes[nid].key, m.REVEAL, body, seq, int(loop.now * 1000))

    loop.push(loop.now, observer, forged(outsider, 900))  # never committed
    loop.push(loop.now, observer, forged(executor, 901))  # contradicts its own reveal
    loop.run(10)
    events = [(e.state, e.detail, e.node) for e in loop.nodes[observer].events if e.job_id == jid]
    assert ("reveal-rejected", "reveal does not open a known commitment", outsider) in events
    assert ("evidence", "equivocation", executor) in events


def _equivocation_seen_by_all(loop: Loop, origin_alive: bool = True) -> tuple[bytes, bytes, bytes]:
    """A k=1 job settles; then its executor sends every other node a second reveal of another root."""
    loop.start()
    loop.run(1)
    ids = sorted(loop.nodes)
    spec = make_spec(8, k=1)
    jid = loop.submit(ids[0], spec)
    executor = claiming.rank(jid, b"\x07" * 32, ids)[0]
    loop.run(5)
    assert loop.settled[jid] == sha256(b"right", jid)
    origin = ids[0]
    assert executor != origin  # (so for this seed: the origin is an observer)
    if not origin_alive:
        loop.kill(origin)
    body = {"job": jid, "root": b"\x09" * 32, "salt": b"\x00" * 32, "trace_cid": "x", "result_cid": "y"}
    raw = m.encode(loop.nodes[executor].key, m.REVEAL, body, 900, int(loop.now * 1000))
    for n in ids:
        if n != executor:
            loop.push(loop.now, n, raw)
    return jid, executor, origin


def test_equivocation_is_posted_once_not_by_every_observer():
    """Every observer sees the conflicting reveals, but only the first in turn (the origin) posts the slash:
    the others skip their turn once the chain reports it (before: one transaction per observer, all but
    one reverting with AlreadySlashed)."""
    loop = Loop(6, seed=9)
    jid, executor, origin = _equivocation_seen_by_all(loop)
    loop.run(loop.now + 60)
    slashes = [(n, tx) for n, tx in loop.txs if tx.kind == "slash"]
    assert [(n, tx.args["node"], tx.args["kind"]) for n, tx in slashes] == [
        (origin, executor, "equivocation")
    ]
    assert loop.reverted == []
    for n, node in loop.nodes.items():
        if n != executor:
            events = [(e.state, e.node) for e in node.events if e.job_id == jid]
            assert ("evidence", executor) in events and ("slashed", executor) in events
            assert jid not in node.core.jobs or not node.core.jobs[jid].slash_due


def test_equivocation_is_still_posted_when_the_first_in_turn_is_down():
    loop = Loop(6, seed=9)
    jid, executor, origin = _equivocation_seen_by_all(loop, origin_alive=False)
    t_seen = loop.now
    stagger = loop.cfg.evidence_stagger
    loop.run(t_seen + stagger - 0.1)
    assert [tx for _, tx in loop.txs if tx.kind == "slash"] == []  # the origin's turn, and it is down
    loop.run(t_seen + 60)
    slashes = [(n, tx) for n, tx in loop.txs if tx.kind == "slash"]
    assert len(slashes) == 1 and slashes[0][1].args["node"] == executor and loop.reverted == []
    poster = slashes[0][0]
    turns = {
        n: loop.nodes[n].core._poster_turn(loop.nodes[n].core.jobs[jid], executor, t_seen)
        for n in loop.nodes
        if n not in (executor, origin) and jid in loop.nodes[n].core.jobs
    }
    assert turns[poster] == 1 and sorted(turns.values()) == list(range(1, len(turns) + 1))


def test_funding_gates_processing_when_escrow_is_required():
    cfg = CoreConfig(
        advert_interval=5, fallback_interval=1, commit_grace=3, reveal_window=2, require_escrow=True
    )
    loop = Loop(3, seed=3, config=cfg)
    loop.start()
    loop.run(1)
    ids = sorted(loop.nodes)
    spec = make_spec(9, k=1)
    jid = loop.submit(ids[0], spec, seed=b"\x00" * 32)
    loop.run(20)
    assert not any(jid in n.executions for n in loop.nodes.values())
    chain_seed = b"\x42" * 32
    loop.broadcast_chain(ChainUpdate("job_funded", jid, data={"seed": chain_seed}))
    loop.run(80)
    assert jid in loop.settled
    executor = next(n for n, node in loop.nodes.items() if jid in node.executions)
    assert executor == claiming.rank(jid, chain_seed, ids)[0]


def test_an_announcement_nobody_funded_is_forgotten_not_kept_for_good():
    """Anyone can announce a job; without its escrow on chain it is never run, and its view goes at the job's
    deadline or forget_after after it came, whichever is first."""
    kb = NodeKey.from_seed(b"\x0b" * 32)
    _, w = _core(9, CoreConfig(require_escrow=True, forget_after=60))
    w.handle(_advert(kb), 0.0)
    late = make_spec(31, k=1, deadline=1000)
    soon = make_spec(32, k=1, deadline=30)
    for spec in (late, soon):
        w.handle(_msg(kb, m.JOB, {"spec": spec.to_dict(), "seed": SEED, "origin_ts": 0}), 0.0)
    assert not w.jobs[late.job_id].funded and w.next_deadline() == 30
    out = w.handle(Tick(), 30.0)
    assert soon.job_id not in w.jobs and late.job_id in w.jobs
    assert [(e.job_id, e.state) for e in out if isinstance(e, JobEvent)] == [(soon.job_id, "forgotten")]
    w.handle(Tick(), 60.0)
    assert late.job_id not in w.jobs and w.stats["forgotten_unfunded"] == 2


def test_escrows_of_jobs_never_announced_here_are_not_kept_for_good():
    """The chain reports every job of the network: escrows of other shards' jobs are not kept, and those of this
    node's shards are dropped forget_after after they were seen unless the job was announced (then they go
    with its view)."""
    key = NodeKey.from_seed(b"\x09" * 32)
    w = NodeCore(key.node_id, CPU, CoreConfig(require_escrow=True, shard_bits=1, forget_after=60), shards={0})
    ids = [make_spec(i).job_id for i in range(40, 80)]
    mine = [j for j in ids if claiming.shard_of(j, 1) == 0][:2]
    other = next(j for j in ids if claiming.shard_of(j, 1) == 1)
    for jid in (*mine, other):
        w.handle(ChainUpdate("job_funded", jid, data={"seed": SEED}), 0.0)
    assert set(w.funded) == set(mine)
    w.handle(ChainUpdate("job_funded", ids[-1], data={"seed": SEED}), 61.0)  # the next escrow seen, later
    assert not set(mine) & set(w.funded)


class VoucherChain(Loop):
    """As the chain reports a voucher job: only its executor and its origin (the payer) can map the batch that
    paid it onto the job, so only they learn it settled."""

    def broadcast_chain(self, ev: ChainUpdate) -> None:
        if ev.kind != "job_settled":
            return super().broadcast_chain(ev)
        for nid, node in sorted(self.nodes.items()):
            if ev.job_id in node.executions or ev.job_id in node.submitted:
                self.push(self.now + 0.5, nid, ev)


def test_voucher_job_needs_no_escrow_and_bystanders_forget_it():
    cfg = CoreConfig(advert_interval=5, fallback_interval=1, commit_grace=3, reveal_window=2,
                     require_escrow=True, forget_after=30)  # fmt: skip
    loop = VoucherChain(4, seed=5, config=cfg)
    loop.start()
    loop.run(1)
    ids = sorted(loop.nodes)
    spec = dataclasses.replace(make_spec(11, k=1), pay="voucher")
    for node in loop.nodes.values():
        node.submitted = set()
    loop.nodes[ids[0]].submitted.add(spec.job_id)
    jid = loop.submit(ids[0], spec)
    loop.run(20)  # no job_funded: the origin's deposit pays, so the job runs at once
    assert jid in loop.settled
    executor = next(n for n, node in loop.nodes.items() if jid in node.executions)
    bystanders = [n for n in ids if n not in (executor, ids[0])]
    assert bystanders and all(jid in loop.nodes[n].core.jobs for n in bystanders)
    loop.run(60)  # past forget_after: bystanders dropped the verified job; its executor and origin settled it
    assert all(jid not in loop.nodes[n].core.jobs for n in bystanders)
    for n in {executor, ids[0]}:
        assert [e.state for e in loop.nodes[n].events if e.job_id == jid and e.state == "settled"] == [
            "settled"
        ]


def test_late_dissent_after_acceptance_is_still_reported():
    loop = Loop(5, seed=21)
    loop.start()
    loop.run(1)
    ids = sorted(loop.nodes)
    spec = make_spec(30, k=3)
    jid = spec.job_id
    top = claiming.rank(jid, SEED, ids)[:3]
    loop.nodes[top[2]].faulty = True
    loop.nodes[top[2]].slow = 2.5  # commits in time, reveals after the two honest reveals reached quorum
    loop.submit(ids[0], spec)
    loop.run(60)
    assert loop.settled[jid] == sha256(b"right", jid)
    slashes = {(tx.args["node"], tx.args["kind"]) for _, tx in loop.txs if tx.kind == "slash"}
    assert slashes == {(top[2], "dissent")}


def test_silent_k1_executor_is_reported_by_the_origin():
    loop = Loop(3, seed=22)
    loop.start()
    loop.run(1)
    ids = sorted(loop.nodes)
    spec = make_spec(31, k=1, deadline=60)
    jid = spec.job_id
    executor = claiming.rank(jid, SEED, ids)[0]
    origin = next(n for n in ids if n != executor)
    loop.nodes[executor].silent = True
    loop.submit(origin, spec)
    loop.run(90)
    assert jid not in loop.settled and jid in loop.refunded
    slashes = [(n, tx.args["node"], tx.args["kind"]) for n, tx in loop.txs if tx.kind == "slash"]
    assert (origin, executor, "no_reveal") in slashes


def test_jobs_wait_for_busy_nodes_instead_of_timing_out():
    caps = CPU.__class__(**{**CPU.__dict__, "max_jobs": 1})
    loop = Loop(2, seed=23, caps=caps, run_time=5.0)
    loop.start()
    loop.run(1)
    ids = sorted(loop.nodes)
    jids = [loop.submit(ids[i % 2], make_spec(40 + i, k=1, deadline=200)) for i in range(6)]
    loop.run(200)
    assert all(j in loop.settled for j in jids)


class DeafChain(Loop):
    """A chain whose closing events (settled, refunded) never reach the nodes: a missed event, or a refund
    nobody sends."""

    def broadcast_chain(self, ev: ChainUpdate) -> None:
        if ev.kind not in ("job_settled", "job_refunded"):
            super().broadcast_chain(ev)


@pytest.mark.parametrize("gpu", [False, True], ids=["accepted", "failed"])
def test_a_decided_job_the_chain_never_closes_is_forgotten_after_its_deadline(gpu):
    """Before, such a view stayed for good on every node (a slow leak in a long-running agent)."""
    cfg = CoreConfig(advert_interval=5, fallback_interval=1, commit_grace=3, reveal_window=2, forget_after=30)
    loop = DeafChain(4, seed=5, config=cfg)
    loop.start()
    loop.run(1)
    ids = sorted(loop.nodes)
    extra = {"gpu": {"required": True, "min_vram_gb": 16}} if gpu else {}
    spec = make_spec(3, k=1, deadline=40, **extra)
    jid = loop.submit(ids[0], spec)
    loop.run(39)
    phases = {loop.nodes[n].core.jobs[jid].phase for n in ids}
    assert phases == ({"failed"} if gpu else {"accepted"})
    loop.run(40 + 30 - 0.5)  # kept until forget_after past the deadline (a late chain event still counts)
    assert all(jid in loop.nodes[n].core.jobs for n in ids)
    loop.run(40 + 30 + 31)  # the sweep runs forget_after apart
    assert all(jid not in loop.nodes[n].core.jobs for n in ids)
    assert all(loop.nodes[n].core.stats.get("forgotten_unclosed") == 1 for n in ids)
    # the agent learns it (a voucher job's origin drops the price it reserved)
    assert all(
        [e.state for e in loop.nodes[n].events if e.job_id == jid].count("forgotten") == 1 for n in ids
    )


def test_a_settled_job_is_not_swept_before_its_own_forgetting():
    cfg = CoreConfig(advert_interval=5, fallback_interval=1, commit_grace=3, reveal_window=2, forget_after=30)
    loop = Loop(4, seed=5, config=cfg)
    loop.start()
    loop.run(1)
    jid = loop.submit(sorted(loop.nodes)[0], make_spec(3, k=1, deadline=40))
    loop.run(120)
    assert jid in loop.settled
    assert all(
        jid not in n.core.jobs and "forgotten_unclosed" not in n.core.stats for n in loop.nodes.values()
    )


def _watching(n: int) -> tuple[NodeCore, NodeKey, bytes]:
    """Node a (running nothing) originates k=1 job ``n``; node b's claim on it has arrived."""
    _, a = _core(1)
    kb, _ = _core(2)
    a.caps = None
    spec = make_spec(n, k=1)
    a.handle(SubmitJob(spec, SEED), 0.0)
    a.handle(
        Received(m.decode(m.encode(kb, m.CLAIM, {"job": spec.job_id, "caps": CPU.to_dict()}, 1, 0))), 0.1
    )
    return a, kb, spec.job_id


def test_a_reveal_that_overtakes_its_commitment_is_held_not_rejected():
    a, kb, jid = _watching(32)
    root, salt = b"\x05" * 32, b"\x06" * 32
    from sandrun_p2p.protocol.verification import commitment

    reveal = m.encode(
        kb, m.REVEAL, {"job": jid, "root": root, "salt": salt, "trace_cid": "t", "result_cid": "r"}, 3, 0
    )
    commit = m.encode(kb, m.COMMIT, {"job": jid, "commitment": commitment(jid, kb.node_id, root, salt)}, 2, 0)
    out = a.handle(Received(m.decode(reveal)), 1.0)
    assert not [e for e in out if getattr(e, "state", "") == "reveal-rejected"]
    out = a.handle(Received(m.decode(commit)), 1.1)
    states_ = [e.state for e in out if hasattr(e, "state")]
    assert "revealed" in states_ and "accepted" in states_


def test_commit_transaction_carries_the_declared_usage():
    # The contract binds usage at commit time (keccak(commitment, usage)); the reveal must repeat it.
    loop = Loop(2, seed=24)
    loop.start()
    loop.run(1)
    ids = sorted(loop.nodes)
    jid = loop.submit(ids[0], make_spec(50, k=1))
    loop.run(30)
    commits = [tx for _, tx in loop.txs if tx.kind == "commit" and tx.job_id == jid]
    reveals = [tx for _, tx in loop.txs if tx.kind == "reveal" and tx.job_id == jid]
    assert len(commits) == 1 and commits[0].args["usage_wei"] == reveals[0].args["usage_wei"]


def test_job_found_unrunnable_after_its_deadline_is_refunded_at_once():
    # The no-eligible grace (one advert interval, 5 s) ends after this job's deadline (3 s from now).
    loop = Loop(3, seed=25)
    loop.start()
    loop.run(1)
    ids = sorted(loop.nodes)
    jid = loop.submit(ids[0], make_spec(60, k=1, deadline=4, gpu={"required": True}))
    loop.run(30)
    assert jid in loop.refunded
    assert [n for n, tx in loop.txs if tx.kind == "refund"] == [ids[0]]


def test_a_node_that_learns_the_settlement_from_the_chain_first_still_learns_the_accepted_root():
    """The origin's clients fetch the result by its accepted root: a settlement polled from the chain before the
    reveals arrived on gossip must not leave the root unknown (settled jobs take no further decisions)."""
    a, kb, jid = _watching(33)
    root, salt = b"\x07" * 32, b"\x08" * 32
    from sandrun_p2p.protocol.verification import commitment

    commit = m.encode(kb, m.COMMIT, {"job": jid, "commitment": commitment(jid, kb.node_id, root, salt)}, 2, 0)
    a.handle(Received(m.decode(commit)), 1.0)
    a.handle(ChainUpdate("job_settled", jid, data={"root": root[:20]}), 1.1)
    assert a.jobs[jid].phase == "settled" and a.jobs[jid].accepted_root is None
    reveal = m.encode(
        kb, m.REVEAL, {"job": jid, "root": root, "salt": salt, "trace_cid": "t", "result_cid": "r"}, 3, 0
    )
    out = a.handle(Received(m.decode(reveal)), 1.2)
    assert a.jobs[jid].accepted_root == root and a.jobs[jid].phase == "settled"
    assert not [x for x in out if isinstance(x, SubmitTx)]  # nothing more is sent for a settled job


def test_a_job_settled_before_its_commitment_arrives_stays_settled():
    """Gossip can trail the chain: a commitment and reveal that arrive after the settlement give the root, but must
    not reopen the job (it went settled -> revealing -> accepted, emitting "accepted" after "settled")."""
    a, kb, jid = _watching(34)
    a.handle(ChainUpdate("job_settled", jid, data={}), 0.5)
    root, salt = b"\x07" * 32, b"\x08" * 32
    from sandrun_p2p.protocol.verification import commitment

    out = a.handle(
        Received(
            m.decode(
                m.encode(
                    kb, m.COMMIT, {"job": jid, "commitment": commitment(jid, kb.node_id, root, salt)}, 2, 0
                )
            )
        ),
        1.0,
    )
    reveal = m.encode(
        kb, m.REVEAL, {"job": jid, "root": root, "salt": salt, "trace_cid": "t", "result_cid": "r"}, 3, 0
    )
    out += a.handle(Received(m.decode(reveal)), 1.2)
    for t in (2.0, 20.0, 60.0):
        out += a.handle(Tick(), t)
    assert a.jobs[jid].phase == "settled" and a.jobs[jid].accepted_root == root
    assert not [x for x in out if isinstance(x, SubmitTx)]
    assert "accepted" not in [x.state for x in out if isinstance(x, JobEvent)]


# ------------------------------------------------------------------ wake-ups: each rule its own

_SEQ = iter(range(1_000, 10**9))


def _msg(key: NodeKey, kind: str, body: dict) -> Received:
    return Received(m.decode(m.encode(key, kind, body, next(_SEQ), 0)))


def _advert(key: NodeKey, interval: int = 10) -> Received:
    body = {"caps": CPU.to_dict(), "shard_bits": 0, "shards": [], "eth": b"", "interval": interval, "load": 0}
    return _msg(key, m.ADVERT, body)


def _claim(key: NodeKey, jid: bytes) -> Received:
    return _msg(key, m.CLAIM, {"job": jid, "caps": CPU.to_dict()})


def _ranked_last(w: NodeCore, others: list[NodeKey], k: int = 1) -> bytes:
    """A k-job on which ``w`` ranks below ``others`` (in their order), announced to ``w`` by its last peer."""
    ids = [o.node_id for o in others]
    for i in range(10_000):
        spec = make_spec(600 + i, k=k)
        if claiming.rank(spec.job_id, SEED, [*ids, w.node_id]) == [*ids, w.node_id]:
            w.handle(_msg(others[-1], m.JOB, {"spec": spec.to_dict(), "seed": SEED, "origin_ts": 0}), 0.0)
            return spec.job_id
    raise AssertionError("no such job")


def test_a_watchers_fallback_wake_up_is_dropped_once_a_claim_is_in_and_re_armed_when_it_is_released():
    kb, kc = NodeKey.from_seed(b"\x0b" * 32), NodeKey.from_seed(b"\x0c" * 32)
    _, w = _core(9)
    for key in (kb, kc):
        w.handle(_advert(key), 0.0)
    jid = _ranked_last(w, [kb, kc])  # w third: its fallback claim is due at 2 x 2 s
    assert (4.0, jid, 1) in w._pending and w.next_deadline() == 4.0
    w.handle(_claim(kb, jid), 0.1)  # enough claims: the wake-up would do nothing, it goes (no tick at 4)
    assert (4.0, jid, 1) not in w._pending and w.next_deadline() != 4.0 and w.jobs[jid].dropped == (4.0,)
    w.handle(_msg(kb, m.RELEASE, {"job": jid, "reason": "gone"}), 0.5)  # fewer again: w is second now
    assert {(2.5, jid, 1), (4.0, jid, 1)} <= w._pending and w.next_deadline() == 2.5
    assert [a for a in w.handle(Tick(), 2.5) if getattr(a, "kind", "") == m.CLAIM]


def test_a_winners_execution_deadline_wakes_the_watchers_when_it_passes():
    """Armed as the claim makes its sender the winner, not at the watcher's next step (formerly often its
    fallback wake-up, now dropped): the claim lapses at its deadline, and w claims then."""
    kb = NodeKey.from_seed(b"\x0b" * 32)
    _, w = _core(9, CoreConfig(advert_interval=100))
    w.handle(_advert(kb, interval=100), 0.0)
    jid = _ranked_last(w, [kb])
    w.handle(_claim(kb, jid), 0.1)
    dl = 0.1 + 10 + w.cfg.commit_grace  # the manifest's timeout, and the grace for committing
    assert w.jobs[jid].claims[kb.node_id].winner_since == 0.1 and (dl, jid) in w._pending
    ticks = []
    while (t := w.next_deadline()) is not None and t <= dl:
        ticks.append(t)
        out = w.handle(Tick(), t)
    assert ticks == [dl] and w.jobs[jid].claims[kb.node_id].lapsed
    assert [a for a in out if getattr(a, "kind", "") == m.CLAIM]


def test_a_committed_claimants_advert_steps_the_job_when_it_revives_the_claim():
    """k=2: b committed, its advert went stale (it no longer counts), then a fresh one arrives: it counts at
    once, not at the job's next step."""
    kb, kc = NodeKey.from_seed(b"\x0b" * 32), NodeKey.from_seed(b"\x0c" * 32)
    _, w = _core(9)
    w.caps = None  # a light node: it only watches
    w.handle(_advert(kb, interval=10), 0.0)
    w.handle(_advert(kc, interval=1000), 0.0)
    spec = make_spec(77, k=2, timeout=100)  # (no claim lapses before 110)
    jid = spec.job_id
    w.handle(_msg(kc, m.JOB, {"spec": spec.to_dict(), "seed": SEED, "origin_ts": 0}), 0.0)
    w.handle(_claim(kb, jid), 0.1)
    w.handle(_claim(kc, jid), 0.1)
    w.handle(_msg(kb, m.COMMIT, {"job": jid, "commitment": b"\x01" * 32}), 5.0)
    job = w.jobs[jid]
    assert set(job.winners) == {kb.node_id, kc.node_id}
    assert (30.0 + 1e-6, jid) in w._pending  # b's advert goes stale at 30: wake then (it is committed)
    w.handle(Tick(), 30.0 + 1e-6)
    assert job.winners == (kc.node_id,) and not job.claims[kb.node_id].lapsed
    w.handle(_advert(kb, interval=10), 31.0)
    assert set(job.winners) == {kb.node_id, kc.node_id}


# ------------------------------------------------------------------ late claims do not outrank started runs


def _ranked(w: NodeCore, order: list[NodeKey | NodeCore], start: int) -> JobSpec:
    """A k=1 job whose ranking is ``order`` (keys or ``w`` itself)."""
    ids = [o.node_id for o in order]
    for i in range(start, start + 10_000):
        spec = make_spec(i, k=1)
        if claiming.rank(spec.job_id, SEED, ids) == ids:
            return spec
    raise AssertionError("no such job")


def _announce(w: NodeCore, by: NodeKey, spec: JobSpec, now: float) -> list:
    return w.handle(_msg(by, m.JOB, {"spec": spec.to_dict(), "seed": SEED, "origin_ts": 0}), now)


def _claims(actions: list) -> list:
    return [a for a in actions if getattr(a, "kind", "") == m.CLAIM]


def test_a_node_in_its_first_advert_interval_counts_staked_nodes_it_has_not_heard_as_ahead_of_it():
    """A node that just (re)joined has not heard every advert yet: ranking only the nodes it knows, it would
    claim first and outrank the claimant already running. Until one advert interval has passed since it
    started, a staked node whose advert it has not seen counts as a candidate; after that, not."""
    kb, kc = NodeKey.from_seed(b"\x0b" * 32), NodeKey.from_seed(b"\x0c" * 32)
    key = NodeKey.from_seed(b"\x09" * 32)
    w = NodeCore(key.node_id, CPU, CoreConfig(require_stake=True, advert_interval=10))
    for n in (key, kb, kc):
        w.handle(ChainUpdate("staked", node=n.node_id), 0.0)
    w.handle(Start(), 0.0)
    early = _ranked(w, [kb, w, kc], 1_000)
    assert not _claims(_announce(w, kc, early, 1.0))  # kb may be eligible and first: w's turn is at 1 + 2
    assert (3.0, early.job_id, 1) in w._pending
    assert _claims(w.handle(Tick(), 3.0))  # nobody claimed: w does
    only = tuple(sorted([key.node_id, kc.node_id]))
    for i in range(2_000, 12_000):  # a job only w and kc may run, on which kb would rank first
        chosen = JobSpec.from_dict({**make_spec(i).to_dict(), "executors": list(only)})
        if claiming.rank(chosen.job_id, SEED, [kb.node_id, key.node_id, kc.node_id])[:2] == [
            kb.node_id,
            key.node_id,
        ]:
            break
    assert _claims(_announce(w, kc, chosen, 4.0))  # kb cannot run this one: it does not count, warm or not
    later = _ranked(w, [kb, w, kc], int.from_bytes(early.nonce, "big") + 1)
    assert _claims(_announce(w, kc, later, 10.5))  # warmed up: a node never heard from is not a candidate


# ------------------------------------------------------------------ passing while full (CoreConfig.pass_when_full)

ONE_SLOT = dataclasses.replace(CPU, max_jobs=1)


def _releases(actions: list) -> list:
    return [a for a in actions if getattr(a, "kind", "") == m.RELEASE]


def _one_slot_node(passing: bool) -> NodeCore:
    key = NodeKey.from_seed(b"\x09" * 32)
    return NodeCore(key.node_id, ONE_SLOT, CoreConfig(pass_when_full=passing))


def _keep_busy(w: NodeCore, by: NodeKey, start: int) -> bytes:
    """Fill ``w``'s only slot with a job it ranks first on; that job's id."""
    spec = _ranked(w, [w, by], start)
    assert _claims(_announce(w, by, spec, 0.0)) and w.running == 1
    return spec.job_id


@pytest.mark.parametrize("passing", [True, False])
def test_a_full_node_passes_at_its_turn_only_when_configured(passing):
    kb = NodeKey.from_seed(b"\x0b" * 32)
    w = _one_slot_node(passing)
    w.handle(_advert(kb), 0.0)
    _keep_busy(w, kb, 3_000)
    spec = _ranked(w, [w, kb], 4_000)  # w first again, but full
    out = _announce(w, kb, spec, 0.1)
    assert not _claims(out)
    if passing:
        assert [a.body for a in _releases(out)] == [{"job": spec.job_id, "reason": "busy"}]
        assert w.node_id in w.jobs[spec.job_id].passed
    else:
        assert not _releases(out)


def test_a_pass_lets_the_next_rank_claim_at_once_and_ranks_the_passer_last():
    """b and c rank above w: b passes (full), so c is first and w second (its turn 2 s after the pass, not
    4 s after the announcement); c passes too: w claims at once. A node's own setting does not matter here:
    every node honours the passes it receives."""
    kb, kc = NodeKey.from_seed(b"\x0b" * 32), NodeKey.from_seed(b"\x0c" * 32)
    _, w = _core(9)
    for key in (kb, kc):
        w.handle(_advert(key), 0.0)
    jid = _ranked_last(w, [kb, kc])
    assert (4.0, jid, 1) in w._pending
    w.handle(_msg(kb, m.RELEASE, {"job": jid, "reason": "busy"}), 0.1)
    assert w.jobs[jid].passed == {kb.node_id} and (2.1, jid, 1) in w._pending
    again = w.handle(_msg(kb, m.RELEASE, {"job": jid, "reason": "busy"}), 0.15)  # a repeat changes nothing
    assert "passed" not in [e.state for e in again if isinstance(e, JobEvent)] and (2.1, jid, 1) in w._pending
    assert _claims(w.handle(_msg(kc, m.RELEASE, {"job": jid, "reason": "busy"}), 0.2))


def test_when_every_candidate_passed_whoever_frees_first_claims():
    """b, c and w all full: each passes at its turn; then w frees first and claims at once although it ranks
    last among those that passed (the others are full: nobody else would claim sooner)."""
    kb, kc = NodeKey.from_seed(b"\x0b" * 32), NodeKey.from_seed(b"\x0c" * 32)
    w = _one_slot_node(True)
    for key in (kb, kc):
        w.handle(_advert(key), 0.0)
    busy = _keep_busy(w, kb, 5_000)
    spec = _ranked(w, [kb, kc, w], 6_000)
    _announce(w, kb, spec, 0.0)
    w.handle(_msg(kb, m.RELEASE, {"job": spec.job_id, "reason": "busy"}), 0.1)
    out = w.handle(_msg(kc, m.RELEASE, {"job": spec.job_id, "reason": "busy"}), 0.2)
    assert _releases(out) and not _claims(
        out
    )  # w's turn came (first of those left), and it is full: it passes
    assert w.jobs[spec.job_id].passed == {kb.node_id, kc.node_id, w.node_id}
    out = w.handle(ExecutionFailed(busy, "bundle unavailable"), 0.3)  # its slot frees
    assert _claims(out) and w.jobs[spec.job_id].claims.get(w.node_id) is not None


# ------------------------------------------------------------------ which waiting job a freed node claims first


def _spreading_node(spread: float) -> NodeCore:
    key = NodeKey.from_seed(b"\x09" * 32)
    return NodeCore(key.node_id, ONE_SLOT, CoreConfig(deferred_spread=spread))


@pytest.mark.parametrize(
    "spread, second_at, expected",
    [(0.0, 0.5, "older"), (1.0, 0.5, "safe"), (1.0, 1.5, "older")],
)
def test_a_freed_node_claims_first_a_job_where_nobody_waiting_outranks_it(spread, second_at, expected):
    """w is full while two jobs arrive: on the older one b ranks first (b is busy too, so w's fallback turn comes),
    on the other w ranks first. When w's slot frees, the default takes the older; with ``deferred_spread`` it
    takes the one where no candidate left ranks above it (its claim cannot be outranked: b, freeing at the same
    time, would claim the older and outrank w there), as long as the two were announced within the spread."""
    kb = NodeKey.from_seed(b"\x0b" * 32)
    w = _spreading_node(spread)
    w.handle(_advert(kb), 0.0)
    busy = _keep_busy(w, kb, 7_000)
    older, safe = _ranked(w, [kb, w], 8_000), _ranked(w, [w, kb], 9_000)
    assert not _claims(_announce(w, kb, older, 0.1)) and not _claims(_announce(w, kb, safe, 0.1 + second_at))
    out = w.handle(ExecutionFailed(busy, "bundle unavailable"), 4.0)  # both turns came; the slot frees
    claimed = [c.body["job"] for c in _claims(out)]
    assert claimed == [(older if expected == "older" else safe).job_id]
    if expected == "safe":  # the other keeps its place at the head of the queue for the next free slot
        assert list(w._deferred) == [older.job_id]
