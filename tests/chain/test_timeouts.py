"""Every state has a way out: deadlines, refunds, silent executors, unbonding, deposit and batch windows."""

from __future__ import annotations

import pytest
from chain_world import ETH, PARAMS, h

from sandrun_p2p.chain.errors import ChainError
from sandrun_p2p.chain.market import STATE_FAILED, STATE_SETTLED


def reason(exc_info) -> str:
    return exc_info.value.reason


def test_nobody_commits_refund_after_deadline(w):
    job_id, _ = w.post(k=3, price=ETH, ttl=300)
    with pytest.raises(ChainError) as e:
        w.other.finalize(job_id)
    assert reason(e) == "TooEarly"
    w.chain.advance_to(w.client.job(job_id).deadline + 1)
    with pytest.raises(ChainError) as e:
        w.nodes[0].market.commit(job_id, h("c"), 1)
    assert reason(e) == "CommitClosed"
    closed = w.other.finalize(job_id).event("JobClosed")
    assert (closed["state"], closed["refund"]) == (STATE_FAILED, ETH)
    with pytest.raises(ChainError) as e:
        w.other.claim_refund(job_id)
    assert reason(e) == "NotClient"
    assert w.client.claim_refund(job_id).event("RefundClaimed")["amount"] == ETH
    with pytest.raises(ChainError) as e:
        w.client.claim_refund(job_id)
    assert reason(e) == "NothingToPay"


def test_cancel_before_any_commit(w):
    job_id, _ = w.post(k=2)
    with pytest.raises(ChainError) as e:
        w.other.cancel_job(job_id)
    assert reason(e) == "NotClient"
    assert w.client.cancel_job(job_id).event("JobClosed")["state"] == STATE_FAILED
    assert w.client.claim_refund(job_id).event("RefundClaimed")["amount"] == ETH

    job_id, _ = w.post(k=2)
    w.commit_all(job_id, [h("r")], 1)
    with pytest.raises(ChainError) as e:
        w.client.cancel_job(job_id)
    assert reason(e) == "CommitClosed"


def test_fewer_commits_than_k_settle_after_deadline(w):
    job_id, _ = w.post(k=3, q=2, ttl=300)
    openings = w.commit_all(job_id, [h("r"), h("r")], ETH // 10)
    with pytest.raises(ChainError) as e:  # reveals wait for all k commits or the deadline
        w.nodes[0].market.reveal(job_id, openings)
    assert reason(e) == "RevealNotOpen"
    w.chain.advance(301)
    closed = w.nodes[0].market.reveal(job_id, openings).event("JobClosed")
    assert closed["state"] == STATE_SETTLED and closed["agreeing"] == 2


def test_silent_executors_are_slashed_at_finalize(w):
    price = ETH
    job_id, _ = w.post(k=3, q=2, price=price, ttl=300)
    openings = w.commit_all(job_id, [h("r")] * 3, ETH // 10)
    w.nodes[0].market.reveal(job_id, openings[:2])  # the third executor never reveals
    end = w.client.job(job_id).reveal_deadline
    w.chain.advance_to(end)
    with pytest.raises(ChainError) as e:
        w.other.finalize(job_id)
    assert reason(e) == "TooEarly"
    w.chain.advance_to(end + 1)
    res = w.other.finalize(job_id)
    closed = res.event("JobClosed")
    slashed = res.event("Slashed")
    assert (slashed["node"], slashed["reason"], slashed["amount"]) == (
        w.nodes[2].index,
        1,
        PARAMS.fault_penalty,
    )
    bonus = PARAMS.fault_penalty // 2
    assert list(closed["credited"]) == [ETH // 10 + bonus] * 2 + [0]
    assert closed["refund"] == price - 2 * (ETH // 10)
    with pytest.raises(ChainError) as e:
        w.other.finalize(job_id)
    assert reason(e) == "JobNotOpen"


def test_nobody_reveals_client_gets_refund_and_penalties(w):
    price = ETH
    job_id, _ = w.post(k=3, q=2, price=price, ttl=300)
    w.commit_all(job_id, [h("r")] * 3, ETH // 10)
    w.chain.advance(300 + PARAMS.reveal_window + 1)
    res = w.other.finalize(job_id)
    closed = res.event("JobClosed")
    assert closed["state"] == STATE_FAILED
    assert closed["refund"] == price + 3 * PARAMS.fault_penalty
    assert len(res.all("Slashed")) == 3
    assert w.client.claim_refund(job_id).event("RefundClaimed")["amount"] == price + 3 * PARAMS.fault_penalty
    for n in w.nodes[:3]:
        assert w.market.node(n.index).open_jobs == 0


def test_penalty_never_exceeds_the_stake(w):
    # a node already stripped of its stake (equivocation) fails silently: the penalty is what is left, zero
    node = w.nodes[0]
    job_id, _ = w.post(k=1, q=1, ttl=300)
    w.commit_all(job_id, [h("r")], 1)
    a, b = node.market.attest(job_id, h("r")), node.market.attest(job_id, h("other"))
    w.other.slash_equivocation(a, b)
    assert w.market.node(node.index).stake == 0
    w.chain.advance(300 + PARAMS.reveal_window + 1)
    res = w.other.finalize(job_id)
    assert res.event("Slashed")["amount"] == 0
    assert res.event("JobClosed")["refund"] == ETH


def test_unbonding_delay_and_open_jobs(w):
    node = w.nodes[0]
    job_id, _ = w.post(k=1, q=1, ttl=300)
    (o,) = w.commit_all(job_id, [h("r")], 1)
    with pytest.raises(ChainError) as e:
        node.market.withdraw_stake()
    assert reason(e) == "NotUnbonding"
    node.market.request_unbond()
    assert not w.market.is_eligible(node.address)
    job2, _ = w.post(k=1, q=1)
    with pytest.raises(ChainError) as e:  # unbonding nodes take no new jobs
        w.commit(job2, node, h("r"), 1)
    assert reason(e) == "Unbonding"
    w.chain.advance(PARAMS.unbonding_delay + 1)
    with pytest.raises(ChainError) as e:  # still assigned to an open job
        node.market.withdraw_stake()
    assert reason(e) == "StillBonded" and e.value.args_["openJobs"] == 1
    w.other.finalize(job_id)  # the reveal window is over: anyone can close the job (o was never revealed)
    before = w.chain.balance(node.address)
    res = node.market.withdraw_stake()
    amount = res.event("StakeWithdrawn")["amount"]
    assert amount == 2 * ETH - PARAMS.fault_penalty
    assert w.chain.balance(node.address) == before + amount - res.gas_used * res.receipt["effectiveGasPrice"]
    assert w.market.node(node.index).stake == 0
    del o


def test_cancel_unbond_and_restake(w):
    node = w.nodes[1]
    node.market.request_unbond()
    with pytest.raises(ChainError) as e:
        node.market.request_unbond()
    assert reason(e) == "Unbonding"
    node.market.cancel_unbond()
    assert w.market.is_eligible(node.address)
    node.market.add_stake(ETH)
    assert w.market.node(node.index).stake == 3 * ETH


def test_deposit_withdrawal_waits_for_the_delay(w):
    c = w.client
    c.deposit(ETH)
    with pytest.raises(ChainError) as e:
        c.withdraw_deposit()
    assert reason(e) == "TooEarly"
    unlock = c.request_deposit_withdrawal().event("DepositWithdrawalRequested")["unlockAt"]
    w.chain.advance_to(unlock - 1)
    with pytest.raises(ChainError) as e:
        c.withdraw_deposit()
    assert reason(e) == "TooEarly"
    w.chain.advance_to(unlock)
    assert c.withdraw_deposit().event("DepositWithdrawn")["amount"] == ETH
    assert c.deposit_of() == (0, 0)


def test_batch_pays_only_after_challenge_window(w):
    from sandrun_p2p.chain.crypto import ResultsTree

    node = w.nodes[0]
    w.client.deposit(ETH)
    v = w.client.sign_voucher(node.address, h("j1"), 1, 1000, 1000)
    tree = ResultsTree([(h("j1"), h("r1"))])
    batch_id = node.market.settle_batch(v, tree).event("BatchSettled")["batchId"]
    with pytest.raises(ChainError) as e:
        w.other.finalize_batch(batch_id)
    assert reason(e) == "TooEarly"
    w.chain.advance(PARAMS.challenge_window + 1)
    assert w.other.finalize_batch(batch_id).event("BatchPaid")["amount"] == 1000
    assert w.market.node(node.index).earnings == 1000
