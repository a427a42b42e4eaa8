"""The Python halves of what the contract checks agree with the contract, byte for byte."""

from __future__ import annotations

import hashlib
import os

from chain_world import h

from sandrun_p2p.chain.crypto import (
    Attestation,
    ResultsTree,
    commitment,
    is_equivocation,
    recover,
    result_leaf,
    sign_attestation,
    verify_attestation,
    verify_proof,
)

KEY = bytes(range(1, 33))


def test_commitment_is_sha256_of_the_four_fields():
    j, n, r, s = (os.urandom(32) for _ in range(4))
    assert commitment(j, n, r, s) == hashlib.sha256(j + n + r + s).digest()


def test_digests_match_the_contract(w):
    m = w.market
    j, r = h("job"), h("root")
    assert m.attestation_digest(j, r) == bytes(m.contract.functions.attestationDigest(j, r).call())
    v = w.client.sign_voucher(w.nodes[0].address, j, 7, 100, 900)
    on_chain = m.contract.functions.voucherDigest(v.executor, j, 7, 100, 900).call()
    assert m.voucher_digest(v) == bytes(on_chain)
    assert v.is_valid(w.chain.chain_id, m.address)
    assert bytes(m.contract.functions.resultLeaf(j, r).call()) == result_leaf(j, r)


def test_attestations_and_equivocation():
    chain_id, contract = 31337, "0x" + "11" * 20
    a = sign_attestation(KEY, chain_id, contract, h("j"), h("A"))
    b = sign_attestation(KEY, chain_id, contract, h("j"), h("B"))
    signer = a.signer(chain_id, contract)
    assert signer is not None and verify_attestation(a, chain_id, contract, signer)
    assert is_equivocation(a, b, chain_id, contract) == signer
    assert is_equivocation(a, a, chain_id, contract) is None
    other = sign_attestation(bytes(range(2, 34)), chain_id, contract, h("j"), h("B"))
    assert is_equivocation(a, other, chain_id, contract) is None
    # tampered or foreign-domain attestations do not verify as the signer
    assert not verify_attestation(Attestation(h("j"), h("C"), a.signature), chain_id, contract, signer)
    assert not verify_attestation(a, chain_id + 1, contract, signer)
    assert recover(b"\x00" * 32, b"\x00" * 65) is None


def test_results_tree_proofs():
    for n in (1, 2, 3, 7, 100):
        results = [(h(f"j{i}"), h(f"r{i}")) for i in range(n)]
        tree = ResultsTree(results)
        for i in {0, n // 2, n - 1}:
            assert verify_proof(tree.proof(i), tree.root, result_leaf(*results[i]))
        assert not verify_proof(tree.proof(0), tree.root, result_leaf(results[0][0], h("other")))


def test_contract_verifies_python_proofs(w):
    """A challenge goes through exactly when the Python proof is right (BadProof otherwise)."""
    import pytest

    from sandrun_p2p.chain.errors import ChainError

    node = w.nodes[3]
    w.client.deposit(10**18)
    results = [(h(f"j{i}"), h(f"r{i}")) for i in range(13)]
    tree = ResultsTree(results)
    v = w.client.sign_voucher(node.address, results[-1][0], 13, 1, 13)
    bid = node.market.settle_batch(v, tree).event("BatchSettled")["batchId"]
    att = node.market.attest(results[12][0], h("x"))
    bad = ResultsTree(results[:12] + [(results[12][0], h("not r12"))])
    with pytest.raises(ChainError) as e:
        w.other.challenge_batch(bid, bad, results[12][0], att)
    assert e.value.reason == "BadProof"
    assert w.other.challenge_batch(bid, tree, results[12][0], att).event("BatchVoided")["batchId"] == bid
