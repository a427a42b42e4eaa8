"""Buffered readers of length-prefixed frames for py-libp2p's two hot read loops (installed by :mod:`.patches`).

py-libp2p 0.8.1 reads each uvarint prefix one byte at a time, every byte an awaited read through the stream's
layers (net stream, mplex stream with its timeout and read lock; or the Noise session), then the body with
another. These readers take whatever the layer below has available in one call, keep the rest in a buffer owned
by the (single) reader of that stream or connection, and cut the frames out of it. Bytes, limits and errors are
the library's: a prefix over 10 bytes is a ``ParseError``, a length over the limit ``MessageTooLarge`` (before
the body is read), a stream that ends mid-frame ``IncompleteReadError``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from libp2p.exceptions import ParseError
from libp2p.io.exceptions import IncompleteReadError, MessageTooLarge

#: Most bytes asked of a stream per read (it returns what it has, up to this).
CHUNK = 64 * 1024
#: Longest uvarint of a 64-bit value.
MAX_VARINT_BYTES = 10
_BUF = "_sandrun_read_buffer"

Fill = Callable[[], Awaitable[bytes]]


def buffer_of(owner: Any) -> bytearray:
    """The read buffer kept on ``owner`` (a stream or a muxer), created empty on first use."""
    buf = owner.__dict__.get(_BUF)
    if buf is None:
        buf = owner.__dict__[_BUF] = bytearray()
    return buf


async def take_uvarint(buf: bytearray, fill: Fill) -> int:
    """Cut one uvarint off the front of ``buf``, reading more with ``fill`` while it is incomplete."""
    while True:
        value, shift = 0, 0
        for i in range(min(len(buf), MAX_VARINT_BYTES)):
            b = buf[i]
            value |= (b & 0x7F) << shift
            if b < 0x80:
                del buf[: i + 1]
                if value >= 1 << 64:
                    raise ParseError("varint exceeds 64 bits")
                return value
            shift += 7
        if len(buf) >= MAX_VARINT_BYTES:
            raise ParseError("Varint decoding error: integer exceeds maximum size of 64 bits")
        chunk = await fill()
        if not chunk:
            raise IncompleteReadError(
                "Stream ended while reading varint length prefix", expected_bytes=1, received_bytes=0
            )
        buf += chunk


async def take_exactly(buf: bytearray, n: int, fill: Fill) -> bytes:
    """Cut ``n`` bytes off the front of ``buf``, reading more with ``fill`` until they are there."""
    while len(buf) < n:
        chunk = await fill()
        if not chunk:
            raise IncompleteReadError(
                f"Incomplete message: expected {n}, got {len(buf)}", expected_bytes=n, received_bytes=len(buf)
            )
        buf += chunk
    out = bytes(buf[:n])
    del buf[:n]
    return out


async def read_prefixed_limited(reader: Any, max_length: int) -> bytes:
    """Drop-in for ``read_varint_prefixed_bytes_limited`` on a stream that has one reader (a pubsub stream)."""
    if max_length <= 0:
        raise ValueError("max_length must be greater than 0")
    buf = buffer_of(reader)

    async def fill() -> bytes:
        return await reader.read(CHUNK)

    n = await take_uvarint(buf, fill)
    if n > max_length:
        raise MessageTooLarge(f"Message length {n} exceeds maximum allowed {max_length}")
    return await take_exactly(buf, n, fill)


async def read_mplex_frame(mplex: Any, max_length: int) -> tuple[int, int, bytes]:
    """One mplex frame (stream id, flag, body) from the secured connection, as ``Mplex.read_message``."""
    buf = buffer_of(mplex)
    conn = mplex.secured_conn

    async def fill() -> bytes:
        return await conn.read(None)  # what the Noise session has decrypted, or its next message

    header = await take_uvarint(buf, fill)
    n = await take_uvarint(buf, fill)
    if n > max_length:
        raise MessageTooLarge(f"Message length {n} exceeds maximum allowed {max_length}")
    return header >> 3, header & 0x07, await take_exactly(buf, n, fill)


async def read_noise_packet(packets: Any) -> bytes:
    """One Noise transport packet (2-byte big-endian length, then the ciphertext), as the library's
    ``NoisePacketReadWriter.read_msg``. The buffer lives on the raw connection, which the handshake's and the
    session's packet readers share (bytes read ahead during the handshake belong to the session)."""
    conn = packets.read_write_closer
    buf = buffer_of(conn)

    async def fill() -> bytes:
        return await conn.read(CHUNK)

    n = int.from_bytes(await take_exactly(buf, 2, fill), "big")
    return await take_exactly(buf, n, fill)
