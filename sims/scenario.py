"""Scenario files (TOML) as plain dataclasses, with defaults for everything but the node groups and jobs."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sandrun_p2p.protocol.node import CoreConfig


@dataclass(frozen=True)
class Latency:
    """Per-link one-way latency: ``uniform`` (mean ± spread·mean, gossipsub's 25 ms ± 10%) or ``geo``
    (a mix of regions: ``intra`` within a region, ``inter`` across, ``regions`` equally likely)."""

    dist: str = "uniform"
    mean: float = 0.025
    spread: float = 0.1
    regions: int = 3
    intra: float = 0.010
    inter: float = 0.080


@dataclass(frozen=True)
class Network:
    latency: Latency = field(default_factory=Latency)
    mesh_degree: int = 6  # gossipsub D
    heartbeat: float = 1.0  # lazy gossip (IHAVE) interval
    loss: float = 0.0  # per-link, per-message loss probability
    bandwidth_mbps: float = 100.0


@dataclass(frozen=True)
class NodeGroup:
    count: int
    cpus: int = 4
    mem_mb: int = 8192
    max_jobs: int = 2
    gpus: tuple[dict[str, Any], ...] = ()
    speed: float = 1.0  # run-time divisor
    shards_per_node: int = 1


@dataclass(frozen=True)
class JobKind:
    weight: float = 1.0
    cpu: int = 1
    memory_mb: int = 256
    timeout: int = 120
    gpu: dict[str, Any] | None = None
    redundancy: int = 1
    quorum: int = 0  # 0: default strict majority
    runtime_mean: float = 20.0
    runtime_cv: float = 0.3
    value_usd: float = 0.05
    deadline: float = 600.0  # seconds after submission


@dataclass(frozen=True)
class Jobs:
    count: int = 100
    rate: float = 1.0  # Poisson arrivals per simulated second
    start: float = 5.0
    mix: tuple[JobKind, ...] = (JobKind(),)


@dataclass(frozen=True)
class Executor:
    fail_rate: float = 0.0  # ExecutionFailed instead of a result
    jitter: float = 0.05  # per-execution run-time noise (fraction)


@dataclass(frozen=True)
class Chain:
    block_time: float = 2.0
    finality_blocks: int = 1
    tx_latency: float = 0.2
    stake_eth: float = 1.0
    slash_fraction: float = 0.5
    gas_price_gwei: float = 1.0
    gas: dict[str, int] = field(default_factory=dict)  # overrides of chain.GAS


@dataclass(frozen=True)
class Churn:
    fraction: float = 0.0  # share of honest nodes that churn
    crash_rate_per_h: float = 0.0  # per churning node
    mean_downtime: float = 120.0
    joins: int = 0  # brand-new nodes joining during the run
    join_start: float = 0.0
    join_end: float = 0.0


@dataclass(frozen=True)
class Partition:
    at: float
    heal: float
    fraction: float = 0.5


@dataclass(frozen=True)
class Adversary:
    """kind: lazy (guess, no work), copy (commit junk, reveal a peer's root), wrong, colluder, noreveal, sybil.

    strategy (colluders/sybils): ``always`` (cheat on every job), ``committee`` (cheat only when the
    group holds a quorum of the winners it sees), ``sleeper`` (cheat only once trusted).
    """

    kind: str
    fraction: float = 0.0
    count: int = 0
    group: str = "g"
    strategy: str = "committee"
    cpus: int = 4
    mem_mb: int = 8192
    max_jobs: int = 2
    gpus: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Verification:
    mode: str = "fixed"  # fixed: the job mix's k/q; adaptive: sandrun_p2p.protocol.trust
    probation: int = 3
    half_trust: float = 5.0
    spot_min: float = 0.05
    spot_max: float = 0.5
    high_value_usd: float = 1.0
    gate_checks: bool = False  # spot checks only on nodes the client trusts (JobSpec.executors)
    check_pool_min: int = 2
    open_check_redundancy: int = 1  # k (= q) of a check that could not be gated
    credibility_target: float = 0.0  # the rest: sandrun_p2p.protocol.trust.TrustPolicy
    challenge_window: float = 0.0
    dispute_redundancy: int = 4
    verdict_margin: int = 2
    verdict_target: float = 1e-4


@dataclass(frozen=True)
class Scenario:
    name: str
    seed: int = 1
    horizon: float = 3600.0  # hard stop (simulated seconds)
    drain: float = 60.0  # keep running after the last job is final (slashes, late messages)
    nodes: tuple[NodeGroup, ...] = ()
    jobs: Jobs = field(default_factory=Jobs)
    network: Network = field(default_factory=Network)
    protocol: CoreConfig = field(
        default_factory=lambda: CoreConfig(
            advert_interval=30, fallback_interval=2, commit_grace=10, reveal_window=10, require_stake=True
        )
    )
    executor: Executor = field(default_factory=Executor)
    chain: Chain = field(default_factory=Chain)
    churn: Churn = field(default_factory=Churn)
    partitions: tuple[Partition, ...] = ()
    adversaries: tuple[Adversary, ...] = ()
    verification: Verification = field(default_factory=Verification)
    sign: bool = False  # sign/encode/decode every message (slow; for small runs)
    # Random streams: "global" (one stream for every draw) or "node" (arrivals and setup on the global stream,
    # each node's draws - its gossip delays, executions, crashes - on its own): needed to split a run over
    # processes by shard group (sims.runner), where a run gives the same metrics for any number of processes.
    rng_streams: str = "global"


def _build(cls: type, d: dict[str, Any] | None, where: str) -> Any:
    d = dict(d or {})
    known = {f.name for f in fields(cls)}
    extra = sorted(set(d) - known)
    if extra:
        raise ValueError(f"{where}: unknown key(s) {', '.join(extra)}")
    for k, v in list(d.items()):
        if isinstance(v, list):
            d[k] = tuple(v)
    return cls(**d)


def from_dict(d: dict[str, Any]) -> Scenario:
    d = dict(d)
    net = dict(d.pop("network", {}))
    lat = _build(Latency, net.pop("latency", {}), "network.latency")
    jobs = dict(d.pop("jobs", {}))
    mix = tuple(_build(JobKind, k, "jobs.mix") for k in jobs.pop("mix", [{}]))
    proto = dict(d.pop("protocol", {}))
    base = Scenario("x").protocol
    sc = Scenario(
        name=d.pop("name"),
        seed=d.pop("seed", 1),
        horizon=d.pop("horizon", 3600.0),
        drain=d.pop("drain", 60.0),
        sign=d.pop("sign", False),
        rng_streams=d.pop("rng_streams", "global"),
        nodes=tuple(_build(NodeGroup, g, "nodes") for g in d.pop("nodes", [])),
        jobs=replace(_build(Jobs, jobs, "jobs"), mix=mix),
        network=replace(_build(Network, net, "network"), latency=lat),
        protocol=replace(base, **proto),
        executor=_build(Executor, d.pop("executor", {}), "executor"),
        chain=_build(Chain, d.pop("chain", {}), "chain"),
        churn=_build(Churn, d.pop("churn", {}), "churn"),
        partitions=tuple(_build(Partition, p, "partitions") for p in d.pop("partitions", [])),
        adversaries=tuple(_build(Adversary, a, "adversaries") for a in d.pop("adversaries", [])),
        verification=_build(Verification, d.pop("verification", {}), "verification"),
    )
    if d:
        raise ValueError(f"scenario: unknown key(s) {', '.join(sorted(d))}")
    if sc.rng_streams not in ("global", "node"):
        raise ValueError(f"scenario: rng_streams must be 'global' or 'node', not {sc.rng_streams!r}")
    return sc


def load(path: str | Path, overrides: dict[str, Any] | None = None) -> Scenario:
    """Read a scenario file; ``overrides`` maps dotted keys (``jobs.count``) to values."""
    with open(path, "rb") as f:
        d = tomllib.load(f)
    for key, value in (overrides or {}).items():
        apply_override(d, key, value)
    return from_dict(d)


def apply_override(d: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts; ``nodes.0.count`` indexes lists."""
    parts = key.split(".")
    cur: Any = d
    for p in parts[:-1]:
        cur = cur[int(p)] if isinstance(cur, list) else cur.setdefault(p, {})
    last = parts[-1]
    if isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value
