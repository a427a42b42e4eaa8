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
    caps = {
        "cpus": 1,
        "mem_mb": 512,
        "disk_mb": 0,
        "gpus": [],
        "enforced": [],
        "executor": "local",
        "max_jobs": 1,
    }
    return m.encode(
        key, m.CLAIM, {"job": hashlib.sha256(b"j").digest(), "caps": caps}, seq, int(time.time() * 1000)
    )


async def test_gossip_and_fetches_share_one_mplex_connection(nursery) -> None:
    """Publishing while several large fetches stream over the same connection: every message and every byte
    arrives and the connection survives. (The race the write lock closes, a second writer consuming a Noise
    nonce while the first waits on a full socket buffer, needs a slow reader; loopback rarely produces it.)"""
    got: list[m.Message] = []
    keys = [NodeKey.generate(), NodeKey.generate()]
    nets = [
        Network(keys[0], NetConfig(mdns=False), lambda msg, now: None),
        Network(keys[1], NetConfig(mdns=False), lambda msg, now: got.append(msg)),
    ]
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


def test_own_record_is_built_once_per_interval(monkeypatch) -> None:
    built: list[object] = []

    def original(host) -> tuple[bytes, bool]:
        built.append(host)
        return b"record-%d" % len(built), True

    monkeypatch.setattr(patches, "_original_env", original)
    patches.forget()
    now = [1000.0]
    monkeypatch.setattr(patches.time, "monotonic", lambda: now[0])
    host_a, host_b = object(), object()
    assert patches.own_record(host_a) == (b"record-1", True)
    assert patches.own_record(host_a) == (b"record-1", False)  # reused
    assert patches.own_record(host_b) == (b"record-2", True)  # every host has its own
    now[0] += patches.OWN_RECORD_S + 0.1
    assert patches.own_record(host_a) == (b"record-3", True)  # looked up again (addresses may have changed)
    assert built == [host_a, host_b, host_a]
    patches.forget()


class _Seen:
    def __init__(self, ids: set[bytes]) -> None:
        self.ids = ids

    def has(self, msg_id: bytes) -> bool:
        return msg_id in self.ids


class _Msg:
    def __init__(self, data: bytes, topics: list[str]) -> None:
        self.data, self.topicIDs = data, topics


def test_seen_messages_are_dropped_before_a_task_is_spawned() -> None:
    pubsub = type("P", (), {})()
    pubsub.topic_ids = {TOPIC}
    pubsub._msg_id_constructor = lambda msg: hashlib.sha256(msg.data).digest()
    pubsub.seen_messages = _Seen({hashlib.sha256(b"old").digest()})
    assert patches.subscribed_and_unseen(pubsub, _Msg(b"new", [TOPIC]))
    assert not patches.subscribed_and_unseen(pubsub, _Msg(b"old", [TOPIC]))  # a duplicate: no push_msg task
    # not subscribed, as before
    assert not patches.subscribed_and_unseen(pubsub, _Msg(b"new", ["other-topic"]))


async def test_duplicates_spawn_no_push_task_in_a_triangle(nursery, monkeypatch) -> None:
    """Three fully connected nodes: each of A's messages reaches C twice (from A and through B); with the patch
    C runs ``push_msg`` about once per message, and every message is still delivered once."""
    from libp2p.pubsub.pubsub import Pubsub

    pushes: dict[int, int] = {}
    original = Pubsub.push_msg

    async def counting(self, forwarder, msg):  # type: ignore[no-untyped-def]
        pushes[id(self)] = pushes.get(id(self), 0) + 1
        await original(self, forwarder, msg)

    monkeypatch.setattr(Pubsub, "push_msg", counting)
    keys = [NodeKey.generate() for _ in range(3)]
    got: list[m.Message] = []
    nets = [
        Network(keys[0], NetConfig(mdns=False), lambda msg, now: None),
        Network(keys[1], NetConfig(mdns=False), lambda msg, now: None),
        Network(keys[2], NetConfig(mdns=False), lambda msg, now: got.append(msg)),
    ]
    for n in nets:
        await nursery.start(n.run)
    arrivals: dict[int, int] = {}
    check = Pubsub._is_subscribed_to_msg  # as installed when the nodes started

    def counting_check(self, msg):  # type: ignore[no-untyped-def]
        arrivals[id(self)] = arrivals.get(id(self), 0) + 1
        return check(self, msg)

    monkeypatch.setattr(Pubsub, "_is_subscribed_to_msg", counting_check)
    await nets[1].connect(nets[0].addrs()[0])
    await nets[2].connect(nets[0].addrs()[0])
    await nets[2].connect(nets[1].addrs()[0])
    with trio.fail_after(20):
        while not all(len(n.mesh_peers(TOPIC)) == 2 for n in nets):
            await trio.sleep(0.02)
    n_msgs = 40
    with trio.fail_after(30):
        for i in range(n_msgs):
            await nets[0].publish(TOPIC, claim(keys[0], i + 1))
            while len(got) < i + 1:  # one at a time: the second copy arrives after the first was handled
                await trio.sleep(0.005)
        while arrivals.get(id(nets[2].pubsub), 0) < 2 * n_msgs:  # the copies forwarded by B arrived too
            await trio.sleep(0.005)
    assert sorted(x.seq for x in got) == list(range(1, n_msgs + 1))
    c_pushes = pushes.get(id(nets[2].pubsub), 0)
    assert c_pushes <= n_msgs * 1.25, c_pushes  # without the patch: about 2 per message
    nursery.cancel_scope.cancel()


async def test_queued_rpcs_leave_in_one_write_and_parse_back() -> None:
    from libp2p.network.stream.exceptions import StreamReset
    from libp2p.pubsub.pb import rpc_pb2
    from libp2p.pubsub.rpc_queue import RpcQueue

    rpcs = [rpc_pb2.RPC(publish=[rpc_pb2.Message(data=b"m%d" % i, topicIDs=[TOPIC])]) for i in range(3)]
    queue = RpcQueue()
    for r in rpcs:
        queue.push(r)
    writes: list[bytes] = []
    dead: list[str] = []

    class Stream:
        async def write(self, data: bytes) -> None:
            writes.append(data)
            if len(writes) == 2:
                raise StreamReset("gone")

    pubsub = type("P", (), {"_handle_dead_peer": lambda self, p: dead.append(p)})()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(patches.send_queued, pubsub, "peerA", Stream(), queue)
            while not writes:
                await trio.sleep(0)
            queue.push(rpcs[0])  # queued later: a second write, which fails
    assert len(writes) == 2 and dead == ["peerA"]
    buf, parsed = writes[0], []
    while buf:  # the reader's framing: uvarint length, then the RPC
        n, shift, i = 0, 0, 0
        while True:
            b = buf[i]
            n |= (b & 0x7F) << shift
            shift, i = shift + 7, i + 1
            if b < 0x80:
                break
        parsed.append(rpc_pb2.RPC.FromString(buf[i : i + n]))
        buf = buf[i + n :]
    assert parsed == rpcs


def test_pending_queues_keep_messages_only_for_peers_not_yet_known() -> None:
    from types import SimpleNamespace

    router = SimpleNamespace(pubsub=SimpleNamespace(peer_topics={"t": {"a"}}), peer_protocol={"a": 1, "b": 1})
    queues = patches.PendingQueues(router)
    for peer in ("a", "b", "c"):
        queues[peer].append((0.0, "rpc"))
    # a: stream and subscriptions known (to other topics than the message's): nothing kept
    # b: a stream but no subscription yet, c: no stream yet: queued until they are known
    assert dict(queues) == {"b": [(0.0, "rpc")], "c": [(0.0, "rpc")]}


async def test_a_node_of_another_shard_gets_no_queue_of_this_shards_messages(nursery) -> None:
    """Two nodes serving different job topics (shards): the publisher's messages are neither sent to the other
    node nor queued for it (py-libp2p queued them, up to 100, and logged a warning per publish once full)."""
    keys = [NodeKey.generate(), NodeKey.generate(), NodeKey.generate()]
    got: list[m.Message] = []
    nets = [
        Network(keys[0], NetConfig(mdns=False, shards=[0]), lambda msg, now: None),
        Network(keys[1], NetConfig(mdns=False, shards=[0]), lambda msg, now: got.append(msg)),
        Network(keys[2], NetConfig(mdns=False, shards=[1]), lambda msg, now: None),
    ]
    for n in nets:
        await nursery.start(n.run)
    await nets[1].connect(nets[0].addrs()[0])
    await nets[2].connect(nets[0].addrs()[0])
    other = nets[2].peer_id
    with trio.fail_after(20):
        while not (
            nets[0].mesh_peers(TOPIC) and any(other in peers for peers in nets[0].pubsub.peer_topics.values())
        ):
            await trio.sleep(0.02)
    with trio.fail_after(30):
        for i in range(120):
            await nets[0].publish(TOPIC, claim(keys[0], i + 1))
        while len(got) < 120:
            await trio.sleep(0.01)
    assert other not in nets[0].router._pending_messages
    assert isinstance(nets[0].router._pending_messages, patches.PendingQueues)
    nursery.cancel_scope.cancel()
