"""Wire format: typed, versioned, signed protocol messages in canonical CBOR.

Envelope (a CBOR map, canonical encoding)::

    {"v": 1, "t": kind, "from": node_id(32), "seq": uint, "ts": unix_ms, "body": {...}, "sig": ed25519(64)}

The signature covers ``SIGN_DOMAIN || canonical(envelope without "sig")``. :func:`decode`
turns any input into a :class:`Message` or raises :class:`ProtocolError` with a reason:
malformed, oversized, non-canonical, unknown kind or field, wrong type, bad version, bad
signature; with a :class:`ReplayGuard` also stale or replayed.

Batch (a gossip payload carrying several messages of one sender)::

    {"v": 1, "t": "batch", "items": [message bytes, ...]}

Each item is a complete signed message as above. :func:`decode_gossip` accepts either form and returns
the messages; a batch is accepted whole or not at all: every item must decode (batches do not nest), all
items must come from one sender, no (sender, seq) may appear twice, and with a guard every item must be
fresh and unseen before any is recorded. The batch itself is not signed: on gossip the transport's
signature covers it and the network layer checks that its signer is the items' sender.
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
#: Wire-level container of several messages from one sender (not a message kind: it has no body schema).
BATCH = "batch"
#: Most messages one batch may carry.
MAX_BATCH_ITEMS = 64
#: Largest code a job announcement may carry inline (``code``: the root block of the job's code CID, zlib-compressed,
#: so a small bundle needs no fetch from the origin; the receiver checks it against the CID) ...
MAX_INLINE_CODE = 4096
#: ... and the most that block may inflate to (a tar bundle is at least 10 KiB, mostly padding).
MAX_INLINE_BLOCK = 64 * 1024

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
    JOB: _map(
        {
            "spec": _any_map(16),
            "seed": H32,
            "origin_ts": _int(0, 2**53),
            "code": _bytes((1, MAX_INLINE_CODE)),
        },
        optional=frozenset({"code"}),  # the code's root block, compressed, when small (agent/inline.py)
    ),
    CLAIM: _map({"job": H32, "caps": CAPS}),
    RELEASE: _map({"job": H32, "reason": _str(200)}),
    COMMIT: _map({"job": H32, "commitment": H32}),
    REVEAL: _map(
        {
            "job": H32,
            "root": H32,
            "salt": H32,
            "trace_cid": CID,
            "result_cid": CID,
            "attest": _bytes(65),
            "commitment": H32,
        },
        # attest: the executor's chain attestation of root (equivocation evidence); commitment: a reveal that
        # carries its own commitment, sent when the commitment completes the k and so opens at once (node.py)
        optional=frozenset({"attest", "commitment"}),
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

    @property
    def commitment(self) -> bytes | None:
        """The commitment this message makes: a commit's, or a reveal's that carries its own (else None)."""
        return self.body.get("commitment") if self.kind in (COMMIT, REVEAL) else None


def commit_part(reveal: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """What a node that commits but withholds its opening sends instead of ``reveal`` (a reveal body): the
    commit the reveal carries, or None when it carries none (the commit went on its own)."""
    c = reveal.get("commitment")
    return (COMMIT, {"job": reveal["job"], "commitment": c}) if c is not None else None


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


def encode_batch(items: list[bytes]) -> bytes:
    """Pack already-encoded messages of one sender into one batch (ProtocolError when too many or too big)."""
    if not items or len(items) > MAX_BATCH_ITEMS:
        raise ProtocolError("bad-batch", f"a batch carries 1..{MAX_BATCH_ITEMS} messages, not {len(items)}")
    data = canonical({"v": VERSION, "t": BATCH, "items": [bytes(i) for i in items]})
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError("oversized", f"batch is {len(data)} bytes > cap {MAX_MESSAGE_BYTES}")
    return data


def batch_size(item_sizes: list[int]) -> int:
    """Encoded size of a batch of items of these sizes (to fill batches up to the cap without re-encoding)."""

    def head(n: int) -> int:  # CBOR major-type header length for a length/count n
        return 1 if n < 24 else 2 if n < 256 else 3 if n < 65536 else 5

    items = sum(head(n) + n for n in item_sizes)
    # {"v": 1, "t": "batch", "items": [...]}: map(3) + "t" + "batch" + "v" + 1 + "items" + array header
    return 1 + 2 + 6 + 2 + 1 + 6 + head(len(item_sizes)) + items


def pack(items: list[bytes]) -> list[bytes]:
    """Gossip payloads for ``items`` (one sender's encoded messages, in order): consecutive items go into batches
    of at most :data:`MAX_BATCH_ITEMS` within :data:`MAX_MESSAGE_BYTES`; a lone item stays a plain message."""
    out: list[bytes] = []
    group: list[bytes] = []

    def flush() -> None:
        if group:
            out.append(group[0] if len(group) == 1 else encode_batch(group))
            group.clear()

    for item in items:
        if group and (
            len(group) >= MAX_BATCH_ITEMS or batch_size([len(x) for x in (*group, item)]) > MAX_MESSAGE_BYTES
        ):
            flush()
        group.append(item)
    flush()
    return out


_BATCH_KEYS = frozenset({"v", "t", "items"})
_BATCH_TAG = b"\x61t\x65batch"  # "t": "batch", the first entry of a small canonical map (keys sort by length)


def is_batch(data: bytes) -> bool:
    """Whether a gossip payload is (or claims to be) a batch: canonical CBOR puts ``"t": "batch"`` first."""
    return (
        len(data) > len(_BATCH_TAG)
        and 0xA1 <= data[0] <= 0xB7
        and bytes(data[1 : 1 + len(_BATCH_TAG)]) == _BATCH_TAG
    )


def decode_gossip(data: bytes, guard: ReplayGuard | None = None, now: float | None = None) -> list[Message]:
    """Decode one gossip payload: a single message or a batch of one sender's messages (see the module doc)."""
    if not is_batch(data):
        return [decode(data, guard, now)]
    env = decode_canonical(data, MAX_MESSAGE_BYTES)
    if not isinstance(env, dict) or set(env) != _BATCH_KEYS:
        raise ProtocolError("bad-batch", f"a batch has exactly the fields {sorted(_BATCH_KEYS)}")
    if env["v"] != VERSION:
        raise ProtocolError("bad-version", f"batch version {env['v']!r} not supported")
    items = env["items"]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH_ITEMS:
        raise ProtocolError("bad-batch", f"batch items must be a list of 1..{MAX_BATCH_ITEMS} messages")
    msgs = []
    for i, item in enumerate(items):
        if not isinstance(item, bytes):
            raise ProtocolError("bad-batch", f"batch item {i} is not bytes")
        try:
            msgs.append(decode(item))
        except ProtocolError as e:
            raise ProtocolError(e.reason, f"batch item {i}: {e}") from None
    if len({x.sender for x in msgs}) != 1:
        raise ProtocolError("bad-batch", "batch items come from more than one sender")
    if len({x.seq for x in msgs}) != len(msgs):
        raise ProtocolError("replayed", "a seq appears twice in one batch")
    if guard is not None:
        if now is None:
            raise ValueError("a ReplayGuard needs the current time")
        guard.check_all(msgs, now)
    return msgs


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
        self._check(msg, now)
        self._record(msg, now)

    def check_all(self, msgs: list[Message], now: float) -> None:
        """Check every message first and record them only when all pass (a rejected batch leaves no trace)."""
        self._prune(int(now * 1000))
        if len(self._seen) + len(msgs) > self.max_entries:
            raise ProtocolError("overloaded", "replay cache full")
        for msg in msgs:
            self._check(msg, now)
        if len({(x.sender, x.seq) for x in msgs}) != len(msgs):
            raise ProtocolError("replayed", "the same (sender, seq) appears twice")
        for msg in msgs:
            self._record(msg, now)

    def _check(self, msg: Message, now: float) -> None:
        now_ms = int(now * 1000)
        if msg.ts_ms < now_ms - self.window_ms:
            raise ProtocolError(
                "stale",
                f"message is {(now_ms - msg.ts_ms) / 1000:.0f}s old (window {self.window_ms // 1000}s)",
            )
        if msg.ts_ms > now_ms + self.skew_ms:
            raise ProtocolError("stale", f"message is dated {(msg.ts_ms - now_ms) / 1000:.0f}s in the future")
        if (msg.sender, msg.seq) in self._seen:
            raise ProtocolError("replayed", f"seq {msg.seq} from this sender was already accepted")

    def _record(self, msg: Message, now: float) -> None:
        now_ms = int(now * 1000)
        key = (msg.sender, msg.seq)
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
