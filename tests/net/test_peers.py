"""Peer exchange turns a line of bootstrap links into direct connections, and remembered addresses let a
direct stream reach a peer this node never dialled."""

from __future__ import annotations

import pytest
import trio

from sandrun_p2p.net.host import NetConfig, Network
from sandrun_p2p.net.peers import encode_peers, read_peers
from sandrun_p2p.protocol.errors import ProtocolError
from sandrun_p2p.protocol.identity import NodeKey

pytestmark = pytest.mark.timeout(60)


async def test_line_becomes_connected_and_fetch_reaches_far_peer(nursery) -> None:
    keys = [NodeKey.generate() for _ in range(3)]
    nets = [Network(k, NetConfig(mdns=False, peer_exchange_s=0.2), lambda msg, now: None) for k in keys]
    for n in nets:
        await nursery.start(n.run)
    await nets[1].connect(nets[0].addrs()[0])  # a line: 0 - 1 - 2
    await nets[2].connect(nets[1].addrs()[0])

    async def provider(cid: str) -> bytes | None:
        return b"far away" if cid == "bafkfar" else None

    nets[0].set_provider(provider)
    with trio.fail_after(20):
        while nets[0].peer_id not in nets[2].connected_peers():
            await trio.sleep(0.05)
    assert await nets[2].fetch_from(keys[0].node_id, "bafkfar") == b"far away"
    nursery.cancel_scope.cancel()


async def test_fetch_finds_an_unknown_peers_address_on_demand(nursery) -> None:
    """A job's origin may not be among the executor's peers yet: the fetch asks its peers where the origin is."""
    keys = [NodeKey.generate() for _ in range(3)]
    nets = [Network(k, NetConfig(mdns=False, peer_exchange_s=3600), lambda msg, now: None) for k in keys]
    for n in nets:
        await nursery.start(n.run)
    await nets[1].connect(nets[0].addrs()[0])  # a line 0 - 1 - 2, and no periodic peer exchange
    await nets[2].connect(nets[1].addrs()[0])

    async def provider(cid: str) -> bytes | None:
        return b"bundle" if cid == "bafkbundle" else None

    nets[0].set_provider(provider)
    assert nets[0].peer_id not in nets[2].connected_peers()
    with trio.fail_after(20):
        assert await nets[2].fetch_from(keys[0].node_id, "bafkbundle") == b"bundle"
    nursery.cancel_scope.cancel()


class _Buf:
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read(self, n: int) -> bytes:
        out, self.data = self.data[:n], self.data[n:]
        return out


async def test_peer_list_parsing_rejects_garbage() -> None:
    good = encode_peers([(b"\x00\x24" + b"x" * 36, ["/ip4/127.0.0.1/tcp/1"])])
    assert (await read_peers(_Buf(good)))[0][1] == ["/ip4/127.0.0.1/tcp/1"]
    with pytest.raises(ProtocolError):
        await read_peers(_Buf((10**6).to_bytes(4, "big")))
    with pytest.raises(ProtocolError):
        await read_peers(_Buf((3).to_bytes(4, "big") + b"\xa1\x01\x02"))  # a map, not a list
