"""Fixes to py-libp2p 0.8.1 that :class:`~.host.Network` installs when it starts (idempotent).

1. mplex writes are serialised per connection. The library's ``Mplex.write_to_stream`` has no lock: when two
   tasks write on one connection (the gossip stream and a fetch stream), Noise can encrypt frame n+1 before
   frame n reaches the socket, and the peer's decryption fails ("Failed authentication of message").
   Yamux takes a lock here; mplex now does too.
2. A frame mplex cannot read (one that fails Noise authentication, say) closes that connection. The library
   only handles connection errors there; any other exception escaped the host's task group and stopped the
   whole node, so one bad peer could take a node down.
3. The signed peer record on pubsub RPCs is verified once per peer and record. Each RPC a peer sends carries
   the same ``senderRecord`` (a signed envelope of its addresses), and the receiver parsed it, verified its
   Ed25519 signature and rewrote the peerstore on every RPC: about 1.3 ms of CPU per RPC, a third of what a
   gossip delivery cost. :func:`consume_signed_record` remembers, per peer, the exact record bytes it last
   accepted and skips the work while the same bytes arrive again within ``REFRESH_S`` (then it is consumed
   again, so the peerstore's 2-hour TTL keeps being renewed). A changed or new record is verified as before;
   a record that fails verification is never remembered.
4. A message already seen is dropped where the RPC is read, before a task is spawned for it. The library
   spawned a managed task per message of every RPC (a ``FunctionTask`` with a uuid4, a walk of the whole task
   tree for its parent, a formatted name) and only then, in ``push_msg``, returned on the seen-cache; in a
   mesh most deliveries are such duplicates. ``push_msg`` checks nothing with side effects before the
   seen-cache, so dropping them earlier changes nothing else.
5. The node's own signed peer record attached to outgoing RPCs is built at most every ``OWN_RECORD_S``.
   ``env_to_send_in_RPC`` listed and re-encoded the host's addresses on every forwarded message (~75 us);
   the record only changes when the listen addresses do.
6. RPCs queued for one peer leave in one write. The library's per-peer sending loop wrote each queued RPC on
   its own: one mplex frame, one Noise frame, one ``send`` syscall (and on loopback the receiver's TCP work)
   per RPC. :func:`send_queued` takes what else is queued when it wakes (up to ``COALESCE_BYTES``) and writes
   the same length-prefixed RPCs back to back in one stream write; the receiver reads a byte stream, so the
   wire format is unchanged.
7. Frames are read through a buffer (:mod:`.buffered_read`): the pubsub read loop's RPCs, mplex's frames
   on the Noise session and Noise's packets on the TCP connection. The library read every uvarint prefix one
   byte at a time, each byte an awaited read through several layers with locks and timeouts, and each Noise
   packet with two socket reads.
8. Messages are queued for a peer only until its subscriptions arrive (:class:`PendingQueues`). The library's
   ``GossipSub.publish`` queued every message for each connected peer not subscribed to its topic (meant
   for the moment between a connection and the peer's subscriptions): in a sharded mesh every message of
   one job topic was queued for each node serving another, up to 100 per peer for 30 s, the queue pruned
   (a pass over it) on every publish, and, once full, a warning logged per publish and peer (~50 lines per
   agent per 100 jobs in the benchmark). A peer whose subscriptions have arrived and do not include the
   topic does not want the message, as everywhere else in gossipsub.
"""

from __future__ import annotations

import time
from typing import Any

import libp2p.peer.peerstore as _peerstore
import libp2p.pubsub.gossipsub as _gossipsub
import libp2p.pubsub.pubsub as _pubsub
import trio
from libp2p.network.stream.exceptions import StreamClosed, StreamReset
from libp2p.pubsub import utils as _utils
from libp2p.security.noise.io import NoisePacketReadWriter
from libp2p.stream_muxer.mplex.constants import MAX_MESSAGE_SIZE
from libp2p.stream_muxer.mplex.exceptions import MplexUnavailable
from libp2p.stream_muxer.mplex.mplex import Mplex
from libp2p.utils.varint import encode_uvarint

from .buffered_read import read_mplex_frame, read_noise_packet, read_prefixed_limited

#: Seconds a verified record is trusted without checking it again.
REFRESH_S = 600.0
#: Seconds this node's own outgoing record is reused before it is looked up again.
OWN_RECORD_S = 5.0
#: Most bytes of queued RPCs written to one peer in one stream write.
COALESCE_BYTES = 256 * 1024
#: Peers remembered at most (a bounded cache; the oldest entries go first).
MAX_PEERS = 4096

_original = _utils.maybe_consume_signed_record
_seen: dict[Any, tuple[bytes, float]] = {}


def consume_signed_record(msg: Any, host: Any, peer_id: Any) -> bool:
    """Drop-in for ``libp2p.pubsub.utils.maybe_consume_signed_record`` that skips records already verified."""
    if not msg.HasField("senderRecord"):
        return True
    record = msg.senderRecord
    now = time.monotonic()
    hit = _seen.get(peer_id)
    if hit is not None and hit[0] == record and now - hit[1] < REFRESH_S:
        return True
    ok = _original(msg, host, peer_id)
    if ok:
        if len(_seen) >= MAX_PEERS:
            _seen.pop(next(iter(_seen)))
        _seen[peer_id] = (bytes(record), now)
    else:
        _seen.pop(peer_id, None)
    return ok


_original_env = _peerstore.env_to_send_in_RPC
_own: dict[Any, tuple[bytes, float]] = {}


def own_record(host: Any) -> tuple[bytes, bool]:
    """Drop-in for ``libp2p.peer.peerstore.env_to_send_in_RPC`` that reuses the record for ``OWN_RECORD_S``."""
    now = time.monotonic()
    hit = _own.get(host)
    if hit is not None and now - hit[1] < OWN_RECORD_S:
        return hit[0], False
    env, created = _original_env(host)
    if len(_own) >= MAX_PEERS:
        _own.pop(next(iter(_own)))
    _own[host] = (env, now)
    return env, created


def subscribed_and_unseen(self: Any, msg: Any) -> bool:
    """Replaces ``Pubsub._is_subscribed_to_msg``, the read loop's check before it spawns ``push_msg``: also
    False for a message already in the seen-cache (``push_msg`` would return on it without effect)."""
    if not any(topic in self.topic_ids for topic in msg.topicIDs):
        return False
    return not self.seen_messages.has(self._msg_id_constructor(msg))


async def send_queued(self: Any, peer_id: Any, stream: Any, queue: Any) -> None:
    """Replaces ``Pubsub.handle_sending_messages``: the per-peer sending loop, writing everything queued at once."""
    try:
        while True:
            rpc = await queue.pop()
            if rpc is None:
                return  # the queue was closed
            data = [rpc.SerializeToString()]
            size = len(data[0])
            while size < COALESCE_BYTES and (more := queue._queue.pop()) is not None:
                data.append(more.SerializeToString())
                size += len(data[-1])
            try:
                await stream.write(b"".join(encode_uvarint(len(d)) + d for d in data))
            except (StreamClosed, StreamReset):
                _pubsub.logger.debug("Fail to write message to %s: stream closed or reset", peer_id)
                self._handle_dead_peer(peer_id)
                return
    except Exception:
        _pubsub.logger.debug("sending loop for %s terminated with error", peer_id)
        self._handle_dead_peer(peer_id)


_mplex_write = Mplex.write_to_stream


async def _locked_write(self: Any, data: bytes) -> None:
    lock = self.__dict__.get("_sandrun_write_lock")
    if lock is None:
        lock = self.__dict__["_sandrun_write_lock"] = trio.Lock()
    async with lock:
        await _mplex_write(self, data)


async def _read_or_close(self: Any) -> tuple[int, int, bytes]:
    try:
        return await read_mplex_frame(self, MAX_MESSAGE_SIZE)
    except MplexUnavailable:
        raise
    except Exception as e:  # e.g. NoiseInvalidMessage: close this connection, not the node
        raise MplexUnavailable(f"unreadable frame ({type(e).__name__}: {e})") from e


class _Sink(list):  # type: ignore[type-arg]
    """A queue that keeps nothing."""

    def append(self, item: Any) -> None:
        pass


_SINK = _Sink()


class PendingQueues(dict):  # type: ignore[type-arg]
    """``GossipSub._pending_messages`` (a ``defaultdict(list)`` in the library): a peer gets a queue while it has
    no gossip stream yet or none of its subscriptions has arrived; for a peer with both a new queue is a sink
    (see item 8)."""

    def __init__(self, router: Any) -> None:
        super().__init__()
        self.router = router

    def __missing__(self, peer_id: Any) -> list:  # type: ignore[type-arg]
        pubsub = self.router.pubsub
        if (
            pubsub is not None
            and peer_id in self.router.peer_protocol
            and any(peer_id in peers for peers in pubsub.peer_topics.values())
        ):
            return _SINK
        queue: list = []  # type: ignore[type-arg]
        self[peer_id] = queue
        return queue


def quiet_pending(router: Any) -> None:
    """Give ``router`` (a GossipSub) the queues of item 8, keeping any it holds."""
    if not isinstance(router._pending_messages, PendingQueues):
        queues = PendingQueues(router)
        queues.update(router._pending_messages)
        router._pending_messages = queues


def install() -> None:
    """Apply the fixes of the module docstring."""
    Mplex.write_to_stream = _locked_write  # type: ignore[method-assign]
    Mplex.read_message = _read_or_close  # type: ignore[method-assign]
    _pubsub.maybe_consume_signed_record = consume_signed_record
    _gossipsub.maybe_consume_signed_record = consume_signed_record
    _pubsub.Pubsub._is_subscribed_to_msg = subscribed_and_unseen  # type: ignore[method-assign]
    _pubsub.env_to_send_in_RPC = own_record
    _pubsub.Pubsub.handle_sending_messages = send_queued  # type: ignore[method-assign]
    _pubsub.read_varint_prefixed_bytes_limited = read_prefixed_limited
    NoisePacketReadWriter.read_msg = read_noise_packet  # type: ignore[method-assign]
    _gossipsub.env_to_send_in_RPC = own_record


def forget() -> None:
    """Clear the caches (tests)."""
    _seen.clear()
    _own.clear()
