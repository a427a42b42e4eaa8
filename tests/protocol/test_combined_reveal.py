"""A reveal that carries its own commitment: sent by the executor whose commitment completes the k (always the
case at k = 1), one message instead of a commit and a reveal, judged by watchers exactly as the two."""

from __future__ import annotations

import pytest

from sandrun_p2p.protocol import claiming
from sandrun_p2p.protocol import messages as m
from sandrun_p2p.protocol.errors import ProtocolError
from sandrun_p2p.protocol.events import ExecutionDone, Publish, Received, Start, SubmitJob
from sandrun_p2p.protocol.identity import NodeKey
from sandrun_p2p.protocol.memnet import CPU, Loop, make_spec
from sandrun_p2p.protocol.node import CoreConfig, NodeCore
from sandrun_p2p.protocol.verification import EvidenceKind, commitment

SEED = b"\x07" * 32
ROOT_A, ROOT_B, SALT = b"\x0a" * 32, b"\x0b" * 32, b"\x05" * 32


def recording(loop: Loop) -> list[tuple[bytes, Publish]]:
    """Every message the loop's nodes publish, with its sender, in order."""
    sent: list[tuple[bytes, Publish]] = []
    apply = loop.apply

    def record(node, actions):  # noqa: ANN001 - memnet's own signature
        actions = list(actions)
        sent.extend((node.key.node_id, a) for a in actions if isinstance(a, Publish))
        apply(node, actions)

    loop.apply = record  # type: ignore[method-assign]
    return sent


def test_a_k1_executor_sends_one_message_that_commits_and_reveals():
    loop = Loop(4, seed=3)
    sent = recording(loop)
    loop.start()
    loop.run(1)
    ids = sorted(loop.nodes)
    jid = loop.submit(ids[0], make_spec(101, k=1))
    loop.run(30)
    assert jid in loop.settled
    executor = claiming.rank(jid, SEED, ids)[0]
    mine = [a for n, a in sent if n == executor and a.body.get("job") == jid]
    assert [a.kind for a in mine] == [m.CLAIM, m.REVEAL]
    body = mine[1].body
    assert body["commitment"] == commitment(jid, executor, body["root"], body["salt"])
    for nid, node in loop.nodes.items():  # every watcher took it as both, and saw no separate commit
        assert node.core.stats.get("rx_commit", 0) == 0
        if nid != executor:
            view = node.core.jobs[jid]
            assert executor in view.commits and view.reveals[executor][0] == loop.settled[jid]
    # the chain still gets the commitment first, then the opening (the contract checks one against the other)
    kinds = [tx.kind for n, tx in loop.txs if n == executor and tx.job_id == jid]
    assert kinds[:2] == ["commit", "reveal"]


def test_k2_the_first_committer_commits_alone_and_the_last_reveals_with_its_commitment():
    loop = Loop(5, seed=4)
    sent = recording(loop)
    ids = sorted(loop.nodes)
    spec = make_spec(102, k=2)
    first, last = claiming.rank(spec.job_id, SEED, ids)[:2]
    loop.nodes[last].slow = 2.0  # its commitment comes well after the first one's has spread
    loop.start()
    loop.run(1)
    jid = loop.submit(ids[-1] if ids[-1] not in (first, last) else ids[0], spec)
    loop.run(60)
    assert jid in loop.settled
    by = {n: [a for s, a in sent if s == n and a.body.get("job") == jid and a.kind != m.CLAIM] for n in ids}
    assert [a.kind for a in by[first]] == [m.COMMIT, m.REVEAL]
    assert "commitment" not in by[first][1].body  # its commit went on its own
    assert [a.kind for a in by[last]] == [m.REVEAL] and by[last][0].body["commitment"] == commitment(
        jid, last, by[last][0].body["root"], by[last][0].body["salt"]
    )
    for node in loop.nodes.values():
        assert set(node.core.jobs[jid].reveals) == {first, last}


def _watcher() -> tuple[NodeCore, NodeKey, bytes]:
    """A watcher and an executor ``kb`` that claimed a k = 1 job (the watcher would not claim it)."""
    me = NodeKey.from_seed(b"\x31" * 32)
    kb = NodeKey.from_seed(b"\x32" * 32)
    w = NodeCore(me.node_id, None, CoreConfig(advert_interval=1000), None)
    spec = make_spec(103, k=1)
    w.handle(SubmitJob(spec, SEED), 0.0)
    w.handle(
        Received(m.decode(m.encode(kb, m.CLAIM, {"job": spec.job_id, "caps": CPU.to_dict()}, 1, 0))), 0.1
    )
    return w, kb, spec.job_id


def _reveal(kb: NodeKey, jid: bytes, root: bytes, seq: int, **extra: bytes) -> Received:
    body = {"job": jid, "root": root, "salt": SALT, "trace_cid": "t", "result_cid": "r", **extra}
    return Received(m.decode(m.encode(kb, m.REVEAL, body, seq, 0)))


def test_a_watcher_accepts_a_reveal_carrying_its_commitment():
    w, kb, jid = _watcher()
    out = w.handle(_reveal(kb, jid, ROOT_A, 2, commitment=commitment(jid, kb.node_id, ROOT_A, SALT)), 1.0)
    states = [a.state for a in out if hasattr(a, "state")]
    assert states[:3] == ["committed", "revealed", "accepted"]
    assert w.jobs[jid].accepted_root == ROOT_A


def test_a_carried_commitment_that_the_opening_does_not_match_is_rejected():
    w, kb, jid = _watcher()
    out = w.handle(_reveal(kb, jid, ROOT_A, 2, commitment=commitment(jid, kb.node_id, ROOT_B, SALT)), 1.0)
    states = [a.state for a in out if hasattr(a, "state")]
    assert "reveal-rejected" in states and "accepted" not in states
    assert (
        kb.node_id in w.jobs[jid].commits and kb.node_id not in w.jobs[jid].reveals
    )  # held to its commitment


@pytest.mark.parametrize("second", ["combined", "commit"])
def test_a_second_commitment_of_other_content_is_equivocation(second: str):
    w, kb, jid = _watcher()
    w.handle(_reveal(kb, jid, ROOT_A, 2, commitment=commitment(jid, kb.node_id, ROOT_A, SALT)), 1.0)
    other = commitment(jid, kb.node_id, ROOT_B, SALT)
    if second == "combined":
        msg = _reveal(kb, jid, ROOT_B, 3, commitment=other)
    else:
        msg = Received(m.decode(m.encode(kb, m.COMMIT, {"job": jid, "commitment": other}, 3, 0)))
    w.handle(msg, 1.5)
    assert (EvidenceKind.EQUIVOCATION.value, kb.node_id) in w.jobs[jid].evidence_sent


def test_a_carried_commitment_of_the_wrong_size_is_a_clear_error():
    kb = NodeKey.from_seed(b"\x34" * 32)
    body = {"job": b"\x01" * 32, "root": ROOT_A, "salt": SALT, "trace_cid": "t", "result_cid": "r"}
    with pytest.raises(ProtocolError, match="commitment"):
        m.encode(kb, m.REVEAL, {**body, "commitment": b"\x02" * 31}, 1, 0)


def test_a_node_withholding_its_opening_still_sends_the_commitment():
    body = {"job": b"\x01" * 32, "root": ROOT_A, "salt": SALT, "trace_cid": "t", "result_cid": "r"}
    assert m.commit_part(body) is None  # its commit went on its own: nothing to send
    c = commitment(b"\x01" * 32, b"\x02" * 32, ROOT_A, SALT)
    assert m.commit_part({**body, "commitment": c}) == (m.COMMIT, {"job": b"\x01" * 32, "commitment": c})


def test_the_executor_itself_merges_only_its_own_unsent_commit():
    """An ExecutionDone at k = 1: the step's actions hold the reveal (with the commitment) and no commit."""
    me = NodeKey.from_seed(b"\x33" * 32)
    core = NodeCore(me.node_id, CPU, CoreConfig(advert_interval=1000), None)
    core.handle(Start(), 0.0)
    spec = make_spec(104, k=1)
    core.handle(SubmitJob(spec, SEED), 0.0)
    jid = spec.job_id
    assert core.jobs[jid].executing
    out = core.handle(ExecutionDone(jid, ROOT_A, SALT, "t", "r"), 2.0)
    pubs = [a for a in out if isinstance(a, Publish)]
    assert [p.kind for p in pubs] == [m.REVEAL]
    assert pubs[0].body["commitment"] == commitment(jid, me.node_id, ROOT_A, SALT)
