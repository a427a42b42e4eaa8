"""An in-memory network of NodeCores (seeded, every message signed and decoded): for tests and `selfcheck`."""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from sandrun_p2p.protocol import messages as m
from sandrun_p2p.protocol.claiming import Capabilities
from sandrun_p2p.protocol.encoding import sha256
from sandrun_p2p.protocol.events import (
    CancelExecution,
    ChainUpdate,
    ExecutionDone,
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
from sandrun_p2p.protocol.identity import NodeKey
from sandrun_p2p.protocol.jobspec import JobSpec, Manifest
from sandrun_p2p.protocol.node import CoreConfig, NodeCore

CPU = Capabilities(cpus=4, mem_mb=8192, disk_mb=10000, enforced=frozenset({"network", "memory"}), max_jobs=4)


def make_spec(i: int = 0, k: int = 1, q: int | None = None, deadline: int = 1000, **manifest) -> JobSpec:
    mf = {"entrypoint": "main.py", "timeout": 10, **manifest}
    return JobSpec.from_dict(
        {
            "code_cid": "bafkreitestcode" + "a" * 10,
            "manifest": mf,
            "redundancy": k,
            **({"quorum": q} if q else {}),
            "deadline": deadline,
            "nonce": i.to_bytes(4, "big"),
        }
    )


@dataclass
class SimNode:
    key: NodeKey
    core: NodeCore
    guard: m.ReplayGuard
    seq: int = 0
    alive: bool = True
    faulty: bool = False  # returns a wrong result
    silent: bool = False  # commits but never reveals
    slow: float = 0.0  # extra execution time
    executions: list[bytes] = field(default_factory=list)
    cancelled: list[bytes] = field(default_factory=list)
    grants: list[bytes] = field(default_factory=list)
    exec_gen: dict[bytes, int] = field(default_factory=dict)
    last_tick: float = -1.0
    ticks_at: int = 0
    events: list[JobEvent] = field(default_factory=list)


class Loop:
    """Seeded discrete-event loop over NodeCores; latency per delivery drawn from ``rng``."""

    def __init__(
        self, n: int, seed: int = 1, caps=CPU, config: CoreConfig | None = None, run_time: float = 1.0
    ):
        self.rng = random.Random(seed)
        self.cfg = config or CoreConfig(
            advert_interval=5, fallback_interval=1, commit_grace=3, reveal_window=2
        )
        self.now = 0.0
        self.q: list = []
        self.qseq = 0
        self.run_time = run_time
        self.nodes: dict[bytes, SimNode] = {}
        self.txs: list[tuple[bytes, SubmitTx]] = []
        self.settled: dict[bytes, bytes] = {}
        self.refunded: set[bytes] = set()
        self.slashed: set[tuple[bytes, bytes]] = set()  # (job, node); a second report reverts
        self.reverted: list[tuple[bytes, SubmitTx]] = []
        for i in range(n):
            key = NodeKey.from_seed(sha256(b"node", bytes([seed % 256, i])))
            c = caps[i] if isinstance(caps, list) else caps
            self.nodes[key.node_id] = SimNode(key, NodeCore(key.node_id, c, self.cfg), m.ReplayGuard())
        self.timers: dict[bytes, float] = {}

    def push(self, at: float, target: bytes, ev) -> None:
        self.qseq += 1
        heapq.heappush(self.q, (at, self.qseq, target, ev))

    def start(self, stagger: float = 0.0) -> None:
        """Start every node; with ``stagger`` node i starts i x stagger seconds later (divergent views)."""
        for i, nid in enumerate(sorted(self.nodes)):
            self.push(self.now + i * stagger, nid, Start())

    def submit(self, via: bytes, spec: JobSpec, seed: bytes = b"\x07" * 32) -> bytes:
        self.push(self.now, via, SubmitJob(spec, seed))
        return spec.job_id

    def kill(self, nid: bytes) -> None:
        self.nodes[nid].alive = False

    def run(self, until: float) -> None:
        """Process events up to ``until``; raw bytes are decoded at delivery, as the real adaptor does."""
        while self.q and self.q[0][0] <= until:
            at, _, target, ev = heapq.heappop(self.q)
            self.now = at
            node = self.nodes[target]
            if not node.alive:
                continue
            if isinstance(ev, Tick):
                if self.timers.get(target) != at:
                    continue  # superseded timer
                node.ticks_at = node.ticks_at + 1 if node.last_tick == at else 0
                node.last_tick = at
                if node.ticks_at > 100:
                    raise RuntimeError(
                        f"timer busy loop at t={at} (NodeCore keeps asking for a past deadline)"
                    )
            if isinstance(ev, bytes):
                ev = Received(m.decode(ev, node.guard, at))
            elif isinstance(ev, tuple):  # an execution finishing: dropped if it was cancelled meanwhile
                gen, ev = ev
                if node.exec_gen.get(ev.job_id) != gen:
                    continue
            self.apply(node, node.core.handle(ev, at))
        self.now = until

    def apply(self, node: SimNode, actions) -> None:
        for a in actions:
            if node.silent and isinstance(a, Publish) and a.kind == m.REVEAL:
                part = m.commit_part(a.body)  # it commits, only the opening is withheld
                if part is None:
                    continue
                a = Publish(*part, a.shard)
            if node.silent and isinstance(a, SubmitTx) and a.kind in ("reveal", "settle"):
                continue
            if isinstance(a, Publish):
                node.seq += 1
                raw = m.encode(node.key, a.kind, a.body, node.seq, int(self.now * 1000))
                for other in sorted(self.nodes):
                    if other == node.key.node_id:
                        continue
                    self.push(self.now + self.rng.uniform(0.02, 0.03), other, raw)
            elif isinstance(a, SetTimer):
                self.timers[node.key.node_id] = a.at
                self.push(a.at, node.key.node_id, Tick())
            elif isinstance(a, CancelExecution):
                node.cancelled.append(a.job_id)
                node.exec_gen[a.job_id] = node.exec_gen.get(a.job_id, 0) + 1
            elif isinstance(a, RequestGrant):
                grants = [[n, b"sealed-key-for-" + n[:8]] for n in a.nodes]
                self.apply(node, [Publish(m.GRANT, {"job": a.job_id, "grants": grants}, None)])
            elif isinstance(a, StartExecution):
                node.executions.append(a.job_id)
                node.grants.append(a.grant)
                gen = node.exec_gen[a.job_id] = node.exec_gen.get(a.job_id, 0) + 1
                root = sha256(b"wrong" if node.faulty else b"right", a.job_id)
                done = ExecutionDone(
                    a.job_id, root, sha256(node.key.node_id, a.job_id), "bafytrace", "bafyresult"
                )
                self.push(self.now + self.run_time + node.slow, node.key.node_id, (gen, done))
            elif isinstance(a, SubmitTx):
                self.txs.append((node.key.node_id, a))
                if a.kind == "settle" and a.job_id not in self.settled:
                    self.settled[a.job_id] = a.args["root"]
                    self.broadcast_chain(ChainUpdate("job_settled", a.job_id, data={"root": a.args["root"]}))
                if a.kind == "refund" and a.job_id not in self.refunded:
                    self.refunded.add(a.job_id)
                    self.broadcast_chain(ChainUpdate("job_refunded", a.job_id))
                if a.kind == "slash":
                    if (a.job_id, a.args["node"]) in self.slashed:
                        self.reverted.append((node.key.node_id, a))  # AlreadySlashed
                    else:
                        self.slashed.add((a.job_id, a.args["node"]))
                        reason = {"reason": a.args["kind"]}
                        self.broadcast_chain(ChainUpdate("slashed", a.job_id, a.args["node"], reason))
            elif isinstance(a, JobEvent):
                node.events.append(a)

    def broadcast_chain(self, ev: ChainUpdate) -> None:
        for nid in sorted(self.nodes):
            self.push(self.now + 0.5, nid, ev)


__all__ = ["CPU", "Loop", "Manifest", "make_spec"]
