"""The node's libp2p side: a Noise-only TCP host, gossipsub with protocol validators, direct fetch streams.

What differs from py-libp2p 0.8's defaults, and why (see shared/notes/networking.md):

* security is Noise only (the default host also accepts plaintext, where a peer can claim any id);
* one connection per peer (dials then take ~10 ms instead of a fixed 250 ms);
* mplex rather than yamux (py-libp2p's yamux sends a window-update frame, encrypted and written on its own,
  for most frames it receives: about 40% more frames per gossip message), with its writes serialised per
  connection, and the signed peer record on every pubsub RPC verified once per peer and record, not on
  every RPC (both in :mod:`.patches`);
* gossipsub heartbeat 1 s, explicit degrees, v1.1 first (v1.2 doubles CPU per message), strict
  signing, message id = SHA-256 of the payload, spam protection raised far above the protocol's own
  rate so our own publishes are never dropped, peer-score thresholds set (defaults are -inf);
* every topic validator runs :func:`protocol.messages.decode_gossip` (one message or a batch of one sender's
  messages) with a replay guard and checks that the gossip signer is the protocol sender; rejected messages
  cost the forwarding peer score (P4); :meth:`Network.publish_many` packs what a node has queued into batches;
* accepted messages are handed to the node from the validator, not through the 32-slot subscription
  channel that drops when full; outbound publishes wait while any peer's send queue is nearly full
  (py-libp2p drops silently past 32 queued RPCs);
* bootstrap peers are re-dialled with exponential backoff; every remote call has a timeout;
* leaving :meth:`Network.run` always closes the host (a half-closed host keeps peers waiting 40 s).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.score import ScoreParams, TopicScoreParams
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.tools.anyio_service import background_trio_service

from ..protocol import messages as m
from ..protocol.errors import ProtocolError
from ..protocol.identity import NodeKey
from . import fetch as fetchproto
from . import patches
from . import peers as peersproto
from .keys import libp2p_key_pair, node_id_of_peer, peer_id_of_node
from .topics import kinds_allowed, topics_for_shards

log = logging.getLogger("sandrun_p2p.net")

GOSSIP_PROTOCOLS = ("/meshsub/1.1.0", "/meshsub/1.0.0")


@dataclass
class NetConfig:
    """Network settings of one node (every field has a safe default for a local network)."""

    listen: list[str] = field(default_factory=lambda: ["/ip4/127.0.0.1/tcp/0"])
    bootstrap: list[str] = field(default_factory=list)
    mdns: bool = True
    shards: list[int] = field(default_factory=lambda: [0])
    degree: int = 6
    degree_low: int = 4
    degree_high: int = 12
    heartbeat_s: int = 1
    muxer: str = "MPLEX"
    max_msgs_per_topic_per_s: float = 5000.0
    call_timeout_s: float = 10.0
    queue_high_water: int = 24  # publish waits while a peer's outbound queue is this full (limit 32)
    pacing_timeout_s: float = 5.0
    max_fetch_bytes: int = 512 * 1024 * 1024
    target_peers: int = 12  # peer exchange dials learned peers until this many are connected
    peer_exchange_s: float = 3.0
    backoff_min_s: float = 0.25
    backoff_max_s: float = 30.0
    # peer scoring (P4 invalid messages is what the validators feed)
    invalid_weight: float = 10.0
    invalid_cap: float = 1000.0
    invalid_decay: float = 0.98
    gossip_threshold: float = -50.0
    publish_threshold: float = -100.0
    graylist_threshold: float = -200.0


def validate_multiaddr(text: str, *, need_peer: bool = False) -> multiaddr.Multiaddr:
    """Parse a multiaddr given by the operator; ValueError with a clear message when it is not one."""
    try:
        ma = multiaddr.Multiaddr(text)
    except Exception as e:
        raise ValueError(f"{text!r} is not a multiaddr ({e})") from None
    if need_peer:
        try:
            info_from_p2p_addr(ma)
        except Exception:
            raise ValueError(f"bootstrap address {text!r} must end with /p2p/<peer id>") from None
    return ma


@dataclass
class NetStats:
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    published: int = 0
    batches_out: int = 0  # gossip payloads that carried more than one message
    batches_in: int = 0
    paced_waits: int = 0
    pacing_timeouts: int = 0
    fetch_served: int = 0
    fetch_requests: int = 0
    stream_retries: int = 0  # fetch streams opened on a second try (see Network._open_fetch_stream)


class Network:
    """One node's libp2p host and gossip; run it with :meth:`run` inside a nursery.

    ``on_message(msg, now)`` is called (synchronously, from the validator) for every message that passed
    the protocol decoder, including this node's own publishes; if it raises ``ProtocolError`` the
    message is rejected (not forwarded, and the forwarding peer's score pays).
    """

    def __init__(
        self,
        key: NodeKey,
        cfg: NetConfig,
        on_message: Callable[[m.Message, float], None],
        *,
        guard: m.ReplayGuard | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self.cfg = cfg
        self.on_message = on_message
        self.guard = guard or m.ReplayGuard()
        self.clock = clock
        self.stats = NetStats()
        self.host: Any = None
        self.pubsub: Any = None
        self.router: Any = None
        self.peer_id = peer_id_of_node(key.node_id)
        self._provider: fetchproto.Provider | None = None
        self._publish_lock = trio.Lock()
        self._stuck: dict[Any, float] = {}  # peer -> trio time until which pacing ignores it
        self._ready = trio.Event()
        self._topics = topics_for_shards(cfg.shards)
        self._bootstrap = [validate_multiaddr(b, need_peer=True) for b in cfg.bootstrap]
        self._listen = [validate_multiaddr(a) for a in cfg.listen]

    # ------------------------------------------------------------------ lifecycle

    def _score_params(self) -> ScoreParams:
        c = self.cfg
        return ScoreParams(
            p1_time_in_mesh=TopicScoreParams(weight=0.01, cap=10.0, decay=1.0),
            p2_first_message_deliveries=TopicScoreParams(weight=0.1, cap=10.0, decay=0.9),
            p4_invalid_messages=TopicScoreParams(
                weight=c.invalid_weight, cap=c.invalid_cap, decay=c.invalid_decay
            ),
            p5_behavior_penalty_weight=1.0,
            p5_behavior_penalty_threshold=5.0,
            p5_behavior_penalty_decay=0.9,
            p7_ip_colocation_weight=0.0,  # local networks put every peer on one address
            publish_threshold=c.publish_threshold,
            gossip_threshold=c.gossip_threshold,
            graylist_threshold=c.graylist_threshold,
            accept_px_threshold=0.0,
        )

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start the host and gossip, report ready through ``task_status``, run until cancelled, then close."""
        c = self.cfg
        patches.install()
        kp = libp2p_key_pair(self.key)
        host = new_host(
            key_pair=kp,
            sec_opt={
                NOISE_PROTOCOL_ID: NoiseTransport(kp, noise_privkey=create_x25519_key_pair().private_key)
            },
            muxer_preference=c.muxer,  # type: ignore[arg-type]
            listen_addrs=self._listen,
            enable_mDNS=c.mdns,
            connection_config=ConnectionConfig(max_connections_per_peer=1),
        )
        router = GossipSub(
            protocols=list(GOSSIP_PROTOCOLS),
            degree=c.degree,
            degree_low=c.degree_low,
            degree_high=c.degree_high,
            heartbeat_interval=c.heartbeat_s,
            heartbeat_initial_delay=0.1,
            prune_back_off=10,
            score_params=self._score_params(),
            spam_protection_enabled=True,
            max_messages_per_topic_per_second=c.max_msgs_per_topic_per_s,
        )
        patches.quiet_pending(router)
        # the inbound RPC limit stays at 1 MiB: one RPC batches many messages (each capped by the decoder)
        pubsub = Pubsub(
            host,
            router,
            strict_signing=True,
            msg_id_constructor=lambda msg: hashlib.sha256(msg.data).digest(),
        )
        self.host, self.pubsub, self.router = host, pubsub, router
        try:
            async with (
                host.run(listen_addrs=self._listen),
                trio.open_nursery() as nursery,
                background_trio_service(pubsub),
                background_trio_service(router),
            ):
                if True:
                    await pubsub.wait_until_ready()
                    for t in self._topics:
                        pubsub.set_topic_validator(t, self._validator(t), False)
                        sub = await pubsub.subscribe(t)
                        nursery.start_soon(self._drain, sub)
                    host.set_stream_handler(
                        fetchproto.FETCH_PROTOCOL, fetchproto.make_handler(self._serve, c.call_timeout_s)
                    )
                    host.set_stream_handler(
                        peersproto.PEERS_PROTOCOL,
                        peersproto.make_handler(self._peer_entries, c.call_timeout_s),
                    )
                    for ma in self._bootstrap:
                        nursery.start_soon(self._keep_connected, ma)
                    nursery.start_soon(self._peer_exchange)
                    self._ready.set()
                    log.info("net: listening on %s", " ".join(self.addrs()))
                    task_status.started()
                    await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await host.close()
            log.info("net: host closed")

    async def wait_ready(self) -> None:
        await self._ready.wait()

    # -------------------------------------------------------------------- gossip in

    def _validator(self, topic: str) -> Callable[[ID, Any], bool]:
        allowed = kinds_allowed(topic)

        def validate(forwarder: ID, msg: Any) -> bool:
            try:
                decoded = m.decode_gossip(msg.data, self.guard, self.clock())
                for d in decoded:
                    if d.kind not in allowed:
                        raise ProtocolError("wrong-topic", f"{d.kind} is not carried on {topic}")
                signer = node_id_of_peer(ID(msg.from_id))
                if signer != decoded[0].sender:  # a batch holds one sender's messages only
                    raise ProtocolError("wrong-key", "gossip signer is not the protocol sender")
            except ProtocolError as e:
                self._reject(e.reason, forwarder, e)
                return False
            except Exception as e:  # never let a validator raise into pubsub
                self._reject("error", forwarder, e)
                return False
            if len(decoded) > 1:
                self.stats.batches_in += 1
            refused: ProtocolError | None = None
            for d in decoded:
                try:
                    self.on_message(d, self.clock())
                    self.stats.accepted += 1
                except ProtocolError as e:  # the node's rules refused it (bad spec, wrong shard bits...)
                    refused = refused or e
                except Exception:
                    log.exception("net: message handler failed for %s", d.kind)
            if refused is not None:  # the others stay delivered here; the payload is not forwarded
                self._reject(refused.reason, forwarder, refused)
                return False
            return True

        return validate

    def _reject(self, reason: str, forwarder: ID, err: Exception) -> None:
        self.stats.rejected[reason] = self.stats.rejected.get(reason, 0) + 1
        log.info("net: rejected message from %s: %s", forwarder, err)

    async def _drain(self, sub: Any) -> None:
        """Messages reach the node from the validator; keep the subscription channel empty."""
        while True:
            await sub.get()

    # ------------------------------------------------------------------- gossip out

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish one signed protocol message, waiting first while any peer's outbound queue is nearly full."""
        await self._ready.wait()
        async with self._publish_lock:
            await self._pace()
            await self.pubsub.publish(topic, data)
            self.stats.published += 1

    async def publish_many(self, topic: str, items: list[bytes]) -> None:
        """Publish this node's encoded messages on one topic, in order, as few gossip payloads as the size cap
        allows (:func:`protocol.messages.pack`); each payload is paced like :meth:`publish`."""
        payloads = m.pack(items)
        for payload in payloads:
            await self.publish(topic, payload)
        self.stats.batches_out += sum(1 for x in payloads if m.is_batch(x))

    async def _pace(self) -> None:
        """Wait while a peer's outbound queue is nearly full (py-libp2p drops past 32 RPCs). A peer whose queue
        stays full for a whole ``pacing_timeout_s`` is treated as stuck and ignored for a while, so one dead or
        slow peer cannot hold back everybody else's messages."""
        queues = getattr(self.pubsub, "peer_queues", {})
        now = trio.current_time()
        deadline = now + self.cfg.pacing_timeout_s
        waited = False
        while True:
            full = [
                p
                for p, q in list(queues.items())
                if len(q) >= self.cfg.queue_high_water and self._stuck.get(p, 0) < trio.current_time()
            ]
            if not full:
                break
            if trio.current_time() >= deadline:
                self.stats.pacing_timeouts += 1
                for p in full:
                    self._stuck[p] = trio.current_time() + 10.0
                log.warning(
                    "net: %d peer(s) did not drain their send queue in %.1fs; not waiting for them for 10s",
                    len(full),
                    self.cfg.pacing_timeout_s,
                )
                break
            waited = True
            await trio.sleep(0.002)
        if waited:
            self.stats.paced_waits += 1

    # -------------------------------------------------------------------- peers

    def addrs(self) -> list[str]:
        return [str(a) for a in self.host.get_addrs()] if self.host else []

    def connected_peers(self) -> list[ID]:
        return list(self.host.get_connected_peers()) if self.host else []

    def mesh_peers(self, topic: str) -> list[ID]:
        return list((self.router.mesh or {}).get(topic, ())) if self.router else []

    def score(self, peer: ID) -> float:
        scorer = getattr(self.router, "scorer", None)
        return float(scorer.score(peer, self._topics)) if scorer else 0.0

    def peer_summary(self) -> list[dict[str, Any]]:
        out = []
        for p in self.connected_peers():
            nid = node_id_of_peer(p)
            out.append(
                {
                    "peer_id": p.to_base58(),
                    "node_id": nid.hex() if nid else None,
                    "score": round(self.score(p), 3),
                    "mesh_topics": sorted(
                        t for t in self._topics if p in (self.router.mesh or {}).get(t, ())
                    ),
                }
            )
        return out

    async def connect(self, ma: multiaddr.Multiaddr | str) -> None:
        """Dial a peer (``.../p2p/<id>`` address) within the call timeout."""
        if isinstance(ma, str):
            ma = validate_multiaddr(ma, need_peer=True)
        info = info_from_p2p_addr(ma)
        with trio.fail_after(self.cfg.call_timeout_s):
            await self.host.connect(info)

    async def _keep_connected(self, ma: multiaddr.Multiaddr) -> None:
        """Stay connected to one bootstrap peer, re-dialling with exponential backoff and jitter."""
        info = info_from_p2p_addr(ma)
        rng = random.Random(hash((str(ma), self.key.node_id)))
        delay = self.cfg.backoff_min_s
        while True:
            if info.peer_id not in self.host.get_connected_peers():
                try:
                    await self.connect(ma)
                    log.info("net: connected to bootstrap %s", ma)
                    delay = self.cfg.backoff_min_s
                except Exception as e:
                    log.info(
                        "net: bootstrap %s unreachable (%s); retry in %.2fs", ma, type(e).__name__, delay
                    )
                    await trio.sleep(delay * (0.5 + rng.random()))
                    delay = min(delay * 2, self.cfg.backoff_max_s)
                    continue
            await trio.sleep(1.0)

    def _peer_entries(self) -> list[tuple[bytes, list[str]]]:
        ps = self.host.get_peerstore()
        out = []
        for p in self.connected_peers():
            try:
                addrs = [str(a) for a in ps.addrs(p)]
            except Exception:
                continue
            if addrs:
                out.append((p.to_bytes(), addrs))
        return out

    async def _ask_peers(self, src: ID) -> list[tuple[bytes, list[str]]]:
        """One peer's list of its connected peers and their addresses ([] when it cannot answer in time)."""
        try:
            with trio.fail_after(self.cfg.call_timeout_s):
                stream = await self.host.new_stream(src, [peersproto.PEERS_PROTOCOL])
                try:
                    return await peersproto.read_peers(stream)
                finally:
                    with trio.move_on_after(1), contextlib.suppress(Exception):
                        await stream.close()
        except Exception as e:
            log.debug("net: peer exchange with %s failed: %s", src, e)
            return []

    def _remember(self, entries: list[tuple[bytes, list[str]]]) -> None:
        """Keep every address learned (a direct stream to that peer can dial it)."""
        me = self.peer_id.to_bytes()
        ps = self.host.get_peerstore()
        for pid, addrs in entries:
            if pid != me:
                with contextlib.suppress(Exception):
                    ps.add_addrs(ID(pid), [multiaddr.Multiaddr(a) for a in addrs], 3600)

    def _knows(self, pid: ID) -> bool:
        if pid in self.host.get_connected_peers():
            return True
        try:
            return bool(self.host.get_peerstore().addrs(pid))
        except Exception:
            return False

    async def _find(self, pid: ID) -> None:
        """Ask connected peers, one at a time, for their peer lists until ``pid``'s address is known (on demand:
        a job's origin may not be among this node's peers yet)."""
        for src in self.connected_peers():
            if self._knows(pid):
                return
            self._remember(await self._ask_peers(src))

    async def _peer_exchange(self) -> None:
        """Ask a random connected peer for its peers; dial new ones (smaller peer id dials) up to the target."""
        rng = random.Random(self.key.node_id)
        me = self.peer_id.to_bytes()
        while True:
            await trio.sleep(self.cfg.peer_exchange_s * (0.5 + rng.random()))
            peers = self.connected_peers()
            if not peers or len(peers) >= self.cfg.target_peers:
                continue
            entries = await self._ask_peers(rng.choice(peers))
            if not entries:
                continue
            connected = {p.to_bytes() for p in self.connected_peers()}
            self._remember(entries)
            for pid, addrs in entries:
                if len(connected) >= self.cfg.target_peers:
                    break
                if pid == me or pid in connected or me > pid:
                    continue
                for a in addrs:
                    try:
                        await self.connect(a if "/p2p/" in a else f"{a}/p2p/{ID(pid).to_base58()}")
                        connected.add(pid)
                        break
                    except Exception as e:
                        log.debug("net: dial %s failed: %s", a, e)

    # ---------------------------------------------------------------- direct streams

    def set_provider(self, provider: fetchproto.Provider) -> None:
        """What this node serves on the fetch protocol (``provider(cid) -> bytes | None``)."""
        self._provider = provider

    async def _serve(self, cid: str) -> bytes | None:
        self.stats.fetch_served += 1
        return await self._provider(cid) if self._provider else None

    async def fetch_from(self, node_id: bytes, cid: str) -> bytes | None:
        """Ask one peer (by node id) for ``cid``; None when it does not have it or cannot be reached in time."""
        if node_id == self.key.node_id:
            return None
        self.stats.fetch_requests += 1
        pid = peer_id_of_node(node_id)
        if not self._knows(pid):
            with trio.move_on_after(self.cfg.call_timeout_s):
                await self._find(pid)
        try:
            stream = await self._open_fetch_stream(pid, cid)
            try:
                with trio.fail_after(self.cfg.call_timeout_s + self.cfg.max_fetch_bytes / 50e6):
                    return await fetchproto.read_response(stream, self.cfg.max_fetch_bytes)
            finally:
                with trio.move_on_after(1):
                    with contextlib.suppress(Exception):
                        await stream.close()
        except Exception as e:
            log.info("net: fetch %s from %s failed: %s: %s", cid, pid, type(e).__name__, e)
            return None

    async def _open_fetch_stream(self, pid: ID, cid: str) -> Any:
        """A fetch stream to ``pid`` with the request for ``cid`` sent (:func:`fetchproto.open_pipelined`), with
        one more try when the protocol handshake on it fails: py-libp2p loses one now and then (mplex under load;
        the first stream of a freshly dialled QUIC connection, about one in three on loopback:
        ``tests/net/test_quic.py``). A timeout or a refused protocol is not retried."""
        request = fetchproto.encode_request(cid)
        for attempt in (1, 2):
            try:
                with trio.fail_after(self.cfg.call_timeout_s):
                    return await fetchproto.open_pipelined(
                        self.host.get_network(), pid, fetchproto.FETCH_PROTOCOL, request
                    )
            except (trio.TooSlowError, fetchproto.ProtocolRefused):
                raise
            except Exception as e:
                if attempt == 2:
                    raise
                self.stats.stream_retries += 1
                log.info("net: stream to %s failed (%s: %s); trying once more", pid, type(e).__name__, e)
        raise AssertionError("unreachable")

    async def fetch_any(self, cid: str, prefer: list[bytes] = ()) -> bytes | None:  # type: ignore[assignment]
        """Ask ``prefer`` first, then every connected peer, one at a time, until one has ``cid``; then ``prefer``
        once more."""
        order = list(dict.fromkeys(prefer))
        for p in self.connected_peers():
            nid = node_id_of_peer(p)
            if nid and nid not in order:
                order.append(nid)
        for nid in order:
            data = await self.fetch_from(nid, cid)
            if data is not None:
                return data
        # the preferred peers (a job's origin) hold it: a stream that failed to open there (py-libp2p's mplex
        # under load loses a multistream handshake now and then) is worth one more try before the job is released
        for nid in dict.fromkeys(prefer):
            data = await self.fetch_from(nid, cid)
            if data is not None:
                return data
        return None
