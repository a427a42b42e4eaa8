"""Sealed bundles, wrapped keys for executors, results sealed to the client's per-job key."""

from __future__ import annotations

import pytest

from sandrun_p2p.protocol.identity import NodeKey
from sandrun_p2p.store import DecryptionError, EmbeddedStore, cid_of_bytes
from sandrun_p2p.store.crypto import (
    new_bundle_key,
    open_bundle,
    open_sealed,
    plaintext_digest,
    seal_bundle,
    seal_to,
    unwrap_key,
    wrap_key,
    wrap_key_for,
    x25519_public,
)


def test_bundle_roundtrip_and_fresh_nonce() -> None:
    key = new_bundle_key()
    a = seal_bundle(b"code", key)
    b = seal_bundle(b"code", key)
    assert a != b  # random nonce: equal plaintexts do not give equal CIDs
    assert open_bundle(a, key) == open_bundle(b, key) == b"code"


def test_bundle_wrong_key_and_tampering() -> None:
    key = new_bundle_key()
    sealed = seal_bundle(b"secret code", key)
    with pytest.raises(DecryptionError, match="wrong bundle key"):
        open_bundle(sealed, new_bundle_key())
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(DecryptionError):
        open_bundle(bytes(tampered), key)
    with pytest.raises(DecryptionError):
        open_bundle(sealed[:-5], key)
    with pytest.raises(DecryptionError, match="not a sealed bundle"):
        open_bundle(b"plain text", key)
    with pytest.raises(ValueError):
        seal_bundle(b"x", b"short key")


def test_key_wrapping_for_accepted_executors_only() -> None:
    key = new_bundle_key()
    accepted = [NodeKey.generate() for _ in range(3)]
    outsider = NodeKey.generate()
    wrapped = wrap_key_for(key, [n.node_id for n in accepted])
    for n in accepted:
        assert unwrap_key(wrapped[n.node_id], n) == key
        assert unwrap_key(wrapped[n.node_id], n.seed) == key  # the seed works too
    with pytest.raises(DecryptionError, match="different node key"):
        unwrap_key(wrapped[accepted[0].node_id], outsider)
    with pytest.raises(DecryptionError):
        unwrap_key(wrapped[accepted[0].node_id], accepted[1])
    with pytest.raises(ValueError):
        wrap_key(key, b"\x01" * 31)


def test_x25519_conversion_matches_pynacl() -> None:
    from nacl.signing import SigningKey

    n = NodeKey.generate()
    sk = SigningKey(n.seed)
    assert x25519_public(n.node_id) == bytes(sk.verify_key.to_curve25519_public_key())
    assert bytes(sk.to_curve25519_private_key().public_key) == x25519_public(n.node_id)


def test_results_sealed_to_job_key() -> None:
    job = NodeKey.generate()  # the client's fresh per-job key
    out = seal_to(b"result tar", job.node_id)
    assert open_sealed(out, job) == b"result tar"
    with pytest.raises(DecryptionError, match="different key"):
        open_sealed(out, NodeKey.generate())
    with pytest.raises(DecryptionError):
        open_sealed(seal_bundle(b"x", new_bundle_key()), job)


async def test_cid_is_of_ciphertext_trace_of_plaintext(tmp_path) -> None:
    store = EmbeddedStore(tmp_path)
    plaintext = b"#!/usr/bin/env python3\nprint(42)\n" * 1000
    key = new_bundle_key()
    sealed = seal_bundle(plaintext, key)
    cid = await store.put_bytes(sealed)
    assert cid == cid_of_bytes(sealed) != cid_of_bytes(plaintext)
    executor = NodeKey.generate()
    wrapped = wrap_key(key, executor.node_id)
    got = open_bundle(await store.get(cid), unwrap_key(wrapped, executor))
    assert got == plaintext
    assert plaintext_digest(got) == __import__("hashlib").sha256(plaintext).digest()
