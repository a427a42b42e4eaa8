"""Canonical CBOR (RFC 8949 section 4.2 deterministic encoding) and domain-separated hashing."""

from __future__ import annotations

import hashlib
from typing import Any

import cbor2

from .errors import ProtocolError

#: Hard cap on one encoded protocol message (the gossip payload).
MAX_MESSAGE_BYTES = 64 * 1024
#: Deepest nesting accepted in a decoded document.
MAX_DEPTH = 8


class Encoded:
    """A value already in deterministic CBOR (``canonical(value)``), embedded as is by :func:`canonical`: a part
    shared by many documents (a job kind's manifest) is encoded once, not once per document."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw


def _embed(encoder: cbor2.CBOREncoder, value: Any) -> None:
    if type(value) is not Encoded:
        raise cbor2.CBOREncodeTypeError(f"cannot serialize type {type(value).__name__}")
    encoder.write(value.raw)


def canonical(obj: Any) -> bytes:
    """Encode ``obj`` as deterministic CBOR: same value, same bytes, on every node."""
    return cbor2.dumps(obj, canonical=True, default=_embed)


def sha256(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


def tagged_hash(domain: str, obj: Any) -> bytes:
    """SHA-256 of a domain tag and the canonical encoding of ``obj`` (no cross-type collisions)."""
    return sha256(b"sandrun-p2p/" + domain.encode() + b"\x00", canonical(obj))


def _check_plain(obj: Any, depth: int = 0) -> None:
    """Only plain CBOR types (no tags, no floats with NaN, no undefined) may appear in messages."""
    if depth > MAX_DEPTH:
        raise ProtocolError("malformed", "nested too deeply")
    if obj is None or isinstance(obj, bool | int | str | bytes):
        return
    if isinstance(obj, float):
        if obj != obj or obj in (float("inf"), float("-inf")):
            raise ProtocolError("malformed", "non-finite float")
        return
    if isinstance(obj, list):
        for x in obj:
            _check_plain(x, depth + 1)
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ProtocolError("malformed", "map keys must be text")
            _check_plain(v, depth + 1)
        return
    raise ProtocolError("malformed", f"type {type(obj).__name__} not allowed")


def decode_canonical(data: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> Any:
    """Decode CBOR that must be plain and canonical; anything else raises :class:`ProtocolError`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError("malformed", "expected bytes")
    data = bytes(data)
    if len(data) > max_bytes:
        raise ProtocolError("oversized", f"{len(data)} bytes > cap {max_bytes}")
    if not data:
        raise ProtocolError("malformed", "empty")
    try:
        obj = cbor2.loads(data)
    except Exception as e:  # cbor2 raises many types on garbage; fold them into one
        raise ProtocolError("malformed", f"not CBOR ({type(e).__name__})") from None
    _check_plain(obj)
    try:
        again = canonical(obj)
    except Exception:
        raise ProtocolError("malformed", "not re-encodable") from None
    if again != data:
        raise ProtocolError("non-canonical", "encoding is not deterministic CBOR")
    return obj
