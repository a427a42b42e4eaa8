"""``Network.fetch_any`` asks the preferred peers (a job's origin) once more after every peer failed: a stream
to the origin that failed to open must not make the executor release the job."""

from __future__ import annotations

import pytest

from sandrun_p2p.net.host import NetConfig, Network
from sandrun_p2p.protocol.identity import NodeKey

pytestmark = pytest.mark.timeout(30)
ORIGIN, OTHER = b"\x01" * 32, b"\x02" * 32


async def test_the_origin_is_asked_again_after_a_failed_stream() -> None:
    net = Network(NodeKey.from_seed(b"\x09" * 32), NetConfig(mdns=False), lambda msg, now: None)
    asked: list[bytes] = []
    failures = {ORIGIN: 1}  # the first stream to the origin fails; the others have nothing

    async def fetch_from(nid: bytes, cid: str) -> bytes | None:
        asked.append(nid)
        if nid == ORIGIN:
            if failures[ORIGIN]:
                failures[ORIGIN] -= 1
                return None
            return b"bundle"
        return None

    net.fetch_from = fetch_from  # type: ignore[method-assign]
    net.connected_peers = lambda: []  # type: ignore[method-assign]
    assert await net.fetch_any("bafkreiexample", prefer=[ORIGIN, OTHER]) == b"bundle"
    assert asked == [ORIGIN, OTHER, ORIGIN]
    asked.clear()
    assert await net.fetch_any("bafkreiexample", prefer=[]) is None  # nobody preferred: one pass only
    assert asked == []
