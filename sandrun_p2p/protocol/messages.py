"""Wire format: typed, versioned, signed protocol messages in canonical CBOR.

Envelope (a CBOR map, canonical encoding)::

    {"v": 1, "t": kind, "from": node_id(32), "seq": uint, "ts": unix_ms, "body": {...}, "sig": ed25519(64)}

The signature covers ``SIGN_DOMAIN || canonical(envelope without "sig")``. :func:`decode`
turns any input into a :class:`Message` or raises :class:`ProtocolError` with a reason:
malformed, oversized, non-canonical, unknown kind or field, wrong type, bad version, bad
signature; with a :class:`ReplayGuard` also stale or replayed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .encoding import MAX_MESSAGE_BYTES, canonical, decode_canonical
from .errors import ProtocolError
from .identity import NODE_ID_LEN, SIG_LEN, NodeKey, verify

VERSION = 1
SIGN_DOMAIN = b"sandrun-p2p/msg/v1\x00"
MAX_SEQ = 2**63 - 1

ADVERT = "advert"
JOB = "job"
CLAIM = "claim"
RELEASE = "release"
COMMIT = "commit"
REVEAL = "reveal"
CHECKPOINT = "checkpoint"
EVIDENCE = "evidence"
GRANT = "grant"

Validator = Callable[[Any, str], None]


def _bytes(n: int | tuple[int, int]) -> Validator:
    lo, hi = (n, n) if isinstance(n, int) else n

    def check(v: Any, name: str) -> None:
        if not isinstance(v, bytes) or not lo <= len(v) <= hi:
            want = f"{lo}" if lo == hi else f"{lo}..{hi}"
            raise ProtocolError("bad-field", f"{name} must be {want} bytes")

    return check


def _int(lo: int, hi: int) -> Validator:
    def check(v: Any, name: str) -> None:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ProtocolError("bad-field", f"{name} must be an integer in [{lo}, {hi}]")

    return check


def _str(max_len: int) -> Validator:
    def check(v: Any, name: str) -> None:
        if not isinstance(v, str) or len(v) > max_len:
            raise ProtocolError("bad-field", f"{name} must be text of at most {max_len} characters")

    return check


def _map(fields: dict[str, Validator], optional: frozenset[str] = frozenset()) -> Validator:
    def check(v: Any, name: str) -> None:
        if not isinstance(v, dict):
            raise ProtocolError("bad-field", f"{name} must be a map")
        extra = set(v) - set(fields)
        if extra:
            raise ProtocolError("unknown-field", f"{name} has unknown field(s) {sorted(extra)}")
        for key, sub in fields.items():
            if key not in v:
                if key in optional:
                    continue
                raise ProtocolError("missing-field", f"{name}.{key} is missing")
            sub(v[key], f"{name}.{key}")

    return check


def _list(item: Validator, max_items: int) -> Validator:
    def check(v: Any, name: str) -> None:
        if not isinstance(v, list) or len(v) > max_items:
            raise ProtocolError("bad-field", f"{name} must be a list of at most {max_items} items")
        for i, x in enumerate(v):
            item(x, f"{name}[{i}]")

    return check


def _tuple(*items: Validator) -> Validator:
    def check(v: Any, name: str) -> None:
        if not isinstance(v, list) or len(v) != len(items):
            raise ProtocolError("bad-field", f"{name} must be a list of {len(items)} items")
        for i, (x, sub) in enumerate(zip(v, items, strict=True)):
            sub(x, f"{name}[{i}]")

    return check


def _any_map(max_keys: int) -> Validator:
    """A map checked later by a richer parser (e.g. JobSpec.from_dict)."""

    def check(v: Any, name: str) -> None:
        if not isinstance(v, dict) or len(v) > max_keys:
            raise ProtocolError("bad-field", f"{name} must be a map of at most {max_keys} keys")

    return check


def _bool(v: Any, name: str) -> None:
    if not isinstance(v, bool):
        raise ProtocolError("bad-field", f"{name} must be a boolean")


H32 = _bytes(32)
CID = _str(128)
U32 = _int(0, 2**32 - 1)

GPU = _map({"model": _str(64), "vram_mb": U32, "cc": _str(8), "cuda": _str(8)})
CAPS = _map(
    {
        "cpus": _int(1, 4096),
        "mem_mb": U32,
        "disk_mb": U32,
        "gpus": _list(GPU, 16),
        "enforced": _list(_str(32), 32),
        "executor": _str(32),
        "max_jobs": _int(0, 4096),
    }
)

#: Body schema of each message kind.
SCHEMAS: dict[str, Validator] = {
    ADVERT: _map(
        {
            "caps": CAPS,
            "shard_bits": _int(0, 16),
            "shards": _list(_int(0, 2**16 - 1), 1024),
            "eth": _bytes((0, 20)),
            "interval": _int(1, 86400),
            "load": _int(0, 4096),
        }
    ),
    JOB: _map({"spec": _any_map(16), "seed": H32, "origin_ts": _int(0, 2**53)}),
    CLAIM: _map({"job": H32, "caps": CAPS}),
    RELEASE: _map({"job": H32, "reason": _str(200)}),
    COMMIT: _map({"job": H32, "commitment": H32}),
    REVEAL: _map(
        {"job": H32, "root": H32, "salt": H32, "trace_cid": CID, "result_cid": CID, "attest": _bytes(65)},
        optional=frozenset({"attest"}),  # the executor's chain attestation of root (equivocation evidence)
    ),
    CHECKPOINT: _map({"job": H32, "index": U32, "cid": CID, "link": H32}),
    EVIDENCE: _map(
        {
            "kind": _str(32),
            "job": H32,
            "accused": _bytes(NODE_ID_LEN),
            "items": _list(_bytes((1, 16 * 1024)), 4),
            "root": _bytes((0, 32)),
        }
    ),
    GRANT: _map({"job": H32, "grants": _list(_tuple(_bytes(NODE_ID_LEN), _bytes((1, 128))), 8)}),
}

ENVELOPE = _map(
    {
        "v": _int(0, 255),
        "t": _str(16),
        "from": _bytes(NODE_ID_LEN),
        "seq": _int(0, MAX_SEQ),
        "ts": _int(0, 2**53),
        "body": _any_map(32),
        "sig": _bytes(SIG_LEN),
    }
)


@dataclass(frozen=True)
class Message:
    """A decoded, signature-checked protocol message."""

    kind: str
    sender: bytes
    seq: int
    ts_ms: int
    body: dict[str, Any]
    raw: bytes = field(default=b"", compare=False, repr=False)

    @property
    def job(self) -> bytes | None:
        return self.body.get("job")


def signing_bytes(kind: str, sender: bytes, seq: int, ts_ms: int, body: dict[str, Any]) -> bytes:
    env = {"v": VERSION, "t": kind, "from": sender, "seq": seq, "ts": ts_ms, "body": body}
    return SIGN_DOMAIN + canonical(env)


def validate_body(kind: str, body: Any) -> None:
    schema = SCHEMAS.get(kind)
    if schema is None:
        raise ProtocolError("unknown-kind", f"message kind {kind!r} is not known")
    schema(body, kind)


def encode(key: NodeKey, kind: str, body: dict[str, Any], seq: int, ts_ms: int) -> bytes:
    """Sign and encode a message. Raises ProtocolError if the body is invalid or too large."""
    validate_body(kind, body)
    sender = key.node_id
    sig = key.sign(signing_bytes(kind, sender, seq, ts_ms, body))
    data = canonical(
        {"v": VERSION, "t": kind, "from": sender, "seq": seq, "ts": ts_ms, "body": body, "sig": sig}
    )
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError("oversized", f"{kind} message is {len(data)} bytes > cap {MAX_MESSAGE_BYTES}")
    return data


def decode(
    data: bytes, guard: ReplayGuard | None = None, now: float | None = None, *, check_sig: bool = True
) -> Message:
    """Parse and verify one message; with ``guard`` and ``now`` also reject stale and replayed ones."""
    env = decode_canonical(data, MAX_MESSAGE_BYTES)
    ENVELOPE(env, "envelope")
    if env["v"] != VERSION:
        raise ProtocolError("bad-version", f"version {env['v']} not supported (this node speaks {VERSION})")
    kind = env["t"]
    validate_body(kind, env["body"])
    if check_sig and not verify(
        env["from"], signing_bytes(kind, env["from"], env["seq"], env["ts"], env["body"]), env["sig"]
    ):
        raise ProtocolError("bad-signature", f"{kind} message signature does not verify for its sender")
    msg = Message(kind, env["from"], env["seq"], env["ts"], env["body"], bytes(data))
    if guard is not None:
        if now is None:
            raise ValueError("a ReplayGuard needs the current time")
        guard.check(msg, now)
    return msg


class ReplayGuard:
    """Rejects replays (a (sender, seq) seen before) and stale messages (timestamp outside the window).

    Gossip may deliver one sender's messages out of order, so sequence numbers are not required
    to increase; each (sender, seq) is accepted once within ``window_s``, and anything older than
    the window (or further than ``skew_s`` in the future) is stale. Memory is bounded by pruning
    entries older than the window.
    """

    def __init__(self, window_s: float = 300.0, skew_s: float = 30.0, max_entries: int = 1_000_000) -> None:
        self.window_ms = int(window_s * 1000)
        self.skew_ms = int(skew_s * 1000)
        self.max_entries = max_entries
        self._seen: dict[tuple[bytes, int], int] = {}
        self._last_prune = 0

    def check(self, msg: Message, now: float) -> None:
        now_ms = int(now * 1000)
        if msg.ts_ms < now_ms - self.window_ms:
            raise ProtocolError(
                "stale",
                f"message is {(now_ms - msg.ts_ms) / 1000:.0f}s old (window {self.window_ms // 1000}s)",
            )
        if msg.ts_ms > now_ms + self.skew_ms:
            raise ProtocolError("stale", f"message is dated {(msg.ts_ms - now_ms) / 1000:.0f}s in the future")
        key = (msg.sender, msg.seq)
        if key in self._seen:
            raise ProtocolError("replayed", f"seq {msg.seq} from this sender was already accepted")
        self._prune(now_ms)
        if len(self._seen) >= self.max_entries:
            raise ProtocolError("overloaded", "replay cache full")
        self._seen[key] = msg.ts_ms

    def _prune(self, now_ms: int) -> None:
        if now_ms - self._last_prune < self.window_ms // 10 and len(self._seen) < self.max_entries:
            return
        self._last_prune = now_ms
        cutoff = now_ms - self.window_ms
        self._seen = {k: ts for k, ts in self._seen.items() if ts >= cutoff}
