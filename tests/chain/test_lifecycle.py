"""The per-job path end to end: post, commit, reveal, quorum payout, refunds, withdrawals, events."""

from __future__ import annotations

import pytest
from chain_world import ETH, PARAMS, h
from hexbytes import HexBytes

from sandrun_p2p.chain.errors import ChainError
from sandrun_p2p.chain.events import EventPoller
from sandrun_p2p.chain.market import (
    MAX_JOBS_PER_CALL,
    STATE_FAILED,
    STATE_OPEN,
    STATE_SETTLED,
    Event,
)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_lifecycle_all_agree(w, k):
    price = 3 * ETH
    usage = ETH // 2
    start_balance = w.market.contract_balance()
    job_id, posted = w.post(k=k, price=price)
    ev = posted.event("JobPosted")
    assert (ev["k"], ev["q"], ev["escrow"]) == (k, k // 2 + 1, price)
    # the seed is the previous block's hash (first 8 bytes), recorded in the event and the view
    block = w.chain.w3.eth.get_block(posted.receipt["blockNumber"] - 1)
    assert ev["seed"] == bytes(block["hash"])[:8] == w.market.job_seed(job_id)

    root = h("the trace root")
    openings = w.commit_all(job_id, [root] * k, usage)
    job = w.client.job(job_id)
    assert job.state == STATE_OPEN and job.commits == k
    assert job.executors == tuple(n.index for n in w.nodes[:k])
    assert all(w.market.node(n.index).open_jobs == 1 for n in w.nodes[:k])

    # one executor submits every opening (gathered from gossip): the job settles in the same transaction
    res = w.nodes[0].market.reveal(job_id, openings)
    closed = res.event("JobClosed")
    assert closed["state"] == STATE_SETTLED
    assert closed["agreeing"] == k
    assert closed["rootPrefix"] == root[:20]
    assert list(closed["credited"]) == [usage] * k
    assert closed["refund"] == price - k * usage
    assert [e["traceRoot"] for e in res.all("Revealed")] == [root] * k

    for n in w.nodes[:k]:
        info = w.market.node(n.index)
        assert (info.earnings, info.completed, info.open_jobs, info.failed) == (usage, 1, 0, 0)

    # pull payments: executors and client withdraw; the contract keeps only the stakes
    for n in w.nodes[:k]:
        before = w.chain.balance(n.address)
        out = n.market.withdraw()
        assert out.event("Withdrawn")["amount"] == usage
        fee = out.gas_used * out.receipt["effectiveGasPrice"]
        assert w.chain.balance(n.address) == before + usage - fee
    refund = w.client.claim_refund(job_id).event("RefundClaimed")["amount"]
    assert refund == price - k * usage
    assert w.market.contract_balance() == start_balance
    assert w.client.job(job_id).escrow == 0


def test_usage_is_capped_at_escrow_share(w):
    price = ETH
    job_id, _ = w.post(k=3, q=2, price=price)
    root = h("r")
    openings = w.commit_all(job_id, [root] * 3, 10 * ETH)  # every executor claims more than the escrow
    closed = w.nodes[1].market.reveal(job_id, openings).event("JobClosed")
    share = price // 3
    assert list(closed["credited"]) == [share] * 3
    assert closed["refund"] == price - 3 * share  # the rounding dust goes back to the client


def test_reveals_in_separate_transactions(w):
    job_id, _ = w.post(k=3, q=2)
    root = h("r")
    openings = w.commit_all(job_id, [root, root, h("other")], ETH // 10)
    for i, o in enumerate(openings[:2]):
        res = w.nodes[i].market.reveal(job_id, [o])
        assert res.all("JobClosed") == []
        assert w.client.job(job_id).revealed_mask == (1 << (i + 1)) - 1
    res = w.nodes[2].market.reveal(job_id, [openings[2]])
    closed = res.event("JobClosed")
    assert closed["state"] == STATE_SETTLED and closed["agreeing"] == 2
    # the dissenter lost faultPenalty, shared by the two agreeing executors
    slashed = res.event("Slashed")
    assert (slashed["node"], slashed["reason"], slashed["amount"]) == (
        w.nodes[2].index,
        2,
        PARAMS.fault_penalty,
    )
    assert list(closed["credited"]) == [ETH // 10 + PARAMS.fault_penalty // 2] * 2 + [0]
    info = w.market.node(w.nodes[2].index)
    assert (info.stake, info.failed, info.slashed, info.open_jobs) == (
        2 * ETH - PARAMS.fault_penalty,
        1,
        1,
        0,
    )


def test_anyone_may_submit_openings(w):
    job_id, _ = w.post(k=1, q=1)
    (o,) = w.commit_all(job_id, [h("r")], 1000)
    assert w.other.reveal(job_id, [o]).event("JobClosed")["state"] == STATE_SETTLED


def test_event_poller_follows_a_job(w):
    poller = EventPoller(w.market, from_block=w.chain.block_number() + 1)
    job_id, _ = w.post(k=2, q=2)
    openings = w.commit_all(job_id, [h("r")] * 2, 5)
    w.nodes[0].market.reveal(job_id, openings)
    names = [e.name for e in poller.poll()]
    assert names == ["JobPosted", "Committed", "Committed", "Revealed", "Revealed", "JobClosed"]
    assert poller.poll() == []
    w.client.claim_refund(job_id)
    assert [e.name for e in poller.poll()] == ["RefundClaimed"]
    only = EventPoller(w.market, from_block=0, names={"NodeRegistered"})
    assert len(only.poll()) == 5


def test_event_poller_decodes_as_web3_does(w):
    """The raw-log decoder (polls and receipts) gives what web3's process_log gives, for every kind a job, a slash
    and a batch emit."""
    first = w.chain.block_number() + 1
    job_id, _ = w.post(k=3, q=2)
    openings = w.commit_all(job_id, [h("r"), h("r"), h("dissent")], 5)
    w.nodes[0].market.reveal(job_id, openings)
    w.client.deposit(ETH)  # an address in a topic, a batch settled (address and root in the data)
    v = w.client.sign_voucher(w.nodes[1].address, job_id, 1, 10, 10)
    w.nodes[1].market.settle_batch(v, h("results root"))
    logs = w.chain.w3.eth.get_logs({"address": w.market.address, "fromBlock": first, "toBlock": "latest"})
    web3_events = {
        bytes(HexBytes(ev.topic)): ev
        for ev in (
            getattr(w.market.contract.events, i["name"])
            for i in w.market.artifact["abi"]
            if i["type"] == "event"
        )
    }
    want = []
    for log in logs:
        d = web3_events[bytes(log["topics"][0])].process_log(log)
        want.append(
            Event(
                d["event"],
                dict(d["args"]),
                d["blockNumber"],
                "0x" + bytes(d["transactionHash"]).hex(),
                d["logIndex"],
            )
        )
    assert {e.name for e in want} >= {
        "JobPosted",
        "Committed",
        "Revealed",
        "JobClosed",
        "Slashed",
        "Deposited",
        "BatchSettled",
    }
    got = EventPoller(w.market, from_block=first).poll()
    assert [(e.name, e.block_number, e.tx_hash, e.log_index) for e in got] == [
        (e.name, e.block_number, e.tx_hash, e.log_index) for e in want
    ]
    for a, b in zip(got, want, strict=True):
        assert a.args.keys() == b.args.keys()
        for key in a.args:
            assert a.args[key] == b.args[key] or tuple(a.args[key]) == tuple(b.args[key]), (a.name, key)
    assert w.market.decode_logs(logs) == got
    only = EventPoller(w.market, from_block=first, names={"JobClosed", "Slashed"}).poll()
    assert [e.name for e in only] == [e.name for e in want if e.name in ("JobClosed", "Slashed")]


def test_no_quorum_refunds_everything(w):
    price = ETH
    job_id, _ = w.post(k=3, q=2, price=price)
    openings = w.commit_all(job_id, [h("a"), h("b"), h("c")], ETH // 10)
    res = w.nodes[0].market.reveal(job_id, openings)
    closed = res.event("JobClosed")
    assert closed["state"] == STATE_FAILED and closed["agreeing"] == 0 and closed["refund"] == price
    assert res.all("Slashed") == []  # nobody can tell who was wrong: no penalty, a failure each
    for n in w.nodes[:3]:
        info = w.market.node(n.index)
        assert (info.failed, info.stake, info.open_jobs) == (1, 2 * ETH, 0)
    assert w.client.claim_refund(job_id).event("RefundClaimed")["amount"] == price


def test_event_poller_without_the_head_sees_each_event_once(w, monkeypatch):
    """``head_every``: most polls are one eth_getLogs to ``latest``; every event still comes once, in order, and the
    position catches up with the head at the n-th poll even when nothing happened."""
    first = w.chain.block_number() + 1
    fast = EventPoller(w.market, from_block=first, head_every=4)
    heads, starts = [], []
    real = w.chain.block_number
    monkeypatch.setattr(w.chain, "block_number", lambda: heads.append(1) or real())
    real_get = fast._get_logs

    def get_logs(q: dict) -> dict:
        if q["toBlock"] == "latest":
            starts.append((int(q["fromBlock"], 16), real()))
        return real_get(q)

    monkeypatch.setattr(fast, "_get_logs", get_logs)
    got = fast.poll()  # the first poll reads the head
    assert fast.poll() == []  # nothing mined since: the range must still start at or before the head
    for label in ("a", "b"):
        job_id, _ = w.post(k=1, q=1)
        w.commit_all(job_id, [h(label)], 5)
        got += fast.poll()
    assert len(heads) == 1
    got += fast.poll()  # the 4th poll since the head was read reads it again
    assert len(heads) == 2
    assert fast.position == real() + 1
    want = EventPoller(w.market, from_block=first).poll()
    assert [(e.name, e.block_number, e.log_index) for e in got] == [
        (e.name, e.block_number, e.log_index) for e in want
    ]
    assert [e.name for e in got].count("JobPosted") == 2
    w.chain.mine(5)  # nothing of ours in these blocks
    for _ in range(3):
        assert fast.poll() == [] and fast.position < real() + 1  # no head read: it stays behind
    assert fast.poll() == [] and fast.position == real() + 1  # the 4th caught up
    assert starts and all(start <= head for start, head in starts)


def test_post_jobs_escrows_every_job_in_one_transaction(w):
    now = w.chain.now()
    jobs = [(w.new_job_id(), k, k // 2 + 1, now + 500, (k + 1) * ETH) for k in (1, 2, 3)]
    before = w.market.contract_balance()
    res = w.client.post_jobs(jobs)
    posted = res.all("JobPosted")
    assert [bytes(e["jobId"]) for e in posted] == [j[0] for j in jobs]
    seed = bytes(w.chain.w3.eth.get_block(res.receipt["blockNumber"] - 1)["hash"])[:8]
    for (jid, k, q, deadline, price), e in zip(jobs, posted, strict=True):
        assert (e["k"], e["q"], e["deadline"], e["escrow"], e["seed"]) == (k, q, deadline, price, seed)
        info = w.client.job(jid)
        assert (info.state, info.escrow, info.seed) == (STATE_OPEN, price, seed)
        assert info.client == w.client.account
    assert w.market.contract_balance() == before + sum(j[4] for j in jobs)
    # each job then runs its course as one posted alone does
    openings = w.commit_all(jobs[0][0], [h("root")], ETH // 4)
    assert w.nodes[0].market.reveal(jobs[0][0], openings).event("JobClosed")["state"] == STATE_SETTLED
    # and costs less gas than posting them one by one: the transaction's base cost (21k) is paid once
    _, alone = w.post(k=1)
    assert res.gas_used < len(jobs) * alone.gas_used - 21_000


def test_post_jobs_is_all_or_nothing(w):
    now = w.chain.now()
    taken, _ = w.post(k=1, q=1)
    fresh = w.new_job_id()

    def refused(jobs: list, value: int | None = None) -> tuple[str, bytes]:
        with pytest.raises(ChainError) as e:
            if value is None:
                w.client.post_jobs(jobs)
            else:
                w.client._tx("postJobs", jobs, value=value)
        return e.value.reason, bytes(e.value.args_.get("what", b"")).rstrip(b"\0")

    assert refused([(fresh, 1, 1, now + 100, ETH), (taken, 1, 1, now + 100, ETH)]) == ("JobExists", b"")
    assert refused([(fresh, 1, 1, now + 100, ETH), (h("x"), 2, 1, now + 100, ETH)]) == ("BadParameter", b"q")
    assert refused([]) == ("BadParameter", b"batch")
    many = [(h(f"m{i}"), 1, 1, now + 100, 1) for i in range(MAX_JOBS_PER_CALL + 1)]
    assert refused(many) == ("BadParameter", b"batch")
    two = [(fresh, 1, 1, now + 100, ETH), (h("y"), 1, 1, now + 100, ETH)]
    assert refused(two, value=2 * ETH + 1) == ("BadParameter", b"escrow")  # msg.value is not the sum
    assert refused(two, value=2 * ETH - 1) == ("BadParameter", b"escrow")
    # nothing was posted by any refused call: the fresh id is still free
    with pytest.raises(ChainError, match="NoSuchJob"):
        w.client.job(fresh)
    assert w.client.post_jobs(two).all("JobPosted")[0]["jobId"] == fresh
