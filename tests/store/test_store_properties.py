"""Property tests: round trips and 'only our own error types' on arbitrary input."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import aleph_cid
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandrun_p2p.store import CorruptObject, EmbeddedStore, InvalidCid, cid_of_bytes, parse_cid
from sandrun_p2p.store.cid import Cid
from sandrun_p2p.store.unixfs import CHUNK_SIZE, UnixFsData, decode_node

sizes = st.one_of(
    st.integers(0, 2048),
    st.integers(CHUNK_SIZE - 3, CHUNK_SIZE + 3),
    st.integers(0, 3 * CHUNK_SIZE + 100),
)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    n = draw(sizes)
    seed = draw(st.binary(min_size=1, max_size=8))
    import hashlib

    return hashlib.shake_256(seed).digest(n)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.lists(payloads(), min_size=1, max_size=4))
def test_put_get_roundtrip(data: list[bytes]) -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory() as d:
            store = EmbeddedStore(Path(d), gc_grace_s=0)
            cids = [await store.put_bytes(b) for b in data]
            for b, c in zip(data, cids, strict=True):
                assert c == cid_of_bytes(b)
                assert await store.get(c) == b
            await store.gc(cids[:1])
            assert await store.get(cids[0]) == data[0]

    trio.run(main)


@settings(max_examples=60, deadline=None)
@given(payloads())
def test_cids_agree_with_aleph(data: bytes) -> None:
    h = aleph_cid.CidHasher.for_ipfs_v1_raw_leaves()
    h.update(data)
    assert cid_of_bytes(data) == h.finalize()


@given(st.binary(max_size=300))
def test_decoders_raise_only_corrupt_object(raw: bytes) -> None:
    for fn in (decode_node, UnixFsData.decode):
        with contextlib.suppress(CorruptObject):
            fn(raw)


@given(st.text(max_size=120))
def test_parse_cid_raises_only_invalid_cid(text: str) -> None:
    try:
        c = parse_cid(text)
    except InvalidCid:
        return
    assert isinstance(c, Cid) and parse_cid(str(c)) == c


@given(st.sampled_from([0x55, 0x70]), st.binary(min_size=32, max_size=32))
def test_cid_string_roundtrip(codec: int, digest: bytes) -> None:
    c = Cid(codec, digest)
    assert parse_cid(str(c)) == c == parse_cid(c.base58())
