"""A raw py-libp2p peer (not using the project's encoder) publishes garbage, oversized messages, messages
signed by the wrong key, stale messages and replays: the node's validators reject every one, the node keeps
accepting good messages, and the raw peer's gossip score goes negative. Also: fetch streams and pacing."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import cbor2
import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from sandrun_p2p.net.host import NetConfig, Network
from sandrun_p2p.net.topics import ADVERT_TOPIC, job_topic
from sandrun_p2p.protocol import messages as m
from sandrun_p2p.protocol.encoding import canonical
from sandrun_p2p.protocol.identity import NodeKey

pytestmark = pytest.mark.timeout(60)

TOPIC = job_topic(0)


def claim(key: NodeKey, seq: int, ts_ms: int | None = None) -> bytes:
    caps = {
        "cpus": 1,
        "mem_mb": 512,
        "disk_mb": 0,
        "gpus": [],
        "enforced": ["network"],
        "executor": "local",
        "max_jobs": 1,
    }
    body = {"job": hashlib.sha256(b"job").digest(), "caps": caps}
    return m.encode(key, m.CLAIM, body, seq, int(time.time() * 1000) if ts_ms is None else ts_ms)


async def wait_until(pred, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(0.02)


@contextlib.asynccontextmanager
async def raw_peer(name: bytes, node: Network) -> AsyncIterator[tuple[Any, Pubsub, NodeKey]]:
    """A plain py-libp2p gossipsub peer (not the project's encoder) subscribed to TOPIC and connected to
    ``node``: its host, its pubsub, and its Ed25519 key as a protocol key. Its host is closed after."""
    seed = hashlib.sha256(name).digest()
    host = new_host(key_pair=create_new_key_pair(seed), listen_addrs=[])
    router = GossipSub(
        protocols=["/meshsub/1.1.0"],
        degree=3,
        degree_low=2,
        degree_high=4,
        heartbeat_interval=1,
        spam_protection_enabled=False,
    )
    ps = Pubsub(
        host, router, strict_signing=True, msg_id_constructor=lambda msg: hashlib.sha256(msg.data).digest()
    )
    try:
        async with host.run(listen_addrs=[]), background_trio_service(ps), background_trio_service(router):
            await ps.wait_until_ready()
            await ps.subscribe(TOPIC)
            with trio.fail_after(10):
                await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(node.addrs()[0])))
            await wait_until(lambda: TOPIC in ps.peer_topics and ps.peer_topics[TOPIC])
            yield host, ps, NodeKey.from_seed(seed)
    finally:
        await host.close()


async def test_raw_peer_garbage_is_rejected_and_scored(nursery) -> None:
    got: list[m.Message] = []
    node = Network(NodeKey.generate(), NetConfig(mdns=False), lambda msg, now: got.append(msg))
    await nursery.start(node.run)

    # the raw peer: plain py-libp2p, its own Ed25519 key doubles as a protocol key for the "valid" cases
    async with raw_peer(b"raw-peer", node) as (host, ps, raw_key):
        raw_pid = host.get_id()

        await ps.publish(TOPIC, claim(raw_key, 1))  # a valid message first
        await wait_until(lambda: len(got) == 1)

        other = NodeKey.generate()
        bad = {
            "malformed": b"\xff\x00 this is not CBOR",
            "oversized": b"\x00" * (m.MAX_MESSAGE_BYTES + 100),
            "wrong-key": claim(other, 7),  # validly signed by someone else, gossiped by the raw peer
            "replayed": claim(raw_key, 1, int(time.time() * 1000) + 1),  # same seq, new bytes
            "stale": claim(raw_key, 2, int(time.time() * 1000) - 3600_000),
            "wrong-topic": m.encode(
                raw_key,
                m.ADVERT,
                {
                    "caps": {
                        "cpus": 1,
                        "mem_mb": 1,
                        "disk_mb": 0,
                        "gpus": [],
                        "enforced": [],
                        "executor": "x",
                        "max_jobs": 1,
                    },
                    "shard_bits": 0,
                    "shards": [],
                    "eth": b"",
                    "interval": 10,
                    "load": 0,
                },
                3,
                int(time.time() * 1000),
            ),
        }
        for data in bad.values():
            await ps.publish(TOPIC, data)
        await wait_until(lambda: sum(node.stats.rejected.values()) >= len(bad))
        for reason in bad:
            assert node.stats.rejected.get(reason, 0) >= 1, (reason, node.stats.rejected)
        assert node.score(raw_pid) < 0

        await ps.publish(TOPIC, claim(raw_key, 4))  # the node kept running and still takes good messages
        await wait_until(lambda: len(got) == 2)
        assert [x.seq for x in got] == [1, 4]
        assert ADVERT_TOPIC in node._topics
    nursery.cancel_scope.cancel()


async def test_batches_from_a_raw_peer_are_checked_item_by_item(nursery) -> None:
    """A good batch delivers every item; a batch with a bad signature, a replay, another sender's item or a
    foreign signer inside is rejected whole (nothing of it delivered) and costs the forwarder score."""
    got: list[m.Message] = []
    node = Network(NodeKey.generate(), NetConfig(mdns=False), lambda msg, now: got.append(msg))
    await nursery.start(node.run)
    async with raw_peer(b"raw-batcher", node) as (host, ps, raw_key):
        await ps.publish(TOPIC, m.encode_batch([claim(raw_key, s) for s in (1, 2, 3)]))
        await wait_until(lambda: len(got) == 3)
        assert node.stats.batches_in == 1

        env = cbor2.loads(claim(raw_key, 11))
        env["sig"] = bytes(64)
        forged = canonical(env)
        other = NodeKey.generate()
        bad = {
            "bad-signature": m.encode_batch([claim(raw_key, 10), forged]),
            "replayed": m.encode_batch([claim(raw_key, 12), claim(raw_key, 2)]),  # seq 2 was delivered above
            "bad-batch": m.encode_batch([claim(raw_key, 13), claim(other, 14)]),
            "wrong-key": m.encode_batch([claim(other, 15), claim(other, 16)]),  # gossiped by the raw peer
        }
        for data in bad.values():
            await ps.publish(TOPIC, data)
        await wait_until(lambda: sum(node.stats.rejected.values()) >= len(bad))
        for reason in bad:
            assert node.stats.rejected.get(reason, 0) >= 1, (reason, node.stats.rejected)
        assert node.score(host.get_id()) < 0
        # not burnt by rejects
        await ps.publish(TOPIC, m.encode_batch([claim(raw_key, 10), claim(raw_key, 12)]))
        await wait_until(lambda: len(got) == 5)
        assert [x.seq for x in got] == [1, 2, 3, 10, 12]
    nursery.cancel_scope.cancel()


async def test_an_item_the_node_refuses_leaves_the_rest_of_its_batch_delivered(nursery) -> None:
    """The node's rules judge each item of a batch alone: a refused item is counted and the payload is not
    forwarded, but the other items stay delivered."""
    from sandrun_p2p.protocol.errors import ProtocolError

    got: list[int] = []

    def on_message(msg: m.Message, now: float) -> None:
        if msg.seq == 2:
            raise ProtocolError("bad-spec", "the node's rules refuse this one")
        got.append(msg.seq)

    keys = [NodeKey.generate(), NodeKey.generate()]
    nets = [
        Network(keys[0], NetConfig(mdns=False), lambda msg, now: None),
        Network(keys[1], NetConfig(mdns=False), on_message),
    ]
    for n in nets:
        await nursery.start(n.run)
    await nets[1].connect(nets[0].addrs()[0])
    await wait_until(lambda: nets[0].mesh_peers(TOPIC) and nets[1].mesh_peers(TOPIC))
    await nets[0].publish_many(TOPIC, [claim(keys[0], s) for s in (1, 2, 3)])
    await wait_until(lambda: nets[1].stats.rejected.get("bad-spec", 0) == 1)
    assert got == [1, 3] and nets[1].stats.accepted == 2
    nursery.cancel_scope.cancel()


async def test_publish_many_batches_and_delivers_in_order(nursery) -> None:
    got: list[m.Message] = []
    keys = [NodeKey.generate(), NodeKey.generate()]
    nets = [
        Network(keys[0], NetConfig(mdns=False), lambda msg, now: None),
        Network(keys[1], NetConfig(mdns=False), lambda msg, now: got.append(msg)),
    ]
    for n in nets:
        await nursery.start(n.run)
    await nets[1].connect(nets[0].addrs()[0])
    await wait_until(lambda: nets[0].mesh_peers(TOPIC) and nets[1].mesh_peers(TOPIC))
    await nets[0].publish_many(TOPIC, [claim(keys[0], i + 1) for i in range(100)])
    await wait_until(lambda: len(got) == 100)
    assert [x.seq for x in got] == list(range(1, 101))
    assert nets[0].stats.batches_out == 2 and nets[0].stats.published == 2  # 64 + 36 in two gossip payloads
    assert nets[1].stats.batches_in == 2
    nursery.cancel_scope.cancel()


async def test_fetch_and_paced_publish_deliver_everything(nursery) -> None:
    got: list[list[m.Message]] = [[], []]
    keys = [NodeKey.generate(), NodeKey.generate()]
    nets = [
        Network(k, NetConfig(mdns=False), lambda msg, now, s=sink: s.append(msg))
        for k, sink in zip(keys, got, strict=True)
    ]
    for n in nets:
        await nursery.start(n.run)
    await nets[1].connect(nets[0].addrs()[0])
    await wait_until(lambda: nets[0].mesh_peers(TOPIC) and nets[1].mesh_peers(TOPIC))

    blob = bytes(range(256)) * 4000

    async def provider(cid: str) -> bytes | None:
        return blob if cid == "bafkgood" else None

    nets[0].set_provider(provider)
    assert await nets[1].fetch_from(keys[0].node_id, "bafkgood") == blob
    assert await nets[1].fetch_from(keys[0].node_id, "bafkmissing") is None
    assert await nets[1].fetch_any("bafkgood") == blob

    # a burst far beyond py-libp2p's 32-RPC queue: pacing must deliver every message
    n = 300
    for i in range(n):
        await nets[0].publish(TOPIC, claim(keys[0], i + 1))
    await wait_until(lambda: len(got[1]) == n, 30)
    assert sorted(x.seq for x in got[1]) == list(range(1, n + 1))
    nursery.cancel_scope.cancel()
