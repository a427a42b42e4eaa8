"""CID fetch over a direct libp2p stream (bulk bytes never ride on gossip).

Wire format on ``/sandrun-p2p/fetch/1.0.0``: the requester writes a varint-prefixed CID string; the server
answers one status byte (0 found, 1 not found, 2 error), then for "found" an 8-byte big-endian length and
the bytes. The requester caps the length it accepts; the content store checks that the bytes hash to the CID.

The requester opens the stream with :func:`open_pipelined`: the multistream-select header, the protocol
proposal and the request leave in one write (the pipelining multistream-select allows a dialer that proposes
one protocol), so a fetch takes one round trip instead of three (header, proposal, request, each waiting for
the answer before). Under load each round trip waits on both agents' loops; this cut the fetch of a job's code.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from libp2p.utils import encode_delim

FETCH_PROTOCOL = "/sandrun-p2p/fetch/1.0.0"
MULTISTREAM = b"/multistream/1.0.0"
MAX_MULTISTREAM_LINE = 1024  # a multistream-select answer: a protocol id or "na"
FOUND, NOT_FOUND, ERROR = 0, 1, 2
MAX_CID_LEN = 256
CHUNK = 64 * 1024

log = logging.getLogger("sandrun_p2p.net.fetch")

#: ``provider(cid) -> bytes | None``: what this node serves.
Provider = Callable[[str], Awaitable[bytes | None]]


class FetchError(Exception):
    """A peer answered a fetch with an error, a bad frame, or more bytes than allowed."""


class ProtocolRefused(FetchError):
    """The peer's multistream-select did not accept the protocol (or answered something else)."""


async def _read_exact(stream: Any, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.read(min(CHUNK, n - len(buf)))
        if not chunk:
            raise FetchError(f"stream ended after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


async def _read_varint(stream: Any) -> int:
    value, shift = 0, 0
    for _ in range(10):
        b = (await _read_exact(stream, 1))[0]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value
        shift += 7
    raise FetchError("varint too long")


async def _read_line(stream: Any) -> bytes:
    """One multistream-select message (varint length, text, newline), at most ``MAX_MULTISTREAM_LINE`` bytes:
    a peer announcing more is refused before anything more is read."""
    n = await _read_varint(stream)
    if not 0 < n <= MAX_MULTISTREAM_LINE:
        raise ProtocolRefused(f"peer answered a multistream message of {n} bytes")
    line = await _read_exact(stream, n)
    if not line.endswith(b"\n"):
        raise ProtocolRefused("peer answered a multistream message without its newline")
    return line[:-1]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def make_handler(provider: Provider, timeout: float) -> Callable[[Any], Awaitable[None]]:
    """Stream handler that serves ``provider``'s bytes; every read and write is bounded by ``timeout``."""

    async def handler(stream: Any) -> None:
        try:
            with trio.fail_after(timeout):
                n = await _read_varint(stream)
                if not 0 < n <= MAX_CID_LEN:
                    await stream.write(bytes([ERROR]))
                    return
                cid = (await _read_exact(stream, n)).decode("ascii", "strict")
                try:
                    data = await provider(cid)
                except Exception as e:  # a broken provider must not kill the host
                    log.warning("fetch provider failed for %s: %s", cid, e)
                    data = None
                if data is None:
                    await stream.write(bytes([NOT_FOUND]))
                    return
                await stream.write(bytes([FOUND]) + len(data).to_bytes(8, "big"))
                for i in range(0, len(data), CHUNK):
                    await stream.write(data[i : i + CHUNK])
        except (trio.TooSlowError, FetchError, UnicodeDecodeError) as e:
            log.debug("fetch request dropped: %s", e)
        except Exception as e:  # stream reset by the peer, etc.
            log.debug("fetch stream error: %s", e)
        finally:
            with trio.move_on_after(1):
                with contextlib.suppress(Exception):
                    await stream.close()

    return handler


def encode_request(cid: str) -> bytes:
    raw = cid.encode("ascii")
    return _varint(len(raw)) + raw


async def open_pipelined(network: Any, peer_id: Any, protocol: str, first: bytes) -> Any:
    """A new stream to ``peer_id`` speaking ``protocol``, negotiated pipelined: the multistream header, the
    proposal and ``first`` (the request) in one write, then both echoes read and checked. A peer that does not
    speak ``protocol`` answers "na": :class:`ProtocolRefused`, the stream reset. ``network``: the host's swarm."""
    stream = await network.new_stream(peer_id)
    # QUIC connections bound how many streams negotiate at once (py-libp2p's host does the same)
    slot = getattr(getattr(stream, "muxed_conn", None), "_negotiation_semaphore", None)
    try:
        async with slot if slot is not None else contextlib.nullcontext():
            await stream.write(encode_delim(MULTISTREAM) + encode_delim(protocol.encode()) + first)
            header = await _read_line(stream)
            if header != MULTISTREAM:
                raise ProtocolRefused(f"peer answered {header[:64]!r} to the multistream header")
            answer = await _read_line(stream)
            if answer != protocol.encode():
                raise ProtocolRefused(f"peer answered {answer[:64]!r} to {protocol}")
    except BaseException:
        with trio.CancelScope(shield=True), contextlib.suppress(Exception):
            await stream.reset()
        raise
    stream.set_protocol(protocol)
    return stream


async def read_response(stream: Any, max_bytes: int) -> bytes | None:
    """The answer to a fetch request: the bytes, or None when the peer does not have them."""
    status = (await _read_exact(stream, 1))[0]
    if status == NOT_FOUND:
        return None
    if status != FOUND:
        raise FetchError(f"peer answered status {status}")
    size = int.from_bytes(await _read_exact(stream, 8), "big")
    if size > max_bytes:
        raise FetchError(f"peer offers {size} bytes > limit {max_bytes}")
    return await _read_exact(stream, size)
