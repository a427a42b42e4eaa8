"""Transactions reuse the fee fields for ``fee_ttl_s`` (two reads fewer per transaction) and are still mined."""

from __future__ import annotations

import pytest

from sandrun_p2p.chain.chain import Chain


def counting(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    reads: list[dict] = []
    real = chain._read_fees

    def read() -> dict:
        reads.append(real())
        return reads[-1]

    monkeypatch.setattr(chain, "_read_fees", read)
    return reads


def test_fees_are_read_once_per_ttl_and_after_a_revert(w, monkeypatch: pytest.MonkeyPatch) -> None:
    chain = w.chain
    reads = counting(chain, monkeypatch)
    monkeypatch.setattr(chain, "fee_ttl_s", 60.0)
    chain._fee_cache = None
    a, b = chain.dev_signers()[:2]
    for _ in range(3):
        assert chain.transfer(a, b.address, 1)["status"] == 1
    assert len(reads) == 1
    fees = chain._fees()
    assert len(reads) == 1 and fees == reads[0]
    fees["maxFeePerGas"] = 0  # a caller's copy: the cache is not changed through it
    assert chain._fees() == reads[0]
    chain.revert(chain.snapshot())  # an earlier state may have had another base fee
    chain._fees()
    assert len(reads) == 2


def test_zero_ttl_reads_fees_for_every_transaction(w, monkeypatch: pytest.MonkeyPatch) -> None:
    chain = w.chain
    reads = counting(chain, monkeypatch)
    monkeypatch.setattr(chain, "fee_ttl_s", 0.0)
    a, b = chain.dev_signers()[:2]
    for _ in range(2):
        chain.transfer(a, b.address, 1)
    assert len(reads) == 2
