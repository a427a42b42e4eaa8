"""Escrow on a real EVM (embedded py-evm): a fresh address per job, funded by the wallet; refunds back."""

from __future__ import annotations

import pytest

from sandrun_p2p.client.errors import FundingError, NotYet
from sandrun_p2p.client.escrow import ChainOptions, Escrow
from sandrun_p2p.protocol.jobspec import JobSpec

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def escrow():
    from sandrun_p2p.chain.chain import Chain
    from sandrun_p2p.chain.market import Market

    chain = Chain.embedded()
    market = Market.deploy(chain, chain.dev_signers()[0])
    return Escrow(ChainOptions(rpc=None, market=market.address, kind="embedded"), chain=chain)


def job(nonce: int, deadline: int) -> JobSpec:
    return JobSpec.from_dict(
        {
            "code_cid": "bafkreiabcdefgh",
            "manifest": {"entrypoint": "main.py"},
            "deadline": deadline,
            "nonce": nonce.to_bytes(4, "big"),
            "payment_wei": 10**15,
        }
    )


def test_each_job_is_escrowed_from_a_fresh_address(escrow: Escrow) -> None:
    from sandrun_p2p.chain.chain import Signer

    funder = escrow.funder()
    before = escrow.chain.balance(funder.address)
    senders = []
    for i in range(2):
        spec = job(i, escrow.now() + 600)
        key = Signer.generate()
        out = escrow.post(key.private_key.hex(), spec.job_id, 1, 1, spec.deadline, spec.payment_wei)
        info = escrow.job(spec.job_id)
        assert info.client == key.address == out["address"] != funder.address
        assert info.escrow == spec.payment_wei and info.state_name == "open"
        assert len(out["seed"]) == 16
        senders.append(info.client)
    assert len(set(senders)) == 2
    assert escrow.chain.balance(funder.address) < before - 2 * 10**15


def test_failed_job_is_refunded_to_the_wallet(escrow: Escrow) -> None:
    from sandrun_p2p.chain.chain import Signer

    spec = job(99, escrow.now() + 600)
    key = Signer.generate()
    escrow.post(key.private_key.hex(), spec.job_id, 1, 1, spec.deadline, spec.payment_wei)
    funder = escrow.funder().address
    with pytest.raises(NotYet, match="still open on chain"):
        escrow.refund(spec.job_id, key.private_key.hex(), funder, network_failed=False)
    before = escrow.chain.balance(funder)
    out = escrow.refund(spec.job_id, key.private_key.hex(), funder, network_failed=True)
    assert out["refunded_wei"] == spec.payment_wei
    assert [t["kind"] for t in out["txs"]] == ["cancelJob", "claimRefund"]
    assert escrow.chain.balance(funder) == before + spec.payment_wei
    again = escrow.refund(spec.job_id, key.private_key.hex(), funder, network_failed=True)
    assert again["refunded_wei"] == 0
    closed = escrow.closed(spec.job_id)
    assert closed["state"] == "failed" and closed["refunds"] == [{"to": funder, "wei": spec.payment_wei}]


def test_wallet_too_poor_is_refused_before_posting(escrow: Escrow, monkeypatch: pytest.MonkeyPatch) -> None:
    from sandrun_p2p.chain.chain import Signer

    poor = Signer.generate()
    monkeypatch.setenv("SANDRUN_P2P_CLIENT_KEY", poor.private_key.hex())
    e = Escrow(escrow.opts, chain=escrow.chain)
    spec = job(7, escrow.now() + 600)
    with pytest.raises(FundingError, match="Top it up"):
        e.post(Signer.generate().private_key.hex(), spec.job_id, 1, 1, spec.deadline, spec.payment_wei)
    with pytest.raises(Exception, match="NoSuchJob"):
        escrow.market().job(spec.job_id)
