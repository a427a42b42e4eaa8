"""The py-libp2p fixes of ``sandrun_p2p.net.patches``: mplex stays intact under concurrent writes, an unreadable
frame closes one connection (not the node), and sender records are verified once per peer and record."""

from __future__ import annotations

import hashlib
import time

import pytest
import trio

from sandrun_p2p.net import patches
from sandrun_p2p.net.host import NetConfig, Network
from sandrun_p2p.net.topics import job_topic
from sandrun_p2p.protocol import messages as m
from sandrun_p2p.protocol.identity import NodeKey

pytestmark = pytest.mark.timeout(90)

TOPIC = job_topic(0)


def claim(key: NodeKey, seq: int) -> bytes:
    caps = {"cpus": 1, "mem_mb": 512, "disk_mb": 0, "gpus": [], "enforced": [], "executor": "local", "max_jobs": 1}
    return m.encode(key, m.CLAIM, {"job": hashlib.sha256(b"j").digest(), "caps": caps}, seq, int(time.time() * 1000))


async def test_gossip_and_fetches_share_one_mplex_connection(nursery) -> None:
    """Publishing while several large fetches stream over the same connection: every message and every byte
    arrives and the connection survives. (The race the write lock closes, a second writer consuming a Noise
    nonce while the first waits on a full socket buffer, needs a slow reader; loopback rarely produces it.)"""
    got: list[m.Message] = []
    keys = [NodeKey.generate(), NodeKey.generate()]
    nets = [Network(keys[0], NetConfig(mdns=False), lambda msg, now: None),
            Network(keys[1], NetConfig(mdns=False), lambda msg, now: got.append(msg))]
    for n in nets:
        await nursery.start(n.run)
    await nets[1].connect(nets[0].addrs()[0])
    with trio.fail_after(10):
        while not (nets[0].mesh_peers(TOPIC) and nets[1].mesh_peers(TOPIC)):
            await trio.sleep(0.02)
    blob = hashlib.sha256(b"x").digest() * 40_000  # 1.28 MB: many Noise frames per fetch

    async def provider(cid: str) -> bytes | None:
        return blob

    nets[0].set_provider(provider)
    fetched: list[bytes | None] = []

    async def fetch() -> None:
        fetched.append(await nets[1].fetch_from(keys[0].node_id, "bafkblob"))

    with trio.fail_after(60):
        async with trio.open_nursery() as inner:
            for _ in range(4):
                inner.start_soon(fetch)
            for i in range(200):
                await nets[0].publish(TOPIC, claim(keys[0], i + 1))
        while len(got) < 200:
            await trio.sleep(0.02)
    assert fetched == [blob] * 4
    assert sorted(x.seq for x in got) == list(range(1, 201))
    assert nets[0].peer_id in nets[1].connected_peers()
    nursery.cancel_scope.cancel()


class _Rpc:
    def __init__(self, record: bytes) -> None:
        self.senderRecord = record

    def HasField(self, name: str) -> bool:  # noqa: N802 (protobuf's name)
        return bool(self.senderRecord)


def test_sender_records_are_verified_once_per_peer_and_record(monkeypatch) -> None:
    calls: list[tuple[str, bytes]] = []
    verdict = {"ok": True}

    def original(msg, host, peer_id) -> bool:
        calls.append((peer_id, msg.senderRecord))
        return verdict["ok"]

    monkeypatch.setattr(patches, "_original", original)
    patches.forget()
    assert patches.consume_signed_record(_Rpc(b"rec1"), None, "peerA")
    assert patches.consume_signed_record(_Rpc(b"rec1"), None, "peerA")  # cached
    assert patches.consume_signed_record(_Rpc(b"rec1"), None, "peerB")  # another peer: verified
    assert patches.consume_signed_record(_Rpc(b"rec2"), None, "peerA")  # a new record: verified
    assert calls == [("peerA", b"rec1"), ("peerB", b"rec1"), ("peerA", b"rec2")]
    verdict["ok"] = False
    assert not patches.consume_signed_record(_Rpc(b"bad"), None, "peerC")
    assert not patches.consume_signed_record(_Rpc(b"bad"), None, "peerC")  # a failure is never remembered
    assert len(calls) == 5
    assert patches.consume_signed_record(_Rpc(b""), None, "peerD")  # no record: nothing to check
    later = time.monotonic() + patches.REFRESH_S + 1
    monkeypatch.setattr(patches.time, "monotonic", lambda: later)
    verdict["ok"] = True
    assert patches.consume_signed_record(_Rpc(b"rec1"), None, "peerB")  # re-consumed after REFRESH_S
    assert len(calls) == 6
    patches.forget()
