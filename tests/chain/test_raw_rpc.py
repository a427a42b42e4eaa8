"""Transactions on a chain behind a URL go out as plain JSON-RPC (estimate, send, receipt), not through web3's
method machinery: the same receipts as web3 gives, the same errors for reverts, refused nonces and timeouts."""

from __future__ import annotations

import pytest
from chain_world import ETH, PARAMS, ensure_contract_packages, h

from sandrun_p2p.chain.anvil import Anvil, find_anvil
from sandrun_p2p.chain.chain import Chain
from sandrun_p2p.chain.deployment import deploy
from sandrun_p2p.chain.errors import ChainError

pytestmark = pytest.mark.anvil


@pytest.fixture(scope="module")
def anvil():
    if find_anvil() is None:
        why = ensure_contract_packages()
        if find_anvil() is None:
            pytest.skip(f"anvil is not installed (`npm ci` in contracts/ installs it): {why}")
    with Anvil() as a:
        yield a


@pytest.fixture
def chain(anvil):
    c = Chain.connect(anvil.url, kind="anvil")
    snap = c.snapshot()
    try:
        yield c
    finally:
        c.revert(snap)


def _without_web3_methods(chain: Chain, monkeypatch) -> None:
    """Make web3's transaction methods fail: what passes did not use them."""

    def refuse(*_a, **_k):
        raise AssertionError("web3's method machinery was used for a transaction")

    for name in (
        "estimate_gas",
        "send_raw_transaction",
        "wait_for_transaction_receipt",
        "get_transaction_receipt",
    ):
        monkeypatch.setattr(type(chain.w3.eth), name, refuse)


def test_a_transaction_and_its_receipt_as_web3_gives_them(chain, monkeypatch) -> None:
    dev = chain.dev_signers()
    market = deploy(chain, dev[0], PARAMS).market(chain, dev[1])
    _without_web3_methods(chain, monkeypatch)
    res = market.post_job(h("raw-1"), 1, 1, chain.now() + 100, ETH)
    assert [e.name for e in res.events] == ["JobPosted"] and res.events[0].args["jobId"] == h("raw-1")
    monkeypatch.undo()
    want = chain.w3.eth.get_transaction_receipt(res.tx_hash)
    for key in ("status", "gasUsed", "blockNumber", "effectiveGasPrice", "transactionHash", "from", "to"):
        assert res.receipt[key] == want[key], key
    assert market.job(h("raw-1")).escrow == ETH


def test_a_revert_in_the_estimate_names_the_contract_error_and_hands_the_nonce_back(
    chain, monkeypatch
) -> None:
    dev = chain.dev_signers()
    market = deploy(chain, dev[0], PARAMS).market(chain, dev[1])
    market.post_job(h("raw-2"), 1, 1, chain.now() + 100, ETH)
    _without_web3_methods(chain, monkeypatch)
    with pytest.raises(ChainError) as e:
        market.post_job(h("raw-2"), 1, 1, chain.now() + 100, ETH)
    assert e.value.reason == "JobExists" and e.value.method == "postJob"
    market.post_job(h("raw-3"), 1, 1, chain.now() + 100, ETH)  # the nonce was not used up


def test_a_refused_nonce_resynchronises_and_an_unknown_hash_times_out(chain) -> None:
    dev = chain.dev_signers()
    market = deploy(chain, dev[0], PARAMS).market(chain, dev[1])
    market.post_job(h("raw-4"), 1, 1, chain.now() + 100, ETH)
    chain._nonces[dev[1].address] -= 1  # as if this client had lost count
    with pytest.raises(ChainError) as e:
        market.post_job(h("raw-5"), 1, 1, chain.now() + 100, ETH)
    assert e.value.reason == "nonce"
    market.post_job(h("raw-5"), 1, 1, chain.now() + 100, ETH)  # read again from the node, and sent
    chain.receipt_timeout = 0.05
    with pytest.raises(ChainError) as e:
        chain.wait("0x" + h("never sent").hex(), "postJob")
    assert e.value.reason == "timeout" and e.value.method == "postJob"


def test_a_receipt_query_the_node_refuses_is_a_chain_error_naming_the_transaction(chain, monkeypatch) -> None:
    real = chain.w3.provider.make_request

    def refusing(method, params):
        if method == "eth_getTransactionReceipt":
            return {"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "header not found"}}
        return real(method, params)

    monkeypatch.setattr(chain.w3.provider, "make_request", refusing)
    tx = "0x" + h("some tx").hex()
    with pytest.raises(ChainError) as e:
        chain.wait(tx, "postJob")
    assert e.value.reason == "rpc" and "header not found" in str(e.value) and e.value.tx_hash == tx
