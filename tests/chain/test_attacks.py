"""Attacks on the contract: reentrancy, reverting receivers, replays, copies, forgeries, out-of-order calls."""

from __future__ import annotations

import os

import pytest
from chain_world import ETH, PARAMS, h

from sandrun_p2p.chain.crypto import (
    SECP256K1_N,
    Attestation,
    ResultsTree,
    commitment,
    sign_attestation,
    sign_voucher,
)
from sandrun_p2p.chain.errors import ChainError
from sandrun_p2p.chain.market import BATCH_VOIDED, STATE_FAILED, STATE_SETTLED, Opening


def reason(e) -> str:
    return e.value.reason


def data(w, fn: str, *args) -> bytes:
    return w.market.contract.functions[fn](*args)._encode_transaction_data()


def puppet_exec(w, puppet, fn: str, *args, value: int = 0, signer=None):
    """Have the helper contract call market.fn(*args)."""
    call = puppet.functions.exec(data(w, fn, *args))._encode_transaction_data()
    receipt = w.chain.send(
        signer or w.deployer, {"to": puppet.address, "data": call, "value": value}, method=fn
    )
    return w.market.decode_logs(receipt["logs"])


# ----------------------------------------------------------------------------------------------- reentrancy


@pytest.mark.parametrize("target", ["claimRefund", "withdraw", "withdrawDeposit"])
def test_reentrancy_through_a_malicious_receiver(w, target):
    evil = w.deploy_helper("ReentrantReceiver")
    me = evil.address
    balance0 = w.market.contract_balance()
    if target == "claimRefund":
        job_id = w.new_job_id()
        puppet_exec(w, evil, "postJob", job_id, 1, 1, w.chain.now() + 500, value=ETH)
        puppet_exec(w, evil, "cancelJob", job_id)
        args = (job_id, me)
    elif target == "withdraw":
        # the contract is a node that earned a payment
        nid = h("evil-node")
        puppet_exec(w, evil, "register", nid, value=PARAMS.min_stake)
        job_id, _ = w.post(k=1, q=1, price=ETH)
        salt, root = os.urandom(32), h("r")
        puppet_exec(w, evil, "commit", job_id, commitment(job_id, nid, root, salt), ETH)
        w.other.reveal(job_id, [Opening(0, root, salt, ETH)])
        args = (me,)
    else:
        puppet_exec(w, evil, "deposit", value=ETH)
        puppet_exec(w, evil, "requestDepositWithdrawal")
        w.chain.advance(PARAMS.deposit_delay + 1)
        args = (me,)
    # on receiving the payment it calls the same function again
    w.chain.send(
        w.deployer,
        {"to": me, "data": evil.functions.setReenter(data(w, target, *args))._encode_transaction_data()},
    )
    before = w.market.contract_balance()
    puppet_exec(w, evil, target, *args)
    assert evil.functions.attempts().call() == 1
    assert evil.functions.successes().call() == 0
    err = w.chain.decoder.decode(bytes(evil.functions.lastError().call()))
    assert err.reason == "Reentrancy"
    assert evil.functions.received().call() == ETH  # paid exactly once
    assert w.market.contract_balance() == before - ETH
    assert w.market.contract_balance() >= balance0 - ETH


def test_always_reverting_receiver_only_blocks_itself(w):
    bad = w.deploy_helper("RevertingReceiver")
    job_id = w.new_job_id()
    puppet_exec(w, bad, "postJob", job_id, 1, 1, w.chain.now() + 500, value=ETH)
    puppet_exec(w, bad, "cancelJob", job_id)
    with pytest.raises(ChainError) as e:
        puppet_exec(w, bad, "claimRefund", job_id, bad.address)
    assert reason(e) == "TransferFailed"
    # everyone else carries on: another job settles and pays
    job2, _ = w.post(k=1, q=1)
    (o,) = w.commit_all(job2, [h("r")], 100)
    assert w.other.reveal(job2, [o]).event("JobClosed")["state"] == STATE_SETTLED
    assert w.nodes[0].market.withdraw().event("Withdrawn")["amount"] == 100
    # and the reverting client can still have its refund sent elsewhere
    sink = w.chain.new_account().address
    puppet_exec(w, bad, "claimRefund", job_id, sink)
    assert w.chain.balance(sink) == ETH


def test_reverting_executor_does_not_block_settlement(w):
    bad = w.deploy_helper("RevertingReceiver")
    nid = h("bad-node")
    puppet_exec(w, bad, "register", nid, value=PARAMS.min_stake)
    job_id, _ = w.post(k=2, q=2, price=ETH)
    root = h("r")
    o0 = w.commit(job_id, w.nodes[0], root, 1000)
    salt = os.urandom(32)
    puppet_exec(w, bad, "commit", job_id, commitment(job_id, nid, root, salt), 1000)
    closed = w.other.reveal(job_id, [o0, Opening(1, root, salt, 1000)]).event("JobClosed")
    assert closed["state"] == STATE_SETTLED and list(closed["credited"]) == [1000, 1000]
    with pytest.raises(ChainError) as e:
        puppet_exec(w, bad, "withdraw", bad.address)
    assert reason(e) == "TransferFailed"
    assert w.nodes[0].market.withdraw().event("Withdrawn")["amount"] == 1000


# ----------------------------------------------------------------------------------------------- per-job path


def test_double_settle_and_double_refund(w):
    job_id, _ = w.post(k=1, q=1)
    (o,) = w.commit_all(job_id, [h("r")], 100)
    w.other.reveal(job_id, [o])
    with pytest.raises(ChainError) as e:
        w.other.reveal(job_id, [o])
    assert reason(e) == "JobNotOpen"
    w.chain.advance(2_000)
    with pytest.raises(ChainError) as e:
        w.other.finalize(job_id)
    assert reason(e) == "JobNotOpen"
    w.client.claim_refund(job_id)
    with pytest.raises(ChainError) as e:
        w.client.claim_refund(job_id)
    assert reason(e) == "NothingToPay"
    assert w.market.node(w.nodes[0].index).earnings == 100


def test_reveal_without_commit(w):
    job_id, _ = w.post(k=2, q=2, ttl=300)
    (o,) = w.commit_all(job_id, [h("r")], 100)
    w.chain.advance_to(w.client.job(job_id).deadline + 1)
    with pytest.raises(ChainError) as e:  # position 1 never committed
        w.other.reveal(job_id, [Opening(1, h("r"), os.urandom(32), 100)])
    assert reason(e) == "BadPosition"
    # a duplicate is skipped; a call with nothing new is refused
    assert len(w.other.reveal(job_id, [o, o]).all("Revealed")) == 1
    with pytest.raises(ChainError) as e:
        w.other.reveal(job_id, [o])
    assert reason(e) in ("AlreadyRevealed", "JobNotOpen")
    job2, _ = w.post(k=1, q=1)
    with pytest.raises(ChainError) as e:  # nobody committed: reveals are not open yet
        w.other.reveal(job2, [o])
    assert reason(e) == "RevealNotOpen"


def test_reveal_of_a_copied_commitment_fails_and_is_slashed(w):
    job_id, _ = w.post(k=3, q=2, price=ETH, ttl=300)
    honest, lazy, other = w.nodes[0], w.nodes[1], w.nodes[2]
    root = h("real work")
    o = w.commit(job_id, honest, root, 1000)
    # the lazy node copies the honest commitment from the Committed event, under its own node id
    copied = w.client.job(job_id)  # noqa: F841
    c = commitment(job_id, honest.node_id, root, o.salt)
    lazy.market.commit(job_id, c, 1000)
    o2 = w.commit(job_id, other, root, 1000)
    # after the honest reveals the lazy node knows root and salt, but the commitment binds the honest node id
    w.other.reveal(job_id, [o])
    with pytest.raises(ChainError) as e:
        lazy.market.reveal(job_id, [Opening(1, root, o.salt, 1000)])
    assert reason(e) == "BadOpening"
    w.other.reveal(job_id, [o2])
    w.chain.advance(300 + PARAMS.reveal_window + 5)
    res = w.other.finalize(job_id)
    assert res.event("Slashed")["node"] == lazy.index
    credited = res.event("JobClosed")["credited"]
    assert list(credited) == [1000 + PARAMS.fault_penalty // 2, 0, 1000 + PARAMS.fault_penalty // 2]


def test_opening_must_match_the_committed_usage(w):
    job_id, _ = w.post(k=1, q=1)
    (o,) = w.commit_all(job_id, [h("r")], 100)
    with pytest.raises(ChainError) as e:
        w.other.reveal(job_id, [Opening(o.pos, o.trace_root, o.salt, 10**18)])
    assert reason(e) == "BadOpening"
    with pytest.raises(ChainError) as e:
        w.other.reveal(job_id, [Opening(o.pos, h("other"), o.salt, o.usage)])
    assert reason(e) == "BadOpening"


def test_late_reveal(w):
    job_id, _ = w.post(k=1, q=1, ttl=300)
    (o,) = w.commit_all(job_id, [h("r")], 100)
    w.chain.advance_to(w.client.job(job_id).reveal_deadline + 1)
    with pytest.raises(ChainError) as e:
        w.other.reveal(job_id, [o])
    assert reason(e) == "RevealClosed"


def test_commit_rules(w):
    job_id, _ = w.post(k=2, q=2)
    w.commit(job_id, w.nodes[0], h("r"), 1)
    with pytest.raises(ChainError) as e:
        w.commit(job_id, w.nodes[0], h("r"), 1)
    assert reason(e) == "AlreadyCommitted"
    with pytest.raises(ChainError) as e:
        w.client.commit(job_id, h("c"), 1)
    assert reason(e) == "NotRegistered"
    w.commit(job_id, w.nodes[1], h("r"), 1)
    with pytest.raises(ChainError) as e:
        w.commit(job_id, w.nodes[2], h("r"), 1)
    assert reason(e) == "CommitClosed"
    with pytest.raises(ChainError) as e:
        w.nodes[0].market.commit(h("no such job"), h("c"), 1)
    assert reason(e) == "JobNotOpen"


def test_post_and_register_rules(w):
    now = w.chain.now()
    cases = [
        ((h("a"), 0, 1, now + 100), ETH, "BadParameter"),
        ((h("a"), 6, 4, now + 100), ETH, "BadParameter"),
        ((h("a"), 4, 2, now + 100), ETH, "BadParameter"),  # q must exceed k / 2
        ((h("a"), 3, 4, now + 100), ETH, "BadParameter"),
        ((h("a"), 1, 1, now - 1), ETH, "BadParameter"),
        ((h("a"), 1, 1, now + PARAMS.max_job_duration + 100), ETH, "BadParameter"),
        ((h("a"), 1, 1, now + 100), 0, "BadParameter"),
    ]
    for args, value, why in cases:
        with pytest.raises(ChainError) as e:
            w.client.post_job(*args, value)
        assert reason(e) == why, args
    job_id, _ = w.post(k=1, q=1)
    with pytest.raises(ChainError) as e:
        w.other.post_job(job_id, 1, 1, now + 100, ETH)
    assert reason(e) == "JobExists"
    with pytest.raises(ChainError) as e:
        w.nodes[0].market.register(h("fresh"), ETH)
    assert reason(e) == "AlreadyRegistered"
    with pytest.raises(ChainError) as e:
        w.other.register(w.nodes[0].node_id, ETH)
    assert reason(e) == "NodeIdTaken"
    with pytest.raises(ChainError) as e:
        w.other.register(h("fresh"), ETH - 1)
    assert reason(e) == "StakeTooLow"


# ----------------------------------------------------------------------------------------------- evidence


def test_equivocation_slash_and_replay(w):
    node = w.nodes[0]
    job_id, _ = w.post(k=1, q=1)
    a, b = node.market.attest(job_id, h("A")), node.market.attest(job_id, h("B"))
    res = w.other.slash_equivocation(a, b)
    ev = res.event("Slashed")
    assert (ev["node"], ev["reason"], ev["amount"], ev["reporter"]) == (
        node.index,
        3,
        2 * ETH,
        w.other.account,
    )
    assert w.market.withdrawable(w.other.account) == ETH
    assert w.market.withdrawable(w.client.account) == ETH
    assert w.market.node(node.index).slashed == 1
    with pytest.raises(ChainError) as e:
        w.other.slash_equivocation(a, b)
    assert reason(e) == "AlreadySlashed"
    with pytest.raises(ChainError) as e:
        w.other.slash_equivocation(b, a)
    assert reason(e) == "AlreadySlashed"


def test_self_report_pays_the_client(w):
    node = w.nodes[1]
    job_id, _ = w.post(k=1, q=1)
    a, b = node.market.attest(job_id, h("A")), node.market.attest(job_id, h("B"))
    node.market.slash_equivocation(a, b)
    assert w.market.withdrawable(w.client.account) == 2 * ETH
    assert w.market.withdrawable(node.address) == 0


def test_forged_evidence_is_rejected(w):
    node, other = w.nodes[0], w.nodes[1]
    job_id, _ = w.post(k=1, q=1)
    a = node.market.attest(job_id, h("A"))
    forged = other.market.attest(job_id, h("B"))  # signed by someone else
    with pytest.raises(ChainError) as e:
        w.other.slash_equivocation(a, forged)
    assert reason(e) == "NotEquivocation"
    with pytest.raises(ChainError) as e:
        w.other.slash_equivocation(a, node.market.attest(job_id, h("A")))
    assert reason(e) == "NotEquivocation"
    # the signature of another root, relabelled
    with pytest.raises(ChainError) as e:
        w.other.slash_equivocation(a, Attestation(job_id, h("B"), a.signature))
    assert reason(e) in ("NotEquivocation", "NotRegistered")
    # malleated (high-s) signature
    r, s, v = a.signature[:32], int.from_bytes(a.signature[32:64], "big"), a.signature[64]
    high = Attestation(job_id, h("A"), r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v]))
    with pytest.raises(ChainError) as e:
        w.other.slash_equivocation(high, node.market.attest(job_id, h("B")))
    assert reason(e) == "BadSignature"
    # attestations made for another deployment (domain) do not count here
    key = node.market.signer.private_key
    alien = [sign_attestation(key, w.chain.chain_id, w.other.account, job_id, r_) for r_ in (h("A"), h("B"))]
    with pytest.raises(ChainError) as e:
        w.other.slash_equivocation(*alien)
    assert reason(e) in ("NotEquivocation", "NotRegistered")
    # unknown job
    with pytest.raises(ChainError) as e:
        w.other.slash_equivocation(node.market.attest(h("x"), h("A")), node.market.attest(h("x"), h("B")))
    assert reason(e) == "NoSuchJob"
    assert w.market.node(node.index).stake == 2 * ETH


# ----------------------------------------------------------------------------------------------- batched path


def _batch(w, node, n_jobs=3, per_job=1000):
    results = [(h(f"j{i}"), h(f"r{i}")) for i in range(n_jobs)]
    v = w.client.sign_voucher(node.address, results[-1][0], n_jobs, per_job, per_job * n_jobs)
    tree = ResultsTree(results)
    res = node.market.settle_batch(v, tree)
    return v, tree, res.event("BatchSettled")


def test_voucher_replay_and_forgery(w):
    node = w.nodes[0]
    w.client.deposit(ETH)
    v, tree, ev = _batch(w, node)
    assert (ev["amount"], ev["count"], ev["shortfall"]) == (3000, 3, 0)
    with pytest.raises(ChainError) as e:
        node.market.settle_batch(v, tree)
    assert reason(e) == "VoucherSpent"
    # a voucher for another executor
    with pytest.raises(ChainError) as e:
        w.nodes[1].market.settle_batch(v, tree)
    assert reason(e) == "BadSignature"
    # signed by someone who is not the client
    fake = sign_voucher(
        w.nodes[2].market.signer.private_key,
        w.chain.chain_id,
        w.market.address,
        node.address,
        h("j9"),
        9,
        1,
        10**6,
    )
    from dataclasses import replace

    with pytest.raises(ChainError) as e:
        node.market.settle_batch(replace(fake, client=w.client.account), tree)
    assert reason(e) == "BadSignature"


def test_shortfall_then_top_up(w):
    node = w.nodes[0]
    w.client.deposit(2000)
    v, tree, ev = _batch(w, node)
    assert (ev["amount"], ev["shortfall"]) == (2000, 1000)
    w.client.deposit(5000)
    ev2 = node.market.settle_batch(v, tree).event("BatchSettled")  # the same voucher pays the rest
    assert (ev2["amount"], ev2["shortfall"], ev2["count"]) == (1000, 0, 0)
    assert w.market.deposit_of(w.client.account)[0] == 4000


def test_challenge_voids_batch_and_slashes(w):
    node = w.nodes[0]
    w.client.deposit(ETH)
    _, tree, ev = _batch(w, node)
    bid = ev["batchId"]
    job_id = tree.results[1][0]
    # forged: an attestation by someone else, or of the same root
    with pytest.raises(ChainError) as e:
        w.other.challenge_batch(bid, tree, job_id, w.nodes[1].market.attest(job_id, h("other")))
    assert reason(e) == "NotEquivocation"
    with pytest.raises(ChainError) as e:
        w.other.challenge_batch(bid, tree, job_id, node.market.attest(job_id, tree.results[1][1]))
    assert reason(e) == "NotEquivocation"
    # a leaf that is not in the batch
    wrong = ResultsTree([(job_id, h("not the leaf")), (h("x"), h("y"))])
    with pytest.raises(ChainError) as e:
        w.other.challenge_batch(bid, wrong, job_id, node.market.attest(job_id, h("other")))
    assert reason(e) == "BadProof"
    # the executor told someone else another root for that job: the batch is void, the stake is slashed
    res = w.other.challenge_batch(bid, tree, job_id, node.market.attest(job_id, h("other")))
    assert res.event("BatchVoided")["batchId"] == bid
    assert res.event("Slashed")["amount"] == 2 * ETH
    assert w.market.batch(bid)["state"] == BATCH_VOIDED
    assert w.market.deposit_of(w.client.account)[0] == ETH  # the client got the batch back
    assert w.market.withdrawable(w.other.account) == ETH
    assert w.market.withdrawable(w.client.account) == ETH
    with pytest.raises(ChainError) as e:
        w.other.challenge_batch(bid, tree, job_id, node.market.attest(job_id, h("third")))
    assert reason(e) == "BatchNotPending"
    w.chain.advance(PARAMS.challenge_window + 1)
    with pytest.raises(ChainError) as e:
        w.other.finalize_batch(bid)
    assert reason(e) == "BatchNotPending"


def test_challenge_window_closes(w):
    node = w.nodes[0]
    w.client.deposit(ETH)
    _, tree, ev = _batch(w, node)
    w.chain.advance_to(ev["releaseAt"])
    job_id = tree.results[0][0]
    with pytest.raises(ChainError) as e:
        w.other.challenge_batch(ev["batchId"], tree, job_id, node.market.attest(job_id, h("other")))
    assert reason(e) == "ChallengeClosed"
    w.other.finalize_batch(ev["batchId"])
    with pytest.raises(ChainError) as e:
        w.other.finalize_batch(ev["batchId"])
    assert reason(e) == "BatchNotPending"
    assert w.market.node(node.index).completed == 3


def test_batch_locks_stake_until_paid(w):
    node = w.nodes[0]
    w.client.deposit(ETH)
    node.market.request_unbond()
    w.chain.advance(PARAMS.unbonding_delay - 10)
    _, _, ev = _batch(w, node)
    w.chain.advance_to(ev["releaseAt"] - 1)
    with pytest.raises(ChainError) as e:
        node.market.withdraw_stake()
    assert reason(e) == "StillBonded"
    w.chain.advance_to(ev["releaseAt"])
    node.market.withdraw_stake()


def test_job_states_after_failures(w):
    job_id, _ = w.post(k=1, q=1, ttl=200)
    w.chain.advance(300)
    w.other.finalize(job_id)
    assert w.client.job(job_id).state == STATE_FAILED


def test_front_run_partial_reveal_cannot_fail_the_aggregate(w):
    job_id, _ = w.post(k=3, q=2)
    openings = w.commit_all(job_id, [h("r")] * 3, 10)
    w.other.reveal(job_id, [openings[1]])  # someone reveals position 1 first
    res = w.nodes[0].market.reveal(job_id, openings)  # the aggregate still goes through
    assert [e["pos"] for e in res.all("Revealed")] == [0, 2]
    assert res.event("JobClosed")["agreeing"] == 3
