"""QUIC (``/udp/.../quic-v1`` listen addresses): py-libp2p picks its QUIC transport from the address, secured by
QUIC's own TLS 1.3 (libp2p TLS; Noise is TCP's). Gossip crosses a hop and a direct stream fetches a CID."""

from __future__ import annotations

import time

import pytest
import trio

from sandrun_p2p.net.host import NetConfig, Network
from sandrun_p2p.net.topics import job_topic
from sandrun_p2p.protocol import messages as m
from sandrun_p2p.protocol.identity import NodeKey
from sandrun_p2p.protocol.memnet import CPU

pytestmark = pytest.mark.timeout(60)
QUIC = "/ip4/127.0.0.1/udp/0/quic-v1"


async def test_gossip_and_fetch_over_quic(nursery) -> None:
    keys = [NodeKey.from_seed(bytes([40 + i]) * 32) for i in range(3)]
    got: list[list[m.Message]] = [[], [], []]
    nets = [
        Network(
            k, NetConfig(mdns=False, listen=[QUIC]), (lambda box: lambda msg, now: box.append(msg))(got[i])
        )
        for i, k in enumerate(keys)
    ]
    for n in nets:
        await nursery.start(n.run)
    assert all("/quic-v1/" in n.addrs()[0] for n in nets)
    with trio.fail_after(20):
        await nets[1].connect(nets[0].addrs()[0])  # a line: 0 - 1 - 2
        await nets[2].connect(nets[1].addrs()[0])
        while not (nets[0].mesh_peers(job_topic(0)) and nets[2].mesh_peers(job_topic(0))):
            await trio.sleep(0.05)
    raw = m.encode(keys[0], m.CLAIM, {"job": b"\x01" * 32, "caps": CPU.to_dict()}, 1, int(time.time() * 1000))
    await nets[0].publish(job_topic(0), raw)
    with trio.fail_after(10):
        while not got[2]:
            await trio.sleep(0.01)
    assert [(x.kind, x.sender) for x in got[2]] == [(m.CLAIM, keys[0].node_id)]

    async def provider(cid: str) -> bytes | None:
        return b"over quic" if cid == "bafkquic" else None

    nets[0].set_provider(provider)
    with trio.fail_after(20):
        assert await nets[2].fetch_from(keys[0].node_id, "bafkquic") == b"over quic"
    nursery.cancel_scope.cancel()


async def test_a_node_listening_on_tcp_and_quic_serves_peers_on_either(nursery) -> None:
    keys = [NodeKey.from_seed(bytes([50 + i]) * 32) for i in range(3)]
    hub = Network(
        keys[0], NetConfig(mdns=False, listen=["/ip4/127.0.0.1/tcp/0", QUIC]), lambda msg, now: None
    )
    over_tcp = Network(keys[1], NetConfig(mdns=False), lambda msg, now: None)
    over_quic = Network(keys[2], NetConfig(mdns=False, listen=[QUIC]), lambda msg, now: None)
    for n in (hub, over_tcp, over_quic):
        await nursery.start(n.run)

    async def provider(cid: str) -> bytes | None:
        return b"either" if cid == "bafkeither" else None

    hub.set_provider(provider)
    tcp = next(a for a in hub.addrs() if "/tcp/" in a)
    quic = next(a for a in hub.addrs() if "/quic-v1/" in a)
    with trio.fail_after(20):
        await over_tcp.connect(tcp)
        await over_quic.connect(quic)
        assert await over_tcp.fetch_from(keys[0].node_id, "bafkeither") == b"either"
        assert await over_quic.fetch_from(keys[0].node_id, "bafkeither") == b"either"
    nursery.cancel_scope.cancel()
