"""``commitReveal``: the k-th committer commits and reveals in one transaction (k = 1 settles at once); any
earlier committer gets ``NotLastCommitment`` and nothing changes; the checks of ``commit`` apply unchanged."""

from __future__ import annotations

import pytest
from chain_world import ETH, World, h

from sandrun_p2p.chain.crypto import commitment
from sandrun_p2p.chain.errors import ChainError
from sandrun_p2p.chain.market import STATE_OPEN, STATE_SETTLED, Opening

USAGE = ETH // 4
SALT = h("salt")


def reason(e: pytest.ExceptionInfo) -> str:
    return e.value.reason


def test_k1_commit_reveal_settles_and_pays_in_one_transaction(w: World) -> None:
    price, root, node = ETH, h("root"), w.nodes[0]
    job_id, _ = w.post(k=1, q=1, price=price)
    res = node.market.commit_reveal(job_id, root, SALT, USAGE)
    c = res.event("Committed")
    assert (c["pos"], c["node"], c["usage"]) == (0, node.index, USAGE)
    assert c["commitment"] == commitment(job_id, node.node_id, root, SALT)  # as an executor computes it
    assert res.event("Revealed")["traceRoot"] == root
    closed = res.event("JobClosed")
    assert (closed["state"], closed["agreeing"], list(closed["credited"])) == (STATE_SETTLED, 1, [USAGE])
    assert closed["refund"] == price - USAGE
    info = w.market.node(node.index)
    assert (info.earnings, info.completed, info.open_jobs, info.failed) == (USAGE, 1, 0, 0)
    assert node.market.withdraw().event("Withdrawn")["amount"] == USAGE
    assert w.client.claim_refund(job_id).event("RefundClaimed")["amount"] == price - USAGE
    print(f"commitReveal k=1 (commit + reveal + settle): {res.gas_used:,} gas")


def test_not_the_kth_commitment_reverts_and_leaves_the_job_untouched(w: World) -> None:
    job_id, _ = w.post(k=2, q=2)
    before = w.market.job(job_id)
    with pytest.raises(ChainError) as e:
        w.nodes[0].market.commit_reveal(job_id, h("root"), SALT, USAGE)
    assert reason(e) == "NotLastCommitment"
    assert w.market.job(job_id) == before and before.commits == 0
    assert w.market.node(w.nodes[0].index).open_jobs == 0
    # the fallback: an ordinary commitment still takes the first position
    w.commit(job_id, w.nodes[0], h("root"), USAGE)
    assert w.market.job(job_id).executors == (w.nodes[0].index,)


def test_kth_committer_opens_only_its_own_position(w: World) -> None:
    root = h("root")
    job_id, _ = w.post(k=2, q=2, price=ETH)
    first = w.commit(job_id, w.nodes[0], root, USAGE)
    res = w.nodes[1].market.commit_reveal(job_id, root, SALT, USAGE)
    assert res.event("Committed")["pos"] == 1
    assert [(e["pos"], e["traceRoot"]) for e in res.all("Revealed")] == [(1, root)]
    assert not res.all("JobClosed")
    job = w.market.job(job_id)
    assert (job.state, job.commits, job.revealed_mask) == (STATE_OPEN, 2, 0b10)
    # the other position is revealed as usual and that settles the job; the stored opening of position 1 counts
    out = w.nodes[0].market.reveal(job_id, [first])
    closed = out.event("JobClosed")
    assert (closed["state"], closed["agreeing"], list(closed["credited"])) == (STATE_SETTLED, 2, [USAGE] * 2)


def test_kth_committer_dissenting_is_slashed_at_settlement(w: World) -> None:
    job_id, _ = w.post(k=3, q=2, price=ETH)
    ops = [w.commit(job_id, w.nodes[i], h("root"), USAGE) for i in (0, 1)]
    w.nodes[2].market.commit_reveal(job_id, h("other root"), SALT, USAGE)
    closed = w.other.reveal(job_id, ops).event("JobClosed")
    assert (closed["state"], closed["agreeing"]) == (STATE_SETTLED, 2)
    assert w.market.node(w.nodes[2].index).failed == 1


def test_commit_reveal_checks_as_commit_does(w: World) -> None:
    job_id, _ = w.post(k=1, q=1)
    with pytest.raises(ChainError) as e:
        w.client.commit_reveal(job_id, h("root"), SALT, USAGE)
    assert reason(e) == "NotRegistered"
    with pytest.raises(ChainError) as e:
        w.nodes[0].market.commit_reveal(h("no such job"), h("root"), SALT, USAGE)
    assert reason(e) == "JobNotOpen"
    # closed: the position is taken (CommitClosed), then the job settled (JobNotOpen)
    w.commit(job_id, w.nodes[0], h("root"), USAGE)
    with pytest.raises(ChainError) as e:
        w.nodes[1].market.commit_reveal(job_id, h("root"), SALT, USAGE)
    assert reason(e) == "CommitClosed"
    done, _ = w.post(k=1, q=1)
    w.nodes[1].market.commit_reveal(done, h("root"), SALT, USAGE)
    with pytest.raises(ChainError) as e:
        w.nodes[2].market.commit_reveal(done, h("root"), SALT, USAGE)
    assert reason(e) == "JobNotOpen"
    # a second commitment by the same node
    twice, _ = w.post(k=2, q=2)
    w.commit(twice, w.nodes[0], h("root"), USAGE)
    with pytest.raises(ChainError) as e:
        w.nodes[0].market.commit_reveal(twice, h("root"), SALT, USAGE)
    assert reason(e) == "AlreadyCommitted"
    # unbonding
    late, _ = w.post(k=1, q=1)
    w.nodes[3].market.request_unbond()
    with pytest.raises(ChainError) as e:
        w.nodes[3].market.commit_reveal(late, h("root"), SALT, USAGE)
    assert reason(e) == "Unbonding"
    # past the deadline
    w.chain.advance(600)
    with pytest.raises(ChainError) as e:
        w.nodes[4].market.commit_reveal(late, h("root"), SALT, USAGE)
    assert reason(e) == "CommitClosed"


def test_commit_reveal_gas_beats_commit_then_reveal(w: World) -> None:
    """k = 1: one commitReveal against commit + reveal (the reveal settles). A measured bound, not a guess."""
    root = h("root")
    job_a, _ = w.post(k=1, q=1)
    one = w.nodes[0].market.commit_reveal(job_a, root, SALT, USAGE).gas_used
    job_b, _ = w.post(k=1, q=1)
    c = w.nodes[1].market.commit(job_b, commitment(job_b, w.nodes[1].node_id, root, SALT), USAGE).gas_used
    r = w.nodes[1].market.reveal(job_b, [Opening(0, root, SALT, USAGE)]).gas_used
    print(f"k=1: commitReveal {one:,} gas; commit {c:,} + reveal {r:,} = {c + r:,}")
    assert one < c + r - 21_000  # at least the second transaction's base cost saved
    assert one < 100_000


def test_commit_reveal_many_settles_each_job_as_commit_reveal_does(w: World) -> None:
    node, roots = w.nodes[0], [h("r0"), h("r1"), h("r2")]
    jobs = [w.post(k=1, q=1, price=ETH)[0] for _ in roots]
    res = node.market.commit_reveal_many([(j, r, SALT, USAGE) for j, r in zip(jobs, roots, strict=True)])
    closed = res.all("JobClosed")
    assert [bytes(c["jobId"]) for c in closed] == jobs
    assert all((c["state"], list(c["credited"])) == (STATE_SETTLED, [USAGE]) for c in closed)
    assert [e["traceRoot"] for e in res.all("Revealed")] == roots
    assert [e["commitment"] for e in res.all("Committed")] == [
        commitment(j, node.node_id, r, SALT) for j, r in zip(jobs, roots, strict=True)
    ]
    info = w.market.node(node.index)
    assert (info.earnings, info.completed, info.open_jobs) == (3 * USAGE, 3, 0)
    alone_job, _ = w.post(k=1, q=1, price=ETH)
    alone = node.market.commit_reveal(alone_job, h("r3"), SALT, USAGE)
    assert res.gas_used < 3 * alone.gas_used - 2 * 21_000  # the transaction's base cost once, not three times
    print(f"commitRevealMany of 3: {res.gas_used:,} gas, commitReveal alone {alone.gas_used:,}")


def test_commit_reveal_many_is_all_or_nothing(w: World) -> None:
    node = w.nodes[0]
    good, _ = w.post(k=1, q=1)
    two, _ = w.post(k=2, q=2)  # this node would be the first of two: NotLastCommitment
    before = (w.market.job(good), w.market.job(two))
    with pytest.raises(ChainError) as e:
        node.market.commit_reveal_many([(good, h("r"), SALT, USAGE), (two, h("r"), SALT, USAGE)])
    assert reason(e) == "NotLastCommitment"
    assert (w.market.job(good), w.market.job(two)) == before  # the good job was not committed either
    for items in ([], [(h(f"j{i}"), h("r"), SALT, USAGE) for i in range(65)]):
        with pytest.raises(ChainError) as e:
            node.market.commit_reveal_many(items)
        assert reason(e) == "BadParameter" and bytes(e.value.args_["what"]).rstrip(b"\0") == b"batch"
    assert (
        node.market.commit_reveal_many([(good, h("r"), SALT, USAGE)]).event("JobClosed")["state"]
        == STATE_SETTLED
    )
