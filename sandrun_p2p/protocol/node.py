"""NodeCore: the whole protocol of one node as a deterministic state machine.

``handle(event, now) -> list[Action]``; ``next_deadline()`` says when to feed a :class:`Tick`.
No I/O, no clock, no randomness: the trio agent and the simulator drive the same object.

Per job, every node of the job's shard keeps the same bookkeeping (a *view*): claims,
commitments, reveals. From it each node derives, by the rules in :mod:`claiming` and
:mod:`verification`, who executes (the winners), when it should claim as a fallback, when
to reveal, and whether the result is accepted. Deadlines use local receipt times.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from . import claiming
from . import messages as m
from .claiming import Capabilities
from .encoding import sha256
from .errors import ProtocolError
from .events import (
    Action,
    CancelExecution,
    CapabilitiesChanged,
    ChainUpdate,
    Event,
    ExecutionDone,
    ExecutionFailed,
    JobEvent,
    Publish,
    Received,
    RequestGrant,
    SetTimer,
    Start,
    StartExecution,
    SubmitJob,
    SubmitTx,
    Tick,
)
from .jobspec import PAY_VOUCHER, JobSpec, Manifest
from .memo import remember
from .verification import Evidence, EvidenceKind, Outcome, commitment, decide, reveal_matches

# Job phases as this node sees them.
OPEN = "open"  # announced, executing or waiting for commitments
REVEALING = "revealing"
ACCEPTED = "accepted"
FAILED = "failed"
SETTLED = "settled"
REFUNDED = "refunded"
FINAL = (SETTLED, REFUNDED)
#: Observers of an equivocation post it in turns (see ``NodeCore._poster_turn``); later ones share this turn.
MAX_POSTER_TURN = 8
#: Timer key of the sweep that forgets decided jobs the chain never closed (job ids are 32 bytes).
_SWEEP = b""
#: Tag of a fallback-claim wake-up's timer key, ``(at, job, _FALLBACK)`` (other keys are ``(at, job)``): one that
#: finds at least k valid claims has nothing to do and is dropped (see ``NodeCore._fallback_moot``).
_FALLBACK = 1
T = TypeVar("T")

_RX_STAT = {
    k: f"rx_{k}"
    for k in (m.ADVERT, m.JOB, m.CLAIM, m.RELEASE, m.COMMIT, m.REVEAL, m.CHECKPOINT, m.EVIDENCE, m.GRANT)
}

#: The reveals passed to :func:`decide` when there are none (read only).
_NO_REVEALS: dict[bytes, bytes] = {}

#: Forgetting times are rounded up to multiples of forget_after / _FORGET_GRID (see NodeCore._forget_time).
_FORGET_GRID = 4

#: A node's wake-up queue is purged of those that would do nothing when it grows past twice its size after the
#: last purge (amortised O(1) per wake-up), and never below this size.
_PURGE_MIN = 64

#: Eligible pools a node keeps, one per (manifest, shard) seen recently (oldest dropped first).
_POOL_CACHE_SIZE = 64


class _ParseCache(Generic[T]):
    """``parse(d)`` for recently seen message parts, keyed by the identity of ``d`` (bounded, oldest dropped).

    Each entry keeps its dict alive, so an id cannot be reused while cached. In one process (the simulator)
    every node of a shard receives the same decoded message, so a part is parsed once instead of once per
    node; elsewhere this only misses. Parsing is a pure function of the dict, and bodies are never mutated.
    """

    def __init__(self, parse: Callable[[dict], T], size: int = 1024) -> None:
        self.parse = parse
        self.size = size
        self.entries: OrderedDict[int, tuple[dict, T]] = OrderedDict()  # (a bounded memo table: .memo)

    def __call__(self, d: dict) -> T:
        hit = self.entries.get(id(d))
        if hit is not None and hit[0] is d:
            return hit[1]
        value = self.parse(d)  # may raise: nothing is cached then
        self._put(d, value)
        return value

    def prime(self, d: dict, value: T) -> None:
        """Cache ``value`` as the parse of ``d`` if it is one (``parse(d) == value``): a node that built ``d``
        from ``value`` lets later parses of that very dict (in one process, its peers') reuse ``value`` and what
        it computed since (a spec's job id), instead of an equal copy that computes it again."""
        try:
            same = self.parse(d) == value
        except ProtocolError:
            return  # (parsing it will fail wherever it arrives, as it should)
        if same:
            self._put(d, value)

    def _put(self, d: dict, value: T) -> None:
        remember(self.entries, id(d), (d, value), self.size)


_parse_spec = _ParseCache(JobSpec.from_dict)
_parse_caps = _ParseCache(Capabilities.from_dict)

#: One shared instance per manifest value (bounded, oldest dropped), and the instance of recently seen manifests
#: by identity (each entry keeps its manifest alive, so an id cannot be reused while cached).
_MANIFESTS: OrderedDict[Manifest, Manifest] = OrderedDict()
_MANIFEST_IDS: OrderedDict[int, tuple[Manifest, Manifest]] = OrderedDict()
_MANIFESTS_SIZE = 1024


#: Recent reveals' checks against their commitments: (commitment, job, node, root, salt) -> opens it (bounded,
#: oldest dropped). A pure function of the values; in one process (the simulator) every node of a shard checks the
#: same reveal, so it is hashed once instead of once per node.
_REVEAL_CHECKS: OrderedDict[tuple[bytes, bytes, bytes, bytes, bytes], bool] = OrderedDict()
_REVEAL_CHECKS_SIZE = 4096


def _reveal_matches(commit: bytes, job_id: bytes, node_id: bytes, root: bytes, salt: bytes) -> bool:
    """:func:`reveal_matches`, memoised (see ``_REVEAL_CHECKS``)."""
    key = (commit, job_id, node_id, root, salt)
    ok = _REVEAL_CHECKS.get(key)
    if ok is None:
        ok = remember(
            _REVEAL_CHECKS, key, reveal_matches(commit, job_id, node_id, root, salt), _REVEAL_CHECKS_SIZE
        )
    return ok


def _canonical(manifest: Manifest) -> Manifest:
    """An instance equal to ``manifest``, the same for equal manifests while cached: an eligible pool's key is its
    identity, which saves hashing and comparing every field of the manifest at each job's first ranking. In one
    process (the simulator) every node of a shard receives the same parsed spec, so a miss is once per job."""
    hit = _MANIFEST_IDS.get(id(manifest))
    if hit is not None and hit[0] is manifest:
        return hit[1]
    canon = _MANIFESTS.get(manifest)
    if canon is None:
        canon = remember(_MANIFESTS, manifest, manifest, _MANIFESTS_SIZE)
    remember(_MANIFEST_IDS, id(manifest), (manifest, canon), _MANIFESTS_SIZE)
    return canon


@dataclass(frozen=True)
class CoreConfig:
    """Protocol parameters. Every node of one network must use the same values (except caps)."""

    advert_interval: float = 10.0  # seconds between adverts
    advert_ttl: float = 3.0  # an advert is fresh for ttl x its interval
    fallback_interval: float = 2.0  # seconds between fallback ranks
    commit_grace: float = 10.0  # beyond the manifest timeout, for fetching, starting and committing
    reveal_window: float = 10.0  # time to reveal once revealing starts
    settle_backup_delay: float = 5.0  # how long the other agreeing executors wait before settling themselves
    grant_timeout: float = 10.0  # how long a winner of an encrypted job waits for its key
    # how long a job with no eligible node waits for adverts (0: 1 advert interval)
    no_eligible_grace: float = 0.0
    shard_bits: int = 0  # 2**shard_bits job topics
    require_stake: bool = False  # only staked nodes are eligible
    require_escrow: bool = False  # only funded jobs are processed (seed taken from the chain)
    forget_after: float = 600.0  # drop a finished job's view after this long (rounded up: _forget_time)
    evidence_stagger: float = 5.0  # seconds between observers' turns to post equivocation on chain
    max_orphan_jobs: int = 1024  # messages held for jobs not yet announced here: this many jobs
    max_orphan_msgs: int = 32  # ... and this many messages per job
    # a node whose claim turn comes while it is full says so (a RELEASE without a claim: it "passes"), so the
    # next rank claims after one gossip hop instead of at its own turn; the passer ranks last for that job.
    # Off by default: it shortens claims on a network with spare capacity and lengthens them under overload
    # (docs/protocol.md). Every node honours the passes it receives, whatever its own setting.
    pass_when_full: bool = False
    # Local policy (nodes may differ): when a slot frees, which of the jobs this node was full for it claims
    # first. 0: the oldest whose turn came. S > 0: of those announced within S seconds of that one, first the
    # ones where no candidate left ranks above it within the k needed (its claim cannot be outranked), oldest
    # first; so nodes that free within a gossip delay of each other take different jobs instead of all the
    # oldest, where every claim but the best-ranked one is outranked and its run wasted (docs/protocol.md).
    deferred_spread: float = 0.0


@dataclass(slots=True)
class Claim:
    at: float
    winner_since: float | None = None
    lapsed: bool = False
    released: bool = False
    raw: bytes = b""


@dataclass(slots=True)
class JobView:
    spec: JobSpec
    job_id: bytes
    seed: bytes
    origin: bytes
    t0: float  # local time the announcement was processed
    shard: int
    funded: bool = True
    phase: str = OPEN
    epoch: float = 0.0  # start of the current fallback schedule
    claims: dict[bytes, Claim] = field(default_factory=dict)
    # node -> (commitment, raw, at)
    commits: dict[bytes, tuple[bytes, bytes, float]] = field(default_factory=dict)
    reveals: dict[bytes, tuple[bytes, bytes]] = field(default_factory=dict)  # node -> (root, raw)
    reveal_msgs: dict[bytes, dict] = field(default_factory=dict)
    reveal_started: float | None = None
    reveal_deadline: float | None = None
    winners: tuple[bytes, ...] = ()
    # nodes that passed while full (ranked last for this job; rarely non-empty: shared empty, replaced when set)
    passed: frozenset[bytes] = frozenset()
    # this node's part
    claimed: bool = False
    executing: bool = False
    granted: bytes = b""
    grants_sent: frozenset[bytes] = frozenset()  # (rarely non-empty: shared empty, replaced when it grows)
    result: ExecutionDone | None = None
    revealed: bool = False
    accepted_root: bytes | None = None
    settle_at: float | None = None
    evidence_sent: frozenset[tuple[str, bytes]] = frozenset()  # (likewise)
    # equivocation this node posts later, unless the chain reports the slash first: accused -> (at, tx, gossip)
    slash_due: dict[bytes, tuple[float, SubmitTx, Publish | None]] | None = None
    finished_at: float | None = None
    forget_at: float | None = None  # when the view is dropped (set when it finishes)
    no_eligible_reason: str = ""
    fail_reason: str = ""
    held_reveals: dict[bytes, m.Message] | None = None  # (rarely needed: made on first use)
    eligible_cache: tuple[int, float, list[bytes]] | None = None
    # Final and past its reveal window as of the last step: a step now changes nothing unless the view
    # changes, and every change comes with its own step, so its timers (but forgetting) need not fire.
    quiet: bool = False
    # At least k claims were valid as of the last step (so this node's fallback claim has nothing to do until a
    # step finds fewer), and the times of the fallback wake-ups dropped meanwhile (re-armed if one does).
    enough: bool = False
    dropped: tuple[float, ...] = ()


@dataclass(slots=True)
class Advert:
    caps: Capabilities
    at: float
    interval: float
    shards: frozenset[int] | None  # None: all
    eth: bytes = b""
    caps_raw: dict | None = None  # the advert's caps as received (an equal dict needs no parsing)


def _candidates_left(job: JobView, ranked: list[bytes]) -> list[bytes]:
    """The ranked nodes without a claim on ``job``, those that passed it (:attr:`JobView.passed`) after the rest,
    among themselves as ranked: the order of the claim schedule."""
    left = [n for n in ranked if n not in job.claims]
    if job.passed:
        left = [n for n in left if n not in job.passed] + [n for n in left if n in job.passed]
    return left


class NodeCore:
    """One node's protocol state. ``caps=None`` makes a light node (relays and watches, never executes)."""

    def __init__(
        self,
        node_id: bytes,
        caps: Capabilities | None,
        config: CoreConfig | None = None,
        shards: frozenset[int] | None = None,
        eth: bytes = b"",
    ) -> None:
        self.node_id = node_id
        self.caps = caps
        self.cfg = config or CoreConfig()
        self.shards = shards  # None: all shards
        self.eth = eth
        self.adverts: dict[bytes, Advert] = {}
        self.staked: set[bytes] = set()
        self.jobs: dict[bytes, JobView] = {}
        self.funded: dict[bytes, bytes] = {}  # job -> chain seed, for funding seen before the announcement
        self._funded_seen: deque[tuple[float, bytes]] = deque()  # (when, job), to drop those never announced
        self.running = 0
        self.gpus_busy = 0  # GPUs held by running GPU jobs: no GPU-job claim beyond caps.gpus
        self._freed = False  # a slot or a GPU freed (or the caps changed) since deferred jobs were looked at
        self.orphans: dict[bytes, list[m.Message]] = {}
        self._deferred: dict[bytes, None] = {}  # jobs passed over while every slot was busy (ordered set)
        self._started = -math.inf  # when Start was handled (its first advert interval is its warm-up)
        self._timers: list[tuple[float, bytes] | tuple[float, bytes, int]] = []  # (at, job[, _FALLBACK])
        self._pending: set[tuple[float, bytes] | tuple[float, bytes, int]] = set()
        self._purge_above = _PURGE_MIN  # wake-ups queued beyond which those that would do nothing are purged
        self._armed: float | None = None
        self._adv_version = 0
        self._next_advert: float | None = None
        self._next_sweep: float | None = None
        self._awaiting: dict[bytes, None] = {}  # decided jobs the chain has not closed yet (ordered set)
        # (id of the canonical manifest, shard) -> (advert version, caps, valid until, nodes, their set, manifest)
        self._pools: OrderedDict[
            tuple[int, int], tuple[int, Capabilities | None, float, list[bytes], frozenset[bytes], Manifest]
        ] = OrderedDict()
        self.stats: dict[str, int] = {}

    # ------------------------------------------------------------------ driving API

    def handle(self, event: Event, now: float) -> list[Action]:
        out: list[Action] = []
        te = type(event)
        if te is Received:  # the common cases first, by exact type (the events are final dataclasses)
            self._on_message(event.msg, now, out)
        elif te is Tick:
            self._on_tick(now, out)
        elif te is ChainUpdate:
            self._on_chain(event, now, out)
        elif isinstance(event, Received):
            self._on_message(event.msg, now, out)
        elif isinstance(event, Tick):
            self._on_tick(now, out)
        elif isinstance(event, ExecutionDone):
            self._on_done(event, now, out)
        elif isinstance(event, ExecutionFailed):
            self._on_exec_failed(event, now, out)
        elif isinstance(event, SubmitJob):
            self._on_submit(event, now, out)
        elif isinstance(event, ChainUpdate):
            self._on_chain(event, now, out)
        elif isinstance(event, Start):
            self._started = now
            self._advertise(now, out)
        elif isinstance(event, CapabilitiesChanged):
            self.caps = event.caps
            self._freed = True
            self._advertise(now, out)
        else:  # pragma: no cover - typing guards this
            raise TypeError(f"unknown event {event!r}")
        if self._deferred and self._freed and self.caps is not None and self.running < self.caps.max_jobs:
            self._freed = False
            self._retry_deferred(now, out)
        self._arm(out)
        return out

    def _retry_deferred(self, now: float, out: list[Action]) -> None:
        deferred, self._deferred = self._deferred, {}
        if self.cfg.deferred_spread <= 0 or len(deferred) < 2:
            for jid in deferred:
                self._step_deferred(jid, now, out)
            return
        for jid in self._spread(list(deferred), now):
            self._step_deferred(jid, now, out)
        again, self._deferred = self._deferred, {jid: None for jid in deferred if jid in self._deferred}
        self._deferred.update(again)  # those deferred again keep their places (the oldest first)

    def _step_deferred(self, jid: bytes, now: float, out: list[Action]) -> None:
        job = self.jobs.get(jid)
        if job is not None and job.phase == OPEN and self.node_id not in job.claims:
            self._step(job, now, out)

    def _spread(self, deferred: list[bytes], now: float) -> list[bytes]:
        """``deferred`` (oldest first) with the jobs this node may claim now (its turn came) that were announced
        within ``deferred_spread`` seconds of the first such job moved to the front: first those where no
        candidate left can outrank its claim, then the others, the oldest first within each (a stable sort)."""
        jobs, me, fi, spread = self.jobs, self.node_id, self.cfg.fallback_interval, self.cfg.deferred_spread
        head: list[tuple[bool, bytes]] = []
        first: float | None = None
        for jid in deferred:
            job = jobs.get(jid)
            if job is None or job.phase != OPEN or me in job.claims or job.enough:
                continue
            if first is not None and abs(job.epoch - first) > spread:
                continue
            ranked = self.eligible_nodes(job, now)
            if me not in ranked:
                continue
            valid = len(self._valid_claims(job, now))
            # how many ranks past the k - valid needed this node is (0: no candidate left can outrank it)
            behind = claiming.claim_delay(
                _candidates_left(job, ranked).index(me), job.spec.redundancy - valid, 1.0
            )
            if job.epoch + behind * fi > now:
                continue  # not its turn yet here
            if first is None:
                first = job.epoch
            head.append((behind > 0, jid))
        if len(head) < 2:
            return deferred
        head.sort(key=lambda e: e[0])
        front = [jid for _, jid in head]
        chosen = set(front)
        return front + [jid for jid in deferred if jid not in chosen]

    def next_deadline(self) -> float | None:
        t = self._timers[0][0] if self._timers else None
        a = self._next_advert
        if a is None:
            return t
        return a if t is None or a < t else t

    # ---------------------------------------------------------------------- helpers

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def _wake(self, job_id: bytes, at: float) -> None:
        key = (at, job_id)
        if key not in self._pending:
            self._pending.add(key)
            heapq.heappush(self._timers, key)

    def _wake_fallback(self, job_id: bytes, at: float) -> None:
        """A wake-up for this node's fallback claim only: dropped unseen while at least k claims are valid."""
        key = (at, job_id, _FALLBACK)
        if key not in self._pending:
            self._pending.add(key)
            heapq.heappush(self._timers, key)

    def _fallback_moot(self, at: float, job: JobView | None) -> bool:
        """A fallback-claim wake-up at ``at`` would do nothing: the job is gone or past claiming, or at least k
        claims were valid at its last step (``enough``).

        The last holds until a step finds fewer: the valid claims change only with a message, a wake-up of
        their own (a claimant's advert expiry, a winner's execution deadline, armed when it became a winner)
        or an advert that revives a claimant (stepped at once, :meth:`_on_advert`), each a step; every other
        rule of an open job arms its own wake-ups, so a step in between changes nothing. Such a wake-up is
        dropped, its time kept: the step that finds fewer claims re-arms those still ahead (:meth:`_not_enough`).
        """
        if job is None or job.phase != OPEN:
            return True
        if not job.enough:
            return False
        job.dropped = (*job.dropped, at)
        return True

    def _not_enough(self, job: JobView, now: float) -> None:
        """Fewer than k claims are valid again: re-arm the fallback wake-ups dropped while there were enough."""
        job.enough = False
        dropped, job.dropped = job.dropped, ()
        for at in dropped:
            if at > now:
                self._wake_fallback(job.job_id, at)

    def _forget_time(self, finished: float) -> float:
        """When to drop the view of a job that finished at ``finished``: ``forget_after`` later, rounded up to a
        grid of a quarter of ``forget_after`` (memory housekeeping only), so that one wake-up forgets every job
        that finished in the same quarter instead of one wake-up per job (the simulator's bench showed one
        forgetting tick per node and job)."""
        after = self.cfg.forget_after
        at = finished + after
        if after <= 0:
            return at
        grid = after / _FORGET_GRID
        t = math.ceil(at / grid) * grid
        return t if t >= at else t + grid  # (float rounding: never earlier than forget_after)

    def _droppable(self, key: tuple[float, bytes] | tuple[float, bytes, int]) -> bool:
        """A wake-up that would do nothing: a forgotten job's, or a quiet job's but its forgetting (those after it
        find the job forgotten; a job announced again once forgotten gets a fresh view, with its own wake-ups),
        or a moot fallback claim's (:meth:`_fallback_moot`). The sweep's wake-up is left to :meth:`_arm`
        (dropped at the front once nothing awaits the chain)."""
        at, jid = key[0], key[1]
        if jid == _SWEEP:
            return False
        job = self.jobs.get(jid)
        if len(key) == 3:
            return self._fallback_moot(at, job)
        return job is None or (job.quiet and at != job.forget_at)

    def _purge_timers(self) -> None:
        """Drop the wake-ups that would do nothing from the whole queue, not only its front (see :meth:`_arm`).

        Every job arms its deadline (typically minutes ahead) and most settle long before it: dropped only on
        reaching the front, those piled up to hundreds per node (1.5 M in a 5,000-node simulator process, and
        the cost per event grew with them).
        Keys are distinct, so the order in which the rest fire does not depend on the queue's layout.
        """
        keep = [key for key in self._timers if not self._droppable(key)]
        heapq.heapify(keep)
        self._timers = keep
        self._pending = set(keep)
        self._purge_above = max(_PURGE_MIN, 2 * len(keep))

    def _arm(self, out: list[Action]) -> None:
        if len(self._timers) > self._purge_above:
            self._purge_timers()
        timers = self._timers
        jobs = self.jobs
        while timers:  # drop wake-ups from the front that would do nothing:
            key = timers[0]
            at, jid = key[0], key[1]
            if jid == _SWEEP:
                if self._awaiting:
                    break
                self._next_sweep = None  # nothing left for it
                self._pending.discard(heapq.heappop(timers))
                continue
            job = jobs.get(jid)
            if len(key) == 3:  # a fallback claim's, moot
                if not self._fallback_moot(at, job):
                    break
            # a forgotten job's leftovers (a tick finds no view to step), a quiet job's (but its forgetting)
            elif job is not None and (not job.quiet or at >= job.forget_at):
                break
            self._pending.discard(heapq.heappop(timers))
        nd = timers[0][0] if timers else None  # next_deadline(), inlined
        a = self._next_advert
        if a is not None and (nd is None or a < nd):
            nd = a
        if nd is not None and nd != self._armed:
            self._armed = nd
            out.append(SetTimer(nd))

    def serves(self, shard: int) -> bool:
        return self.shards is None or shard in self.shards

    def advert_fresh(self, node: bytes, now: float) -> bool:
        a = self.adverts.get(node)
        if node == self.node_id:
            return self.caps is not None
        return a is not None and now <= a.at + a.interval * self.cfg.advert_ttl

    def _caps_of(self, node: bytes) -> Capabilities | None:
        if node == self.node_id:
            return self.caps
        a = self.adverts.get(node)
        return a.caps if a else None

    def _serves_shard_claim(self, node: bytes, shard: int) -> bool:
        a = self.adverts.get(node)
        return a is None or a.shards is None or shard in a.shards

    def _serves_shard(self, node: bytes, shard: int) -> bool:
        if node == self.node_id:
            return self.serves(shard)
        a = self.adverts.get(node)
        return a is not None and (a.shards is None or shard in a.shards)

    def eligible_nodes(self, job: JobView, now: float) -> list[bytes]:
        """Nodes this node believes can run the job, best rank first (cached until an advert changes or expires)."""
        cached = job.eligible_cache
        if cached is not None and cached[0] == self._adv_version and now <= cached[1]:
            return cached[2]
        valid_until, ok, members = self._eligible_pool(job.spec.manifest, job.shard, now)
        if job.spec.executors:
            ok = [n for n in ok if n in job.spec.executors]
            members = None
        ranked = claiming.rank(job.job_id, job.seed, ok, members)
        job.eligible_cache = (self._adv_version, valid_until, ranked)
        return ranked

    def _eligible_pool(
        self, manifest: Manifest, shard: int, now: float
    ) -> tuple[float, list[bytes], frozenset[bytes]]:
        """Unranked eligible nodes for a manifest and shard (as a list and a set), and until when that holds.

        Shared by the jobs with equal manifests in one shard, and valid under the same condition as a
        job's cache: no advert, stake or own capability changed and no eligible advert expired since.
        """
        manifest = _canonical(manifest)
        key = (id(manifest), shard)  # (the entry keeps the manifest alive: its id is not reused meanwhile)
        hit = self._pools.get(key)
        if hit is not None and hit[0] == self._adv_version and hit[1] is self.caps and now <= hit[2]:
            return hit[2], hit[3], hit[4]
        nodes = [n for n in self.adverts if n != self.node_id]
        if self.caps is not None:
            nodes.append(self.node_id)
        ok = []
        valid_until = float("inf")
        for n in nodes:
            caps = self._caps_of(n)
            if caps is None or not self.advert_fresh(n, now) or not self._serves_shard(n, shard):
                continue
            if self.cfg.require_stake and n not in self.staked:
                continue
            if claiming.eligible(caps, manifest):
                ok.append(n)
                a = self.adverts.get(n)
                if a is not None:
                    valid_until = min(valid_until, a.at + a.interval * self.cfg.advert_ttl)
        members = frozenset(ok)
        remember(
            self._pools,
            key,
            (self._adv_version, self.caps, valid_until, ok, members, manifest),
            _POOL_CACHE_SIZE,
        )
        return valid_until, ok, members

    def _why_none_eligible(self, job: JobView, now: float) -> str:
        reasons: dict[str, int] = {}
        for n in sorted(self.adverts):
            a = self.adverts[n]
            if not self.advert_fresh(n, now):
                continue
            r = claiming.ineligibility(a.caps, job.spec.manifest) or (
                "not staked"
                if self.cfg.require_stake and n not in self.staked
                else "not among the job's executors"
                if job.spec.executors and n not in job.spec.executors
                else "does not serve the job's shard"
            )
            reasons[r] = reasons.get(r, 0) + 1
        if self.caps is not None:
            r = claiming.ineligibility(self.caps, job.spec.manifest) or (
                "not among the job's executors"
                if job.spec.executors and self.node_id not in job.spec.executors
                else None
            )
            if r:
                reasons[r] = reasons.get(r, 0) + 1
        total = sum(reasons.values())
        detail = "; ".join(f"{c} x {r}" for r, c in sorted(reasons.items()))
        return f"no eligible node among {total} known" + (f": {detail}" if detail else "")

    def _claimant_alive(self, node: bytes, c: Claim, now: float) -> bool:
        """A claimant is alive while its advert is fresh; one not yet advertised gets one advert lifetime."""
        if node == self.node_id:
            return self.caps is not None
        a = self.adverts.get(node)  # advert_fresh(), inlined (hot)
        if a is not None:
            return now <= a.at + a.interval * self.cfg.advert_ttl
        return now <= c.at + self.cfg.advert_interval * self.cfg.advert_ttl

    def _valid_claims(self, job: JobView, now: float) -> list[bytes]:
        return [
            n
            for n, c in job.claims.items()
            if not c.lapsed and not c.released and self._claimant_alive(n, c, now)
        ]

    def _lapse_deadline(self, job: JobView, c: Claim) -> float:
        start = c.winner_since if c.winner_since is not None else c.at
        return start + job.spec.manifest.timeout + self.cfg.commit_grace

    # ---------------------------------------------------------------- advertising

    def _advertise(self, now: float, out: list[Action]) -> None:
        if self.caps is None:
            self._next_advert = None
            return
        shards = sorted(self.shards) if self.shards is not None else []
        body = {
            "caps": self.caps.to_dict(),
            "shard_bits": self.cfg.shard_bits,
            "shards": shards,
            "eth": self.eth,
            "interval": max(1, int(self.cfg.advert_interval)),
            "load": self.running,
        }
        out.append(Publish(m.ADVERT, body))
        self._next_advert = now + self.cfg.advert_interval

    def _on_advert(self, msg: m.Message, now: float, out: list[Action]) -> None:
        b = msg.body
        if b["shard_bits"] != self.cfg.shard_bits:
            raise ProtocolError(
                "bad-field", f"advert for {b['shard_bits']} shard bits, network uses {self.cfg.shard_bits}"
            )
        shards = frozenset(b["shards"]) if b["shards"] else None
        prev = self.adverts.get(msg.sender)
        raw = b["caps"]
        caps = prev.caps if prev is not None and prev.caps_raw == raw else _parse_caps(raw)
        interval = float(b["interval"])
        eth = b["eth"]
        if (
            prev is not None
            and prev.caps is caps
            and prev.shards == shards
            and prev.interval == interval
            and prev.eth == eth
        ):
            # the same advert again (the common case): refreshed in place, its pools change only if it had expired
            if now > prev.at + interval * self.cfg.advert_ttl:
                self._adv_version += 1
                prev.at = now
                self._step_claims_of(msg.sender, now, out)  # a committed claimant is alive again
                return
            prev.at = now
            return
        if (
            prev is None
            or prev.caps != caps
            or prev.shards != shards
            or prev.interval != interval
            or not self.advert_fresh(msg.sender, now)
        ):
            self._adv_version += 1
        self.adverts[msg.sender] = Advert(caps, now, interval, shards, eth, raw)
        self._step_claims_of(msg.sender, now, out)  # its claims' liveness starts anew

    def _step_claims_of(self, node: bytes, now: float, out: list[Action]) -> None:
        """A new advert of ``node`` (its first, one after its last expired, or a changed one) sets when its claims
        go stale anew: a committed claimant's, stale, counts again. Step the open jobs it holds a live claim of
        now, not at their next step (which may be much later: every other rule of an open job wakes on its own).
        """
        jobs = [
            job
            for job in self.jobs.values()
            if job.phase == OPEN
            and (c := job.claims.get(node)) is not None
            and not c.lapsed
            and not c.released
        ]
        for job in jobs:
            self._step(job, now, out)

    # ------------------------------------------------------------------- messages

    def _on_message(self, msg: m.Message, now: float, out: list[Action]) -> None:
        kind = msg.kind
        stat = _RX_STAT.get(kind) or f"rx_{kind}"
        stats = self.stats
        stats[stat] = stats.get(stat, 0) + 1
        if msg.sender == self.node_id and kind != m.JOB:
            return  # our own echo
        if kind == m.ADVERT:
            self._on_advert(msg, now, out)
            return
        if kind == m.JOB:
            self._on_job(msg, now, out)
            return
        job = self.jobs.get(msg.body["job"])
        if job is None:
            self._hold_orphan(msg, now)
            return
        _JOB_HANDLERS[kind](self, job, msg, now, out)
        self._step(job, now, out)

    def _hold_orphan(self, msg: m.Message, now: float) -> None:
        """Keep a message for a job not yet announced here (gossip reorders topics); bounded."""
        jid = msg.body["job"]
        held = self.orphans.get(jid)
        if held is None:
            if len(self.orphans) >= self.cfg.max_orphan_jobs:
                oldest = next(iter(self.orphans))
                del self.orphans[oldest]
            held = self.orphans[jid] = []
        if len(held) < self.cfg.max_orphan_msgs:
            held.append(msg)
        self._count("rx_orphan")

    def _on_job(self, msg: m.Message, now: float, out: list[Action]) -> None:
        spec = _parse_spec(msg.body["spec"])  # raises SpecError (a ProtocolError)
        jid = spec.job_id
        if jid in self.jobs:
            return
        shard = claiming.shard_of(jid, self.cfg.shard_bits)
        if not self.serves(shard) and msg.sender != self.node_id:
            return
        if spec.deadline and spec.deadline <= now:
            raise ProtocolError("stale", "job deadline already passed")
        seed = msg.body["seed"]
        funded = True
        if self.cfg.require_escrow and not _paid_by_voucher(spec):
            chain_seed = self.funded.get(jid)
            funded = chain_seed is not None
            if funded:
                seed = chain_seed
        job = JobView(spec, jid, seed, msg.sender, now, shard, funded=funded, epoch=now)
        self.jobs[jid] = job
        out.append(JobEvent(jid, "announced", f"k={spec.redundancy} q={spec.quorum}", msg.sender))
        if self.orphans:
            for held in self.orphans.pop(jid, ()):
                self._on_message(held, now, out)
        self._step(job, now, out)

    def _on_submit(self, ev: SubmitJob, now: float, out: list[Action]) -> None:
        jid = ev.spec.job_id
        shard = claiming.shard_of(jid, self.cfg.shard_bits)
        d = ev.spec.to_dict()
        # (in one process, the shard's nodes parse this very dict: they reuse ev.spec and its job id)
        _parse_spec.prime(d, ev.spec)
        body = {"spec": d, "seed": ev.seed, "origin_ts": int(now * 1000)}
        if ev.code:
            body["code"] = ev.code
        out.append(Publish(m.JOB, body, shard))
        if jid not in self.jobs:
            job = JobView(ev.spec, jid, ev.seed, self.node_id, now, shard, epoch=now)
            if self.cfg.require_escrow and not _paid_by_voucher(ev.spec):
                job.funded = jid in self.funded
                if job.funded:
                    job.seed = self.funded[jid]
            self.jobs[jid] = job
            out.append(JobEvent(jid, "announced", f"k={ev.spec.redundancy} q={ev.spec.quorum}", self.node_id))
            self._step(job, now, out)

    def _on_claim(self, job: JobView, msg: m.Message, now: float, out: list[Action]) -> None:
        if job.phase != OPEN or msg.sender in job.claims:
            return
        # The claim carries the claimant's capabilities, so it can be judged before its advert arrives.
        raw = msg.body["caps"]
        a = self.adverts.get(msg.sender)
        caps = a.caps if a is not None and a.caps_raw == raw else _parse_caps(raw)
        why = claiming.ineligibility(caps, job.spec.manifest)
        if why is None and self.cfg.require_stake and msg.sender not in self.staked:
            why = "not staked"
        if why is None and job.spec.executors and msg.sender not in job.spec.executors:
            why = "not among the job's executors"
        if why is None and not self._serves_shard_claim(msg.sender, job.shard):
            why = "does not serve the job's shard"
        if why is not None:
            self._count("claim_rejected")
            out.append(JobEvent(job.job_id, "claim-rejected", why, msg.sender))
            return
        job.claims[msg.sender] = Claim(now, raw=msg.raw)
        out.append(JobEvent(job.job_id, "claimed", "", msg.sender))

    def _on_release(self, job: JobView, msg: m.Message, now: float, out: list[Action]) -> None:
        c = job.claims.get(msg.sender)
        if c is not None and not c.released:
            c.released = True
            job.epoch = now
            out.append(JobEvent(job.job_id, "released", msg.body["reason"], msg.sender))
        elif c is None and msg.sender not in job.passed and job.phase == OPEN:
            # a release without a claim: the sender was full at its turn and passes (ranked last from now on)
            job.passed = job.passed | {msg.sender}
            job.epoch = now
            out.append(JobEvent(job.job_id, "passed", msg.body["reason"], msg.sender))

    def _on_commit(self, job: JobView, msg: m.Message, now: float, out: list[Action]) -> None:
        prev = job.commits.get(msg.sender)
        if prev is not None:
            if prev[0] != msg.body["commitment"]:
                self._evidence(job, EvidenceKind.EQUIVOCATION, msg.sender, (prev[1], msg.raw), now, out)
            return
        c = job.claims.get(msg.sender)
        if (
            c is None
            or c.lapsed
            or c.released
            or msg.sender not in job.winners
            or job.reveal_started is not None
        ):
            self._count("commit_ignored")
            return  # not a current winner, or too late: reveals may already be public
        job.commits[msg.sender] = (msg.body["commitment"], msg.raw, now)
        out.append(JobEvent(job.job_id, "committed", "", msg.sender))
        held = job.held_reveals.pop(msg.sender, None) if job.held_reveals else None
        if held is not None:
            self._on_reveal(job, held, now, out)

    def _on_reveal(self, job: JobView, msg: m.Message, now: float, out: list[Action]) -> None:
        b = msg.body
        if "commitment" in b:  # a reveal with its own commitment: the commit first, judged as one
            self._on_commit(job, msg, now, out)
        prev = job.reveals.get(msg.sender)
        if prev is not None:
            if prev[0] != b["root"]:
                self._evidence(job, EvidenceKind.EQUIVOCATION, msg.sender, (prev[1], msg.raw), now, out)
            return
        commit = job.commits.get(msg.sender)
        if commit is None and msg.sender in job.claims and job.reveal_started is None:
            # gossip let it overtake its commitment: judge it when that arrives
            if job.held_reveals is None:
                job.held_reveals = {}
            job.held_reveals[msg.sender] = msg
            return
        if commit is None or not _reveal_matches(commit[0], job.job_id, msg.sender, b["root"], b["salt"]):
            self._count("reveal_rejected")
            out.append(
                JobEvent(job.job_id, "reveal-rejected", "reveal does not open a known commitment", msg.sender)
            )
            return
        job.reveals[msg.sender] = (b["root"], msg.raw)
        job.reveal_msgs[msg.sender] = b  # message bodies are never mutated (shared, not copied)
        if job.reveal_started is None:
            self._begin_reveal(job, now)
        out.append(JobEvent(job.job_id, "revealed", b["root"].hex(), msg.sender))

    def _on_grant(self, job: JobView, msg: m.Message, now: float, out: list[Action]) -> None:
        if msg.sender != job.origin:
            return
        for node, sealed in msg.body["grants"]:
            if node == self.node_id and not job.granted:
                job.granted = sealed

    def _on_checkpoint(self, job: JobView, msg: m.Message, now: float, out: list[Action]) -> None:
        c = job.claims.get(msg.sender)
        if c is not None:
            out.append(JobEvent(job.job_id, "checkpoint", msg.body["cid"], msg.sender))

    def _on_evidence(self, job: JobView, msg: m.Message, now: float, out: list[Action]) -> None:
        key = (msg.body["kind"], msg.body["accused"])
        if key not in job.evidence_sent:
            job.evidence_sent |= {key}
            out.append(JobEvent(job.job_id, "evidence", msg.body["kind"], msg.body["accused"]))

    # ------------------------------------------------------------ local execution

    def _start_executing(self, job: JobView) -> None:
        job.executing = True
        self.running += 1
        self.gpus_busy += _gpus_needed(job.spec)

    def _stop_executing(self, job: JobView) -> None:
        job.executing = False
        self.running = max(0, self.running - 1)
        self.gpus_busy = max(0, self.gpus_busy - _gpus_needed(job.spec))
        self._freed = True

    def _on_done(self, ev: ExecutionDone, now: float, out: list[Action]) -> None:
        job = self.jobs.get(ev.job_id)
        if job is None or not job.executing:
            return
        self._stop_executing(job)
        if job.phase != OPEN:
            return
        job.result = ev
        c = commitment(job.job_id, self.node_id, ev.trace_root, ev.salt)
        job.commits[self.node_id] = (c, b"", now)
        out.append(Publish(m.COMMIT, {"job": job.job_id, "commitment": c}, job.shard))
        out.append(SubmitTx("commit", job.job_id, {"commitment": c, "usage_wei": ev.usage_wei}))
        out.append(JobEvent(job.job_id, "committed", "", self.node_id))
        self._step(job, now, out)

    def _on_exec_failed(self, ev: ExecutionFailed, now: float, out: list[Action]) -> None:
        job = self.jobs.get(ev.job_id)
        if job is None or not job.claimed:
            return
        if job.executing:
            self._stop_executing(job)
        self._release(job, ev.reason, now, out)
        self._step(job, now, out)

    def _release(self, job: JobView, reason: str, now: float, out: list[Action]) -> None:
        c = job.claims.get(self.node_id)
        if c is not None and not c.released:
            c.released = True
            job.epoch = now
            out.append(Publish(m.RELEASE, {"job": job.job_id, "reason": reason[:200]}, job.shard))
            out.append(JobEvent(job.job_id, "released", reason, self.node_id))

    # ------------------------------------------------------------------- chain

    def _on_chain(self, ev: ChainUpdate, now: float, out: list[Action]) -> None:
        if ev.kind == "staked":
            self.staked.add(ev.node)
            self._adv_version += 1
        elif ev.kind == "unstaked":
            self.staked.discard(ev.node)
            self._adv_version += 1
        elif ev.kind == "job_funded":
            self._forget_funded(now)
            job = self.jobs.get(ev.job_id)
            if job is None and not self.serves(claiming.shard_of(ev.job_id, self.cfg.shard_bits)):
                return  # a job of a shard this node does not read: its announcement never comes here
            self.funded[ev.job_id] = ev.data.get("seed", b"")
            self._funded_seen.append((now, ev.job_id))
            if job is not None and not job.funded:
                job.funded = True
                job.seed = self.funded[ev.job_id]
                job.epoch = now
                job.t0 = now
                self._step(job, now, out)
        elif ev.kind in ("job_settled", "job_refunded"):
            job = self.jobs.get(ev.job_id)
            if job is not None and job.phase not in FINAL:
                if job.executing:
                    self._stop_executing(job)
                    out.append(CancelExecution(job.job_id, "job closed on chain"))
                job.phase = SETTLED if ev.kind == "job_settled" else REFUNDED
                self._awaiting.pop(job.job_id, None)
                job.finished_at = now
                job.forget_at = self._forget_time(now)
                job.settle_at = None
                out.append(JobEvent(job.job_id, job.phase, ev.data.get("reason", "")))
                self._wake(job.job_id, job.forget_at)
                job.quiet = self._at_rest(job)
        elif ev.kind == "slashed":
            out.append(JobEvent(ev.job_id, "slashed", ev.data.get("reason", ""), ev.node))
            job = self.jobs.get(ev.job_id)
            if job is not None and job.slash_due and job.slash_due.pop(ev.node, None) is not None:
                self._count("evidence_left_to_others")

    # ------------------------------------------------------------------- timers

    def _on_tick(self, now: float, out: list[Action]) -> None:
        self._armed = None
        if self._next_advert is not None and now >= self._next_advert:
            self._advertise(now, out)
        due: list[bytes] = []
        while self._timers and self._timers[0][0] <= now:
            key = heapq.heappop(self._timers)
            self._pending.discard(key)
            jid = key[1]
            if jid not in due and (len(key) == 2 or not self._fallback_moot(key[0], self.jobs.get(jid))):
                due.append(jid)
        for jid in due:
            job = self.jobs.get(jid)
            if job is None:
                if jid == _SWEEP:
                    self._sweep(now, out)
                continue
            if job.forget_at is not None and now >= job.forget_at and not job.slash_due:
                self._drop_view(jid)
                continue
            self._step(job, now, out)

    def _forget_funded(self, now: float) -> None:
        """Drop the escrows seen more than ``forget_after`` ago of jobs never announced here (the chain shows
        every job of the network; kept, they would pile up for good). Those of viewed jobs go with the view."""
        seen, cutoff = self._funded_seen, now - self.cfg.forget_after
        while seen and seen[0][0] < cutoff:
            jid = seen.popleft()[1]
            if jid not in self.jobs:
                self.funded.pop(jid, None)

    def _drop_view(self, jid: bytes) -> None:
        del self.jobs[jid]
        self._awaiting.pop(jid, None)
        self.funded.pop(jid, None)

    def _await_chain(self, job: JobView, now: float) -> None:
        """``job`` was decided here (accepted or failed) and waits for the chain to close it: make sure a
        sweep is due, in case the chain never does (or this node misses it)."""
        self._awaiting[job.job_id] = None
        if self._next_sweep is None:
            self._next_sweep = now + self.cfg.forget_after
            self._wake(_SWEEP, self._next_sweep)

    def _sweep(self, now: float, out: list[Action]) -> None:
        """Forget the decided jobs no settlement or refund closed by ``forget_after`` past their deadline.

        Without it a node kept them for good: a job whose refund nobody sent (its origin and claimants gone),
        or an accepted one whose settlement event this node missed. Nothing can still happen to such a job
        but on chain, and the chain answers for it. Each gets a ``forgotten`` JobEvent (the agent drops what it
        keeps for it, e.g. a voucher job's reserved price).
        """
        self._next_sweep = None
        for jid in list(self._awaiting):
            job = self.jobs.get(jid)
            if job is None or job.phase not in (ACCEPTED, FAILED):
                del self._awaiting[jid]
                continue
            dl = job.spec.deadline
            if dl and now >= dl + self.cfg.forget_after and not job.executing and not job.slash_due:
                self._drop_view(jid)
                self._count("forgotten_unclosed")
                out.append(JobEvent(jid, "forgotten", "no settlement or refund closed it in time"))
        if self._awaiting:
            self._next_sweep = now + self.cfg.forget_after
            self._wake(_SWEEP, self._next_sweep)

    # ------------------------------------------------------------- the job rules

    def _step(self, job: JobView, now: float, out: list[Action]) -> None:
        """Re-evaluate one job; every rule below is a function of the view and ``now``."""
        if job.slash_due:
            self._post_due_evidence(job, now, out)
        if not job.funded:
            self._unfunded(job, now, out)
            return
        if job.reveal_deadline is not None and job.phase != REVEALING:
            # dissent and silence are judged until the reveal window closes
            self._late_evidence(job, now, out)
        if job.phase in FINAL:
            if job.phase == SETTLED and job.accepted_root is None and job.reveals:
                self._adopt_root(job)
            if not job.slash_due and (
                job.reveal_deadline is None or now >= job.reveal_deadline or self._at_rest(job)
            ):
                job.quiet = True
            return
        k = job.spec.redundancy
        if job.phase == OPEN and not job.claims and not self.eligible_nodes(job, now):
            self._no_eligible(job, now, out)  # fails the job once the grace passes (refund below)
        elif job.phase == OPEN:
            valid = self._lapse_claims(job, now, out) if job.claims else []  # (none: nothing to lapse)
            if len(valid) >= k:
                job.enough = True
            elif job.enough:
                self._not_enough(job, now)
            # (one valid claim or none: that is the ranking, whatever k >= 1; the common case)
            if len(valid) < 2 and k > 0:
                winners = tuple(valid)
            else:
                winners = tuple(claiming.top_claimants(job.job_id, job.seed, valid, k))
            self._set_winners(job, winners, now)
            self._my_claim_and_execution(job, valid, winners, now, out)
            if job.origin == self.node_id and job.spec.encrypted:
                new = tuple(w for w in winners if w not in job.grants_sent)
                if new:
                    job.grants_sent |= set(new)
                    out.append(RequestGrant(job.job_id, new))
            self._maybe_begin_reveal(job, now)
            if job.commits and job.phase == OPEN:
                self._wake_on_committed_expiry(job, now)
        if job.phase == REVEALING:
            self._my_reveal(job, now, out)
            self._decide(job, now, out)
        if job.phase == ACCEPTED:
            self._settle(job, now, out)
        deadline = job.spec.deadline
        if deadline and now >= deadline and job.phase in (OPEN, REVEALING):
            self._fail(job, "deadline passed without a verified result", now, out)
        if job.phase == FAILED and job.settle_at is not None:
            if now >= job.settle_at:
                job.settle_at = None
                out.append(SubmitTx("refund", job.job_id, {"reason": job.fail_reason}))
            else:
                self._wake(job.job_id, job.settle_at)
        if deadline and job.phase in (OPEN, REVEALING):
            self._wake(job.job_id, deadline)

    def _unfunded(self, job: JobView, now: float, out: list[Action]) -> None:
        """An announcement whose escrow this node has not seen on chain: wait for it, but not for good (anyone
        can announce a job nobody paid for); dropped at its deadline or ``forget_after`` after it came."""
        drop_at = job.t0 + self.cfg.forget_after
        if job.spec.deadline:
            drop_at = min(drop_at, job.spec.deadline)
        if now < drop_at:
            self._wake(job.job_id, drop_at)
            return
        self._drop_view(job.job_id)
        self._count("forgotten_unfunded")
        out.append(JobEvent(job.job_id, "forgotten", "never funded: no escrow for it on chain"))

    @staticmethod
    def _at_rest(job: JobView) -> bool:
        """A final job whose reveal window is open yet already has nothing left to judge there.

        Revealing has begun (so no commitment can join and the phase cannot change), every commitment is
        revealed (the silence check at the window's close finds nothing), the accepted root is known and
        every reveal against it was judged: a step before or after the window's close changes nothing.
        """
        if job.reveal_started is None or job.phase not in FINAL:
            return False
        if job.accepted_root is None and job.phase == SETTLED:
            return False  # a step may still adopt the root from the reveals
        reveals = job.reveals
        if any(n not in reveals for n in job.commits):
            return False
        root = job.accepted_root
        return root is None or all(
            r == root or (EvidenceKind.DISSENT.value, n) in job.evidence_sent for n, (r, _) in reveals.items()
        )

    def _wake_on_committed_expiry(self, job: JobView, now: float) -> None:
        """While the job is open, a committed claimant whose advert goes stale stops counting (its claim does not
        lapse; a fresh advert revives it, :meth:`_on_advert`): wake when that happens, as for the others
        (:meth:`_lapse_claims`)."""
        ttl = self.cfg.advert_ttl
        for n in job.commits:
            c = job.claims.get(n)
            if c is None or c.lapsed or c.released or n == self.node_id:
                continue
            a = self.adverts.get(n)
            stale = a.at + a.interval * ttl if a is not None else c.at + self.cfg.advert_interval * ttl
            if now <= stale:  # (past it, it does not count already)
                self._wake(job.job_id, stale + 1e-6)

    def _set_winners(self, job: JobView, winners: tuple[bytes, ...], now: float) -> None:
        """``winners`` execute now; one that just became a winner has its execution deadline from now on, and a
        wake-up for it (not only at the next step)."""
        for w in winners:
            c = job.claims[w]
            if c.winner_since is None:
                c.winner_since = now
                if w not in job.commits:
                    self._wake(job.job_id, self._lapse_deadline(job, c))
        job.winners = winners

    def _lapse_claims(self, job: JobView, now: float, out: list[Action]) -> list[bytes]:
        """Lapse the claims of silent claimants and of winners past their deadline; the valid claims after
        (as :meth:`_valid_claims` would list them)."""
        valid: list[bytes] = []
        commits = job.commits
        for n, c in job.claims.items():
            if c.lapsed or c.released:
                continue
            if n in commits:
                if self._claimant_alive(n, c, now):
                    valid.append(n)
                continue
            if not self._claimant_alive(n, c, now):
                c.lapsed = True
                job.epoch = now
                out.append(JobEvent(job.job_id, "lapsed", "claimant's advert went stale", n))
                continue
            if c.winner_since is not None:
                dl = self._lapse_deadline(job, c)
                if now >= dl:
                    c.lapsed = True
                    job.epoch = now
                    out.append(JobEvent(job.job_id, "lapsed", "no commitment by the execution deadline", n))
                    if n == self.node_id and job.executing:
                        self._stop_executing(job)
                        out.append(CancelExecution(job.job_id, "execution deadline passed"))
                else:
                    self._wake(job.job_id, dl)
            a = self.adverts.get(n)
            if a is not None:
                self._wake(job.job_id, a.at + a.interval * self.cfg.advert_ttl + 1e-6)
            elif n != self.node_id:
                self._wake(job.job_id, c.at + self.cfg.advert_interval * self.cfg.advert_ttl + 1e-6)
            if not c.lapsed:
                valid.append(n)
        return valid

    def _my_claim_and_execution(
        self, job: JobView, valid: list[bytes], winners: tuple[bytes, ...], now: float, out: list[Action]
    ) -> None:
        k = job.spec.redundancy
        if self.caps is None:
            return
        mine = job.claims.get(self.node_id)
        if mine is None:
            gpus = _gpus_needed(job.spec)
            full = self.running >= self.caps.max_jobs or (
                gpus > 0 and self.gpus_busy + gpus > len(self.caps.gpus)
            )
            if len(valid) >= k and not full:
                return  # what the checks below conclude, without ranking (watchers take this path)
            ranked = self.eligible_nodes(job, now)
            if self.node_id not in ranked:
                return
            if full:
                self._deferred[job.job_id] = None  # looked at again when a slot (or a GPU) frees
                if not self.cfg.pass_when_full or len(valid) >= k or self.node_id in job.passed:
                    return
            elif len(valid) >= k:
                return
            # (no claim and no pass yet, the common case: the ranking itself, shared and not mutated below)
            candidates = _candidates_left(job, ranked) if job.claims or job.passed else ranked
            if now < self._started + self.cfg.advert_interval and self.cfg.require_stake:
                candidates = self._warming_candidates(job, candidates)
            pos = candidates.index(self.node_id)
            if job.passed and not full and all(n in job.passed for n in candidates):
                pos = 0  # everyone left passed (was full): whoever frees first claims, as a deferred node did
            at = job.epoch + claiming.claim_delay(pos, k - len(valid), self.cfg.fallback_interval)
            if now < at:
                self._wake_fallback(job.job_id, at)
                return
            if full:  # my turn, and no slot: pass, so that the next rank need not wait for its own turn
                job.passed = job.passed | {self.node_id}
                job.epoch = now
                out.append(Publish(m.RELEASE, {"job": job.job_id, "reason": "busy"}, job.shard))
                out.append(JobEvent(job.job_id, "passed", "busy", self.node_id))
                return
            job.claims[self.node_id] = Claim(now)
            job.claimed = True
            out.append(Publish(m.CLAIM, {"job": job.job_id, "caps": self.caps.to_dict()}, job.shard))
            out.append(JobEvent(job.job_id, "claimed", "", self.node_id))
            valid = self._valid_claims(job, now)
            winners = tuple(claiming.top_claimants(job.job_id, job.seed, valid, k))
            self._set_winners(job, winners, now)
            mine = job.claims[self.node_id]
        if mine.lapsed or mine.released:
            return
        is_winner = self.node_id in winners
        if is_winner and not job.executing and job.result is None:
            if job.spec.encrypted and not job.granted and job.origin != self.node_id:
                start = mine.winner_since if mine.winner_since is not None else now
                if now >= start + self.cfg.grant_timeout:
                    self._release(job, "no bundle key granted in time", now, out)
                else:
                    self._wake(job.job_id, start + self.cfg.grant_timeout)
                return
            self._start_executing(job)
            out.append(StartExecution(job.job_id, job.spec, job.granted))
            out.append(JobEvent(job.job_id, "running", "", self.node_id))
            self._wake(job.job_id, self._lapse_deadline(job, mine))
        elif not is_winner and job.executing:
            self._stop_executing(job)
            out.append(CancelExecution(job.job_id, "outranked by other claimants; standing by"))
            out.append(JobEvent(job.job_id, "standby", "outranked by other claimants", self.node_id))

    def _warming_candidates(self, job: JobView, candidates: list[bytes]) -> list[bytes]:
        """Candidates as a node in its first advert interval counts them: every staked node whose advert it
        has not seen yet may be eligible and ahead of it (it has not heard every advert yet; a node that
        joins or restarts would otherwise rank itself first and outrank the claimant already running)."""
        unknown = [
            n for n in self.staked if n not in self.adverts and n not in job.claims and n != self.node_id
        ]
        if job.spec.executors:
            unknown = [n for n in unknown if n in job.spec.executors]
        if not unknown:
            return candidates
        return claiming.rank(job.job_id, job.seed, candidates + unknown)

    def _no_eligible(self, job: JobView, now: float, out: list[Action]) -> None:
        grace = self.cfg.no_eligible_grace or self.cfg.advert_interval
        if now < job.t0 + grace:
            self._wake(job.job_id, job.t0 + grace)
            return
        if not job.no_eligible_reason:
            job.no_eligible_reason = self._why_none_eligible(job, now)
            self._fail(job, job.no_eligible_reason, now, out)

    def _maybe_begin_reveal(self, job: JobView, now: float) -> None:
        if job.reveal_started is not None:
            return
        winners = job.winners
        k = job.spec.redundancy
        commits = job.commits
        committed = [w for w in winners if w in commits] if winners else []
        if len(winners) == k and len(committed) == k:
            self._begin_reveal(job, now)
            return
        hard = job.spec.deadline - self.cfg.reveal_window if job.spec.deadline else None
        if hard is not None and now >= hard and job.commits:
            self._begin_reveal(job, now)
            return
        if len(winners) < k and (
            any(n not in claims for n in self.eligible_nodes(job, now))
            if (claims := job.claims)
            else self.eligible_nodes(job, now)  # (no claim yet: any eligible node is still to come)
        ):
            if hard is not None and hard > now:
                self._wake(job.job_id, hard)
            return  # a fallback claimant is still to come: revealing now would let it copy
        if committed:
            # Once anyone committed, everyone else has until the slowest winner's execution deadline.
            dls = [self._lapse_deadline(job, job.claims[w]) for w in winners if w not in job.commits]
            limit = max(dls) if dls else now
            if hard is not None:
                limit = min(limit, hard)
            if now >= limit:
                self._begin_reveal(job, now)
            else:
                self._wake(job.job_id, limit)

    def _begin_reveal(self, job: JobView, now: float) -> None:
        job.reveal_started = now
        job.reveal_deadline = now + self.cfg.reveal_window
        # a job the chain closed stays closed; its window still judges dissent and silence
        if job.phase not in FINAL:
            job.phase = REVEALING
        self._wake(job.job_id, job.reveal_deadline)

    def _my_reveal(self, job: JobView, now: float, out: list[Action]) -> None:
        r = job.result
        if r is None or job.revealed or self.node_id not in job.commits:
            return
        job.revealed = True
        job.reveals[self.node_id] = (r.trace_root, b"")
        body = {
            "job": job.job_id,
            "root": r.trace_root,
            "salt": r.salt,
            "trace_cid": r.trace_cid,
            "result_cid": r.result_cid,
        }
        job.reveal_msgs[self.node_id] = body
        out.append(self._reveal_publish(job, body, out))
        out.append(
            SubmitTx("reveal", job.job_id, {"root": r.trace_root, "salt": r.salt, "usage_wei": r.usage_wei})
        )
        out.append(JobEvent(job.job_id, "revealed", r.trace_root.hex(), self.node_id))

    @staticmethod
    def _reveal_publish(job: JobView, body: dict[str, Any], out: list[Action]) -> Publish:
        """The reveal's message. When this node's commitment is still unsent (in ``out``: it completed the k, so
        it opens at once), the reveal carries it and replaces the commit: one message instead of two, the same
        content (watchers take the commitment, then the opening; a k = 1 job always goes this way)."""
        for i, a in enumerate(out):
            if type(a) is Publish and a.kind == m.COMMIT and a.body["job"] == job.job_id:
                del out[i]
                body["commitment"] = a.body["commitment"]
                break
        return Publish(m.REVEAL, body, job.shard)

    def _adopt_root(self, job: JobView) -> None:
        """Settled on chain before this node saw a quorum of reveals: take the accepted root once the reveals it
        sees make one (so its clients can fetch and verify the result), without acting on it."""
        reveals = {n: root for n, (root, _) in job.reveals.items()}
        d = decide(reveals, job.spec.redundancy, job.spec.quorum, final=False)
        if d.outcome is Outcome.ACCEPTED:
            job.accepted_root = d.root

    def _decide(self, job: JobView, now: float, out: list[Action]) -> None:
        final = job.reveal_deadline is not None and now >= job.reveal_deadline
        reveals = {n: root for n, (root, _) in job.reveals.items()} if job.reveals else _NO_REVEALS
        d = decide(reveals, job.spec.redundancy, job.spec.quorum, final=final)
        if d.outcome is Outcome.ACCEPTED:
            job.phase = ACCEPTED
            job.accepted_root = d.root
            self._await_chain(job, now)
            out.append(JobEvent(job.job_id, "accepted", d.root.hex() if d.root else ""))
            if self.node_id in d.agreeing:
                # Settling order: HRW rank among all committers (the same on every node once commitments are in).
                order = claiming.rank(job.job_id, job.seed, job.commits)
                job.settle_at = now + order.index(self.node_id) * self.cfg.settle_backup_delay
            elif _paid_by_voucher(job.spec) and job.origin != self.node_id:
                # A voucher-paid job settles in its executor's batch, which names no job: a bystander sees no
                # chain event for it, so it forgets the job once verified.
                job.finished_at = now
                job.forget_at = self._forget_time(now)
                self._wake(job.job_id, job.forget_at)
        elif d.outcome is Outcome.FAILED:
            self._fail(job, d.reason, now, out)
        if job.phase != REVEALING:
            self._late_evidence(job, now, out)

    def _late_evidence(self, job: JobView, now: float, out: list[Action]) -> None:
        """Once decided: a reveal against the accepted root is dissent, and when the reveal window closes a
        commitment without a reveal is silence. Runs until the window closes, so reveals that arrive after
        the quorum (or after settlement) are still judged."""
        if job.accepted_root is not None:
            for n, (root, raw) in job.reveals.items():
                if root != job.accepted_root:
                    self._evidence(job, EvidenceKind.DISSENT, n, (raw,) if raw else (), now, out)
        if job.reveal_deadline is None:
            return
        if now < job.reveal_deadline:
            self._wake(job.job_id, job.reveal_deadline)
            return
        for n in sorted(job.commits):
            if n not in job.reveals:
                raw = job.commits[n][1]
                self._evidence(job, EvidenceKind.NO_REVEAL, n, (raw,) if raw else (), now, out)

    def _settle(self, job: JobView, now: float, out: list[Action]) -> None:
        if job.settle_at is None:
            return
        if now >= job.settle_at:
            job.settle_at = None
            out.append(SubmitTx("settle", job.job_id, {"root": job.accepted_root}))
        else:
            self._wake(job.job_id, job.settle_at)

    def _fail(self, job: JobView, reason: str, now: float, out: list[Action]) -> None:
        if job.phase in (FAILED, *FINAL):
            return
        job.phase = FAILED
        job.fail_reason = reason
        self._await_chain(job, now)
        if job.executing:
            self._stop_executing(job)
            out.append(CancelExecution(job.job_id, reason))
        out.append(JobEvent(job.job_id, "failed", reason))
        # Anyone may trigger the refund after the deadline; the origin first, executors as backups.
        if job.spec.deadline and (job.origin == self.node_id or self.node_id in job.claims):
            delay = 0.0 if job.origin == self.node_id else self.cfg.settle_backup_delay
            job.settle_at = job.spec.deadline + delay
            if job.settle_at > now:
                self._wake(job.job_id, job.settle_at)  # (at or past it, the caller's step refunds at once)

    def _evidence(
        self,
        job: JobView,
        kind: EvidenceKind,
        accused: bytes,
        items: tuple[bytes, ...],
        now: float,
        out: list[Action],
    ) -> None:
        key = (kind.value, accused)
        if key in job.evidence_sent:
            return
        job.evidence_sent |= {key}
        ev = Evidence(kind, job.job_id, accused, tuple(i for i in items if i), job.accepted_root or b"")
        out.append(JobEvent(job.job_id, "evidence", kind.value, accused))
        # Only the executors that agreed (or, for equivocation, anyone who saw both messages) post it.
        poster = self.node_id in job.commits or self.node_id == job.origin  # k=1: the origin reports
        if kind is EvidenceKind.EQUIVOCATION or (poster and self.node_id != accused):
            gossip = None
            if ev.items:
                body = {
                    "kind": kind.value,
                    "job": job.job_id,
                    "accused": accused,
                    "items": list(ev.items),
                    "root": ev.accepted_root,
                }
                gossip = Publish(m.EVIDENCE, body, job.shard)
            tx = SubmitTx("slash", job.job_id, {"kind": kind.value, "node": accused, "evidence": ev})
            if kind is EvidenceKind.EQUIVOCATION:
                turn = self._poster_turn(job, accused, now)
                if turn:  # not first: post only if the chain has not reported the slash by then
                    at = now + turn * self.cfg.evidence_stagger
                    job.slash_due = {**(job.slash_due or {}), accused: (at, tx, gossip)}
                    job.quiet = False
                    self._wake(job.job_id, at)
                    return
            if gossip is not None:
                out.append(gossip)
            out.append(tx)

    def _poster_turn(self, job: JobView, accused: bytes, now: float) -> int:
        """This node's turn (0 = first) to post equivocation against ``accused`` on chain.

        Every observer may post, but only the first report pays (later ones revert with ``AlreadySlashed``
        and waste gas), so observers take turns ``evidence_stagger`` apart and skip theirs once the chain
        reports the slash: the job's origin first, then the other committed executors, then the eligible
        nodes, each group in an order keyed on (job, accused, node) so that no node is always first. Turns
        stop growing at :data:`MAX_POSTER_TURN`: if that many observers were all silent, the rest post.
        """
        me = self.node_id
        if me == job.origin:
            return 0

        def order(n: bytes) -> bytes:
            return sha256(job.job_id, accused, n)

        committed = sorted((n for n in job.commits if n != accused and n != job.origin), key=order)
        if me in committed:
            return min(1 + committed.index(me), MAX_POSTER_TURN)
        skip = {accused, job.origin, *committed}
        rest = sorted({me, *(n for n in self.eligible_nodes(job, now) if n not in skip)}, key=order)
        return min(1 + len(committed) + rest.index(me), MAX_POSTER_TURN)

    def _post_due_evidence(self, job: JobView, now: float, out: list[Action]) -> None:
        """Post the equivocation evidence whose turn came (the chain did not report the slash before it)."""
        due = job.slash_due or {}
        for accused in [a for a, (at, _, _) in due.items() if at <= now]:
            _, tx, gossip = due.pop(accused)
            if gossip is not None:
                out.append(gossip)
            out.append(tx)
        job.slash_due = due or None
        if job.slash_due is None and job.finished_at is not None:  # forgetting was held back for it
            job.forget_at = max(now, job.forget_at)
            self._wake(job.job_id, job.forget_at)


def _gpus_needed(spec: JobSpec) -> int:
    """GPUs a job holds while it runs (0 for CPU jobs)."""
    gpu = spec.manifest.gpu
    return gpu.count if gpu.required else 0


def _paid_by_voucher(spec: JobSpec) -> bool:
    """Paid from the origin's deposit by a voucher (no per-job escrow, so no chain event funds it)."""
    return spec.pay == PAY_VOUCHER


#: Handlers of the job-scoped message kinds (``_on_message`` dispatches by kind).
_JOB_HANDLERS: dict[str, Callable[[NodeCore, JobView, m.Message, float, list[Action]], None]] = {
    m.CLAIM: NodeCore._on_claim,
    m.RELEASE: NodeCore._on_release,
    m.COMMIT: NodeCore._on_commit,
    m.REVEAL: NodeCore._on_reveal,
    m.GRANT: NodeCore._on_grant,
    m.CHECKPOINT: NodeCore._on_checkpoint,
    m.EVIDENCE: NodeCore._on_evidence,
}
