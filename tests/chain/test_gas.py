"""Gas limits of reveals: a reveal estimated before another one lands still settles the job.

A reveal's gas is estimated on the latest block. When another executor's reveal is mined between that estimate
and this transaction, this one becomes the reveal that opens the last position and settles the job, which costs
two to three times as much: anvil then reverted it with ``ReentrancySentryOOG`` (k = 2) or ``OutOfGas``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from chain_world import ETH, World, ensure_contract_packages, h

from sandrun_p2p.chain.anvil import Anvil, find_anvil
from sandrun_p2p.chain.chain import Chain
from sandrun_p2p.chain.errors import ChainError
from sandrun_p2p.chain.market import SETTLEMENT_GAS, STATE_SETTLED, Market, Opening

USAGE = ETH // 8


@pytest.fixture(scope="module")
def anvil_world() -> Iterator[World]:
    if find_anvil() is None:
        why = ensure_contract_packages()
        if find_anvil() is None:
            pytest.skip(f"anvil is not installed (`npm ci` in contracts/ installs it): {why}")
    with Anvil() as anvil:
        yield World(Chain.connect(anvil.url, kind="anvil"))


@pytest.fixture(params=["embedded", pytest.param("anvil", marks=pytest.mark.anvil)])
def any_w(request, world: World) -> Iterator[World]:
    """The embedded session world or a world on anvil, rolled back after the test."""
    wld = world if request.param == "embedded" else request.getfixturevalue("anvil_world")
    snap = wld.chain.snapshot()
    try:
        yield wld
    finally:
        wld.chain.revert(snap)


def committed_job(w: World, k: int, dissenters: int) -> tuple[bytes, list[Opening]]:
    """A job with k commitments, the first ``dissenters`` of them to a wrong root (q = k // 2 + 1)."""
    job_id, _ = w.post(k=k)
    roots = [h(f"wrong-{i}") if i < dissenters else h("right") for i in range(k)]
    return job_id, w.commit_all(job_id, roots, USAGE)


def land_after_estimate(monkeypatch: pytest.MonkeyPatch, chain: Chain, land: Callable[[], object]) -> None:
    """Run ``land`` (another node's transaction) right after the next estimate: the race seen in testnets."""
    pending = [land]
    estimate = chain.estimate

    def estimate_then_land(tx: dict, method: str | None = None) -> int:
        est = estimate(tx, method)
        if pending:
            pending.pop()()
        return est

    monkeypatch.setattr(chain, "estimate", estimate_then_land)


def estimate_reveal(w: World, market: Market, job_id: bytes, openings: list[Opening]) -> int:
    fn = market.contract.functions.reveal(job_id, [o.as_tuple() for o in openings])
    tx = {"to": market.address, "data": fn._encode_transaction_data(), "from": market.account, "value": 0}
    return w.chain.estimate(tx, "reveal")


@pytest.mark.parametrize("k", [2, 5])
def test_reveal_overtaken_by_another_settles_the_job(any_w: World, monkeypatch, k):
    w = any_w
    job_id, ops = committed_job(w, k, dissenters=1 if k == 5 else 0)
    for pos in range(k - 2):
        w.nodes[pos].market.reveal(job_id, [ops[pos]])
    late, last = w.nodes[k - 2], w.nodes[k - 1]
    land_after_estimate(monkeypatch, w.chain, lambda: late.market.reveal(job_id, [ops[k - 2]]))
    res = last.market.reveal(job_id, [ops[k - 1]])
    closed = res.event("JobClosed")
    assert closed["state"] == STATE_SETTLED
    assert w.market.job(job_id).state_name == "settled"


def test_reveal_without_settlement_headroom_ran_out_of_gas(any_w: World, monkeypatch):
    """The policy before SETTLEMENT_GAS (estimate x margin + 10,000) fails in the same race."""
    w = any_w
    job_id, ops = committed_job(w, 2, dissenters=0)
    late, last = w.nodes[0], w.nodes[1]
    land_after_estimate(monkeypatch, w.chain, lambda: late.market.reveal(job_id, [ops[0]]))
    with pytest.raises(ChainError):
        last.market._tx("reveal", job_id, [ops[1].as_tuple()])
    assert w.market.job(job_id).state_name == "open"


def test_settlement_gas_covers_the_costliest_settlement(w: World):
    """SETTLEMENT_GAS bounds what settling adds to the cheapest reveal: k = 5 with two dissenters slashed,
    all five openings in the settling transaction, against a one-opening reveal that does not settle."""
    job_id, ops = committed_job(w, 5, dissenters=2)
    opener = w.nodes[0].market
    cheapest = estimate_reveal(w, opener, job_id, ops[:1])
    costliest = estimate_reveal(w, opener, job_id, ops)
    assert costliest - cheapest <= SETTLEMENT_GAS
    assert costliest - cheapest > SETTLEMENT_GAS * 0.8  # the constant is a measured bound, not a guess
