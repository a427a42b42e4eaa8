"""The buffered frame readers cut the same frames out of any chunking of the byte stream, and fail as the
library's byte-at-a-time readers do."""

from __future__ import annotations

import random

import pytest
from libp2p.exceptions import ParseError
from libp2p.io.exceptions import IncompleteReadError, MessageTooLarge
from libp2p.utils.varint import encode_uvarint

from sandrun_p2p.net.buffered_read import read_mplex_frame, read_noise_packet, read_prefixed_limited


class Chunks:
    """A reader that hands out a byte string in given pieces (b"" at the end), whatever size is asked."""

    def __init__(self, data: bytes, cuts: list[int]) -> None:
        self.pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True) if b > a]
        self.reads = 0

    async def read(self, n: int | None = None) -> bytes:
        self.reads += 1
        return self.pieces.pop(0) if self.pieces else b""


def prefixed(body: bytes) -> bytes:
    return encode_uvarint(len(body)) + body


async def test_frames_survive_every_chunking() -> None:
    rng = random.Random(7)
    bodies = [bytes(rng.randrange(256) for _ in range(n)) for n in (0, 1, 127, 128, 300, 20_000)]
    data = b"".join(prefixed(b) for b in bodies)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randrange(0, 12)))
        r = Chunks(data, cuts)
        assert [await read_prefixed_limited(r, 1 << 20) for _ in bodies] == bodies
        with pytest.raises(IncompleteReadError):
            await read_prefixed_limited(r, 1 << 20)  # the stream ended


async def test_many_frames_in_one_chunk_cost_one_read() -> None:
    r = Chunks(b"".join(prefixed(b"rpc%d" % i) for i in range(20)), [])
    assert [await read_prefixed_limited(r, 100) for _ in range(20)] == [b"rpc%d" % i for i in range(20)]
    assert r.reads == 1  # the library read at least twice per frame


async def test_limits_and_bad_prefixes() -> None:
    r = Chunks(prefixed(b"x" * 101), [1])
    with pytest.raises(MessageTooLarge):
        await read_prefixed_limited(r, 100)
    assert r.pieces  # refused before the body was read
    with pytest.raises(ParseError):
        await read_prefixed_limited(Chunks(b"\xff" * 11, [3, 7]), 100)
    with pytest.raises(IncompleteReadError):
        await read_prefixed_limited(Chunks(prefixed(b"abc")[:-1], []), 100)
    with pytest.raises(ValueError):
        await read_prefixed_limited(Chunks(b"", []), 0)


async def test_mplex_frames_carry_id_flag_and_body() -> None:
    frames = [(3, 2, b"hello"), (5, 0, b""), (1 << 20, 6, b"z" * 70_000)]
    data = b"".join(encode_uvarint(sid << 3 | flag) + prefixed(body) for sid, flag, body in frames)

    class Mplex:
        secured_conn = Chunks(data, [2, 9, 65_536])

    m = Mplex()
    assert [await read_mplex_frame(m, 1 << 20) for _ in frames] == frames
    with pytest.raises(MessageTooLarge):
        big = Mplex()
        big.secured_conn = Chunks(encode_uvarint(8) + prefixed(b"y" * 11), [])
        await read_mplex_frame(big, 10)


async def test_noise_packets_share_the_connection_buffer() -> None:
    packets = [b"msg1", b"", b"n" * 65_535, b"session data"]
    data = b"".join(len(p).to_bytes(2, "big") + p for p in packets)
    conn = Chunks(data, [1, 5, 40_000])

    class Reader:  # the handshake's and the session's packet readers are two objects on one connection
        def __init__(self) -> None:
            self.read_write_closer = conn

    handshake, session = Reader(), Reader()
    assert [await read_noise_packet(handshake) for _ in range(3)] == packets[:3]
    assert await read_noise_packet(session) == packets[3]
    with pytest.raises(IncompleteReadError):
        await read_noise_packet(session)
