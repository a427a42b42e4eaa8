"""Peer exchange over a direct stream, so a mesh grown from a few bootstrap links becomes well connected.

On ``/sandrun-p2p/peers/1.0.0`` a node answers (and closes) with the canonical CBOR list
``[[peer_id_bytes, [multiaddr, ...]], ...]`` of the peers it is connected to (their listen addresses, as
identify reported them). The asker dials those it is not connected to, up to a target peer count. Only the
side with the smaller peer id dials a pair it learned this way (py-libp2p handles simultaneous dials badly).
"""

from __future__ import annotations

import contextlib
from typing import Any

import trio

from ..protocol.encoding import canonical, decode_canonical
from ..protocol.errors import ProtocolError
from .fetch import _read_exact

PEERS_PROTOCOL = "/sandrun-p2p/peers/1.0.0"
MAX_PEERS = 64
MAX_ADDRS = 4
MAX_REPLY = 64 * 1024


def encode_peers(entries: list[tuple[bytes, list[str]]]) -> bytes:
    data = canonical([[pid, addrs[:MAX_ADDRS]] for pid, addrs in entries[:MAX_PEERS]])
    return len(data).to_bytes(4, "big") + data


async def read_peers(stream: Any) -> list[tuple[bytes, list[str]]]:
    """Parse a peer list; ProtocolError for anything malformed or too large."""
    n = int.from_bytes(await _read_exact(stream, 4), "big")
    if n > MAX_REPLY:
        raise ProtocolError("oversized", f"peer list of {n} bytes")
    obj = decode_canonical(await _read_exact(stream, n), MAX_REPLY)
    if not isinstance(obj, list) or len(obj) > MAX_PEERS:
        raise ProtocolError("malformed", "peer list must be a list")
    out = []
    for item in obj:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], bytes)
            or not isinstance(item[1], list)
            or len(item[1]) > MAX_ADDRS
            or not all(isinstance(a, str) and len(a) < 256 for a in item[1])
        ):
            raise ProtocolError("malformed", "bad peer entry")
        out.append((item[0], item[1]))
    return out


def make_handler(entries: Any, timeout: float) -> Any:
    async def handler(stream: Any) -> None:
        try:
            with trio.fail_after(timeout):
                await stream.write(encode_peers(entries()))
        except Exception:
            pass
        finally:
            with trio.move_on_after(1), contextlib.suppress(Exception):
                await stream.close()

    return handler
