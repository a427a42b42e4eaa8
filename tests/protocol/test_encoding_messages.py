"""Wire format: canonical CBOR and signed messages; every bad input is one ProtocolError."""

import contextlib

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandrun_p2p.protocol import messages as m
from sandrun_p2p.protocol.encoding import MAX_MESSAGE_BYTES, canonical, decode_canonical
from sandrun_p2p.protocol.errors import ProtocolError
from sandrun_p2p.protocol.identity import NodeKey

KEY = NodeKey.from_seed(b"\x01" * 32)
OTHER = NodeKey.from_seed(b"\x02" * 32)
J = b"\x11" * 32

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)

CAPS = {
    "cpus": 2,
    "mem_mb": 1024,
    "disk_mb": 10,
    "gpus": [],
    "enforced": ["network"],
    "executor": "local",
    "max_jobs": 1,
}
BODIES = {
    m.ADVERT: {
        "caps": CAPS,
        "shard_bits": 0,
        "shards": [],
        "eth": b"\x00" * 20,
        "interval": 10,
        "load": 0,
    },
    m.JOB: {
        "spec": {"code_cid": "bafkreiabcdefgh", "manifest": {"entrypoint": "a.py"}},
        "seed": J,
        "origin_ts": 5,
    },
    m.CLAIM: {"job": J, "caps": CAPS},
    m.RELEASE: {"job": J, "reason": "shutting down"},
    m.COMMIT: {"job": J, "commitment": b"\x22" * 32},
    m.REVEAL: {
        "job": J,
        "root": b"\x33" * 32,
        "salt": b"\x44" * 32,
        "trace_cid": "bafytrace",
        "result_cid": "bafyres",
    },
    m.CHECKPOINT: {"job": J, "index": 3, "cid": "bafyckpt", "link": b"\x55" * 32},
    m.EVIDENCE: {
        "kind": "equivocation",
        "job": J,
        "accused": b"\x66" * 32,
        "items": [b"a", b"b"],
        "root": b"",
    },
    m.GRANT: {"job": J, "grants": [[b"\x77" * 32, b"\x88" * 80]]},
}


@given(plain)
def test_canonical_round_trip_is_byte_stable(obj):
    data = canonical(obj)
    back = decode_canonical(data)
    assert canonical(back) == data


@given(st.binary(max_size=300))
def test_decode_of_arbitrary_bytes_raises_only_protocol_error(data):
    with contextlib.suppress(ProtocolError):
        m.decode(data)


@given(st.sampled_from(sorted(BODIES)), st.integers(0, 200), st.integers(0, 255))
def test_decode_of_corrupted_messages_raises_only_protocol_error(kind, pos, byte):
    data = bytearray(m.encode(KEY, kind, BODIES[kind], 1, 1000))
    data[pos % len(data)] = byte
    try:
        msg = m.decode(bytes(data))
    except ProtocolError:
        return
    assert msg.kind == kind  # a no-op change still decodes to the same message


@pytest.mark.parametrize("kind", sorted(BODIES))
def test_every_kind_round_trips(kind):
    data = m.encode(KEY, kind, BODIES[kind], 7, 123456)
    msg = m.decode(data)
    assert (msg.kind, msg.sender, msg.seq, msg.ts_ms, msg.body) == (
        kind,
        KEY.node_id,
        7,
        123456,
        BODIES[kind],
    )
    assert msg.raw == data


def _envelope(kind=m.CLAIM, body=None, **over):
    body = BODIES[kind] if body is None else body
    env = {"v": m.VERSION, "t": kind, "from": KEY.node_id, "seq": 1, "ts": 1000, "body": body}
    env["sig"] = KEY.sign(m.signing_bytes(kind, KEY.node_id, 1, 1000, body))
    env.update(over)
    return canonical(env)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "malformed"),
        (b"\xff\xff", "malformed"),
        (b"x" * (MAX_MESSAGE_BYTES + 1), "oversized"),
        (cbor2.dumps({"b": 1, "a": 2}), "non-canonical"),
        (canonical([1, 2]), "bad-field"),
        (_envelope(v=2), "bad-version"),
        (_envelope(t="gossip"), "unknown-kind"),
        (_envelope(body={"job": J, "caps": CAPS, "extra": 1}), "unknown-field"),
        (_envelope(body={}), "missing-field"),
        (_envelope(body={"job": b"short", "caps": CAPS}), "bad-field"),
        (_envelope(body={"job": "text-not-bytes" * 3, "caps": CAPS}), "bad-field"),
        (_envelope(sig=b"\x00" * 64), "bad-signature"),
        (_envelope(**{"from": OTHER.node_id}), "bad-signature"),
        (_envelope(extra=1), "unknown-field"),
        (cbor2.dumps(cbor2.CBORTag(1234, 5)), "malformed"),
    ],
)
def test_bad_messages_are_rejected_with_a_reason(data, reason):
    with pytest.raises(ProtocolError) as e:
        m.decode(data)
    assert e.value.reason == reason


def test_encode_refuses_oversized_and_invalid_bodies():
    with pytest.raises(ProtocolError, match="oversized"):
        body = {**BODIES[m.JOB], "spec": {"code_cid": "bafk", "manifest": {"entrypoint": "a" * 70000}}}
        m.encode(KEY, m.JOB, body, 1, 1)
    with pytest.raises(ProtocolError, match="bad-field"):
        m.encode(KEY, m.CLAIM, {"job": b"x", "caps": CAPS}, 1, 1)


def test_replay_and_stale_are_rejected():
    guard = m.ReplayGuard(window_s=60, skew_s=5)
    data = m.encode(KEY, m.CLAIM, BODIES[m.CLAIM], seq=1, ts_ms=100_000)
    assert m.decode(data, guard, now=100.0).seq == 1
    with pytest.raises(ProtocolError) as e:
        m.decode(data, guard, now=100.5)
    assert e.value.reason == "replayed"
    # A re-signed message with a reused sequence number is a replay too.
    again = m.encode(KEY, m.COMMIT, BODIES[m.COMMIT], seq=1, ts_ms=100_100)
    with pytest.raises(ProtocolError, match="replayed"):
        m.decode(again, guard, now=100.5)
    # Out-of-order sequence numbers are fine (gossip reorders).
    assert m.decode(m.encode(KEY, m.CLAIM, BODIES[m.CLAIM], seq=0, ts_ms=99_000), guard, now=100.5).seq == 0
    old = m.encode(KEY, m.CLAIM, BODIES[m.CLAIM], seq=9, ts_ms=10_000)
    with pytest.raises(ProtocolError, match="stale"):
        m.decode(old, guard, now=100.0)
    future = m.encode(KEY, m.CLAIM, BODIES[m.CLAIM], seq=10, ts_ms=200_000)
    with pytest.raises(ProtocolError, match="stale"):
        m.decode(future, guard, now=100.0)


def test_replay_guard_memory_is_bounded_by_the_window():
    guard = m.ReplayGuard(window_s=10, skew_s=1)
    for i in range(1000):
        m.decode(m.encode(KEY, m.CLAIM, BODIES[m.CLAIM], seq=i, ts_ms=i * 100), guard, now=i * 0.1)
    assert len(guard._seen) <= 120


# ----------------------------------------------------------------------------- batches


def _commit(key: NodeKey, seq: int, ts_ms: int = 1_000_000) -> bytes:
    return m.encode(key, m.COMMIT, {"job": J, "commitment": seq.to_bytes(32, "big")}, seq, ts_ms)


def _bad_sig(item: bytes) -> bytes:
    env = cbor2.loads(item)
    env["sig"] = bytes(64)
    return canonical(env)


NOW = 1_000.0  # seconds; the items above are dated 1_000_000 ms


def test_batch_round_trip_and_single_messages_still_decode() -> None:
    items = [_commit(KEY, s) for s in (1, 2, 3)]
    batch = m.encode_batch(items)
    assert m.is_batch(batch) and not m.is_batch(items[0])
    assert len(batch) == m.batch_size([len(i) for i in items])
    got = m.decode_gossip(batch, m.ReplayGuard(), NOW)
    assert [(x.kind, x.seq, x.raw) for x in got] == [
        (m.COMMIT, s, i) for s, i in zip((1, 2, 3), items, strict=True)
    ]
    assert [x.seq for x in m.decode_gossip(items[0])] == [1]


@pytest.mark.parametrize(
    "env, reason",
    [
        ({"v": 1, "t": "batch"}, "bad-batch"),  # no items
        ({"v": 1, "t": "batch", "items": [], "x": 1}, "bad-batch"),  # unknown field
        ({"v": 1, "t": "batch", "items": []}, "bad-batch"),  # empty
        ({"v": 1, "t": "batch", "items": "abc"}, "bad-batch"),  # not a list
        ({"v": 1, "t": "batch", "items": ["text"]}, "bad-batch"),  # an item that is not bytes
        ({"v": 2, "t": "batch", "items": [b"x"]}, "bad-version"),
        ({"v": 1, "t": "batch", "items": [b"\xff\x00"]}, "malformed"),  # garbage inside
    ],
)
def test_malformed_batches_are_rejected(env, reason) -> None:
    with pytest.raises(ProtocolError) as e:
        m.decode_gossip(canonical(env))
    assert e.value.reason == reason


def test_batch_limits_on_encode_and_decode() -> None:
    with pytest.raises(ProtocolError, match="1..64"):
        m.encode_batch([])
    many = [_commit(KEY, s) for s in range(1, m.MAX_BATCH_ITEMS + 2)]
    with pytest.raises(ProtocolError) as e:
        m.encode_batch(many)
    assert e.value.reason == "bad-batch"
    with pytest.raises(ProtocolError) as e:  # a hand-built batch over the item limit
        m.decode_gossip(canonical({"v": 1, "t": "batch", "items": many}))
    assert e.value.reason == "bad-batch"
    big = m.encode(
        KEY,
        m.EVIDENCE,
        {"kind": "x", "job": J, "accused": b"\x00" * 32, "items": [b"\x01" * 16_000] * 3, "root": b""},
        1,
        1,
    )
    with pytest.raises(ProtocolError) as e:
        m.encode_batch([big, big])
    assert e.value.reason == "oversized"
    with pytest.raises(ProtocolError) as e:
        m.decode_gossip(b"\xa3\x61t\x65batch" + b"\x00" * m.MAX_MESSAGE_BYTES)
    assert e.value.reason == "oversized"


def test_pack_fills_batches_within_the_caps_and_keeps_order() -> None:
    small = [_commit(KEY, s) for s in range(1, 101)]
    payloads = m.pack(small)
    assert [len(m.decode_gossip(p)) for p in payloads] == [64, 36]
    assert [x.seq for p in payloads for x in m.decode_gossip(p)] == list(range(1, 101))
    assert m.pack(small[:1]) == small[:1]  # a lone message stays plain
    big = m.encode(
        KEY,
        m.EVIDENCE,
        {"kind": "x", "job": J, "accused": b"\x00" * 32, "items": [b"\x01" * 16_000] * 3, "root": b""},
        500,
        1,
    )
    payloads = m.pack([small[0], big, small[1]])
    assert all(len(p) <= MAX_MESSAGE_BYTES for p in payloads)
    assert [x.seq for p in payloads for x in m.decode_gossip(p)] == [1, 500, 2]


def test_a_wrong_signature_inside_a_batch_rejects_all_of_it() -> None:
    guard = m.ReplayGuard()
    items = [_commit(KEY, 1), _bad_sig(_commit(KEY, 2)), _commit(KEY, 3)]
    with pytest.raises(ProtocolError) as e:
        m.decode_gossip(m.encode_batch(items), guard, NOW)
    assert e.value.reason == "bad-signature" and "item 1" in str(e.value)
    # nothing of the rejected batch was recorded: the good items are still accepted on their own
    assert [x.seq for x in m.decode_gossip(m.encode_batch([items[0], items[2]]), guard, NOW)] == [1, 3]


def test_replays_inside_and_across_batches_are_rejected_without_a_trace() -> None:
    guard = m.ReplayGuard()
    with pytest.raises(ProtocolError) as e:  # the same message twice in one batch
        m.decode_gossip(m.encode_batch([_commit(KEY, 1), _commit(KEY, 1)]), guard, NOW)
    assert e.value.reason == "replayed"
    m.decode_gossip(_commit(KEY, 5), guard, NOW)
    with pytest.raises(ProtocolError) as e:  # an item seen before
        m.decode_gossip(m.encode_batch([_commit(KEY, 6), _commit(KEY, 5)]), guard, NOW)
    assert e.value.reason == "replayed"
    assert [x.seq for x in m.decode_gossip(_commit(KEY, 6), guard, NOW)] == [6]  # 6 was not recorded
    with pytest.raises(ProtocolError) as e:  # a stale item
        m.decode_gossip(m.encode_batch([_commit(KEY, 7), _commit(KEY, 8, ts_ms=1)]), guard, NOW)
    assert e.value.reason == "stale"


def test_a_batch_carries_one_senders_messages_and_does_not_nest() -> None:
    with pytest.raises(ProtocolError) as e:
        m.decode_gossip(m.encode_batch([_commit(KEY, 1), _commit(OTHER, 2)]))
    assert e.value.reason == "bad-batch"
    inner = m.encode_batch([_commit(KEY, 1), _commit(KEY, 2)])
    with pytest.raises(ProtocolError) as e:
        m.decode_gossip(m.encode_batch([inner, _commit(KEY, 3)]))
    assert e.value.reason in ("malformed", "bad-field", "missing-field", "unknown-field", "unknown-kind")
