"""Encrypted job storage (pure functions over bytes, pynacl).

Flow::

    client:   key = new_bundle_key()
              sealed = seal_bundle(tar_bytes, key)              # XSalsa20-Poly1305 (SecretBox)
              cid = await store.put_bytes(sealed)                # the CID is of the ciphertext
              digest = plaintext_digest(tar_bytes)               # the trace hashes the plaintext
              for each accepted executor:
                  wrapped = wrap_key(key, executor_node_id)      # SealedBox to the X25519 form of its Ed25519 id
    executor: key = unwrap_key(wrapped, node_key)                # NodeKey (or its 32-byte seed)
              tar_bytes = open_bundle(await store.get(cid), key)
              ...
              out = seal_to(result_bytes, job_public_key)        # results: SealedBox to the client's per-job key
    client:   result_bytes = open_sealed(out, job_key)

Ed25519 keys are converted with libsodium's birational map (``crypto_sign_ed25519_pk_to_curve25519``),
so no extra key has to be published. Everything that cannot be opened raises :class:`DecryptionError`
with a sentence saying which key was wrong; malformed keys raise ``ValueError``.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import nacl.exceptions
import nacl.utils
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.secret import SecretBox
from nacl.signing import SigningKey, VerifyKey

from .errors import DecryptionError

KEY_BYTES = SecretBox.KEY_SIZE  # 32
#: Prefixes of our ciphertexts: a version byte each, so a format change is detectable.
BUNDLE_MAGIC = b"SPB\x01"  # SecretBox-sealed bundle
SEALED_MAGIC = b"SPS\x01"  # SealedBox to a recipient's key
WRAPPED_MAGIC = b"SPK\x01"  # a wrapped bundle key


class _HasSeed(Protocol):
    seed: bytes


def new_bundle_key() -> bytes:
    """A fresh random 32-byte symmetric key."""
    return nacl.utils.random(KEY_BYTES)


def plaintext_digest(data: bytes) -> bytes:
    """SHA-256 of the plaintext: what traces and job specs commit to (the CID covers the ciphertext)."""
    return hashlib.sha256(data).digest()


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
        raise ValueError(f"a bundle key is {KEY_BYTES} bytes")
    return bytes(key)


def seal_bundle(plaintext: bytes, key: bytes) -> bytes:
    """Encrypt and authenticate ``plaintext`` with ``key`` (random nonce inside)."""
    return BUNDLE_MAGIC + bytes(SecretBox(_check_key(key)).encrypt(bytes(plaintext)))


def open_bundle(ciphertext: bytes, key: bytes) -> bytes:
    """Inverse of :func:`seal_bundle`; :class:`DecryptionError` for a wrong key or altered bytes."""
    box = SecretBox(_check_key(key))
    if not ciphertext.startswith(BUNDLE_MAGIC):
        raise DecryptionError("not a sealed bundle (missing the sandrun-p2p bundle header)")
    try:
        return box.decrypt(bytes(ciphertext[len(BUNDLE_MAGIC) :]))
    except nacl.exceptions.CryptoError:
        raise DecryptionError(
            "cannot open the bundle: wrong bundle key, or the ciphertext was altered or truncated"
        ) from None


def _x25519_public(ed25519_public: bytes | PublicKey) -> PublicKey:
    if isinstance(ed25519_public, PublicKey):
        return ed25519_public
    if not isinstance(ed25519_public, bytes | bytearray) or len(ed25519_public) != 32:
        raise ValueError("an Ed25519 public key (node id / job key) is 32 bytes")
    try:
        return VerifyKey(bytes(ed25519_public)).to_curve25519_public_key()
    except (nacl.exceptions.CryptoError, RuntimeError, ValueError):
        raise ValueError("not a valid Ed25519 public key") from None


def _x25519_private(secret: _HasSeed | bytes | PrivateKey) -> PrivateKey:
    if isinstance(secret, PrivateKey):
        return secret
    seed = secret if isinstance(secret, bytes | bytearray) else secret.seed
    if len(seed) != 32:
        raise ValueError("an Ed25519 seed is 32 bytes")
    return SigningKey(bytes(seed)).to_curve25519_private_key()


def x25519_public(ed25519_public: bytes) -> bytes:
    """The X25519 public key that belongs to an Ed25519 public key (raw 32 bytes)."""
    return bytes(_x25519_public(ed25519_public))


def wrap_key(key: bytes, recipient_node_id: bytes) -> bytes:
    """Encrypt a bundle key to one executor, addressed by its Ed25519 node id (anonymous sender)."""
    return WRAPPED_MAGIC + SealedBox(_x25519_public(recipient_node_id)).encrypt(_check_key(key))


def wrap_key_for(key: bytes, node_ids: list[bytes] | tuple[bytes, ...] | set[bytes]) -> dict[bytes, bytes]:
    """``{node_id: wrapped key}`` for every accepted executor."""
    return {bytes(n): wrap_key(key, n) for n in node_ids}


def unwrap_key(wrapped: bytes, node_key: _HasSeed | bytes | PrivateKey) -> bytes:
    """Open a wrapped bundle key with the executor's node key (``NodeKey``, its seed, or an X25519 key)."""
    if not wrapped.startswith(WRAPPED_MAGIC):
        raise DecryptionError("not a wrapped bundle key (missing the sandrun-p2p key header)")
    try:
        key = SealedBox(_x25519_private(node_key)).decrypt(bytes(wrapped[len(WRAPPED_MAGIC) :]))
    except nacl.exceptions.CryptoError:
        raise DecryptionError(
            "cannot unwrap the bundle key: it was wrapped for a different node key, or altered"
        ) from None
    if len(key) != KEY_BYTES:
        raise DecryptionError("the unwrapped bundle key has the wrong length")
    return key


def seal_to(plaintext: bytes, recipient_public: bytes | PublicKey) -> bytes:
    """Encrypt to a recipient's key: an Ed25519 public key (32 bytes, e.g. the client's per-job key)
    or a :class:`nacl.public.PublicKey` (X25519). Only the holder of the private key can open it."""
    return SEALED_MAGIC + SealedBox(_x25519_public(recipient_public)).encrypt(bytes(plaintext))


def open_sealed(ciphertext: bytes, recipient_secret: _HasSeed | bytes | PrivateKey) -> bytes:
    """Inverse of :func:`seal_to`, with the recipient's Ed25519 seed / ``NodeKey`` or X25519 ``PrivateKey``."""
    if not ciphertext.startswith(SEALED_MAGIC):
        raise DecryptionError("not a sealed result (missing the sandrun-p2p sealed header)")
    try:
        return SealedBox(_x25519_private(recipient_secret)).decrypt(bytes(ciphertext[len(SEALED_MAGIC) :]))
    except nacl.exceptions.CryptoError:
        raise DecryptionError(
            "cannot open the sealed result: it was sealed to a different key, or altered or truncated"
        ) from None
