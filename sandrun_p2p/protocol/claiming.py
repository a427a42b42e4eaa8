"""Leader-free claiming: eligibility, rendezvous (HRW) ranking, fallback schedule, shards.

Every node ranks the eligible set of a job by ``H(job_id || seed || node_id)`` (highest first),
where ``seed`` is a chain value the client cannot choose. The score of a node does not depend
on anyone's view, so when views differ the claimants can still be ordered the same way by all.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .encoding import sha256
from .jobspec import JobSpec, Manifest, version_tuple
from .memo import remember

#: What an executor must enforce to be trusted with anonymous code.
REQUIRED_ENFORCEMENT = frozenset({"network"})


@dataclass(frozen=True)
class Gpu:
    model: str
    vram_mb: int
    cc: str = ""
    cuda: str = ""


@dataclass(frozen=True)
class Capabilities:
    """What a node offers, as carried in its advert."""

    cpus: int
    mem_mb: int
    disk_mb: int = 0
    gpus: tuple[Gpu, ...] = ()
    enforced: frozenset[str] = frozenset()
    executor: str = "local"
    max_jobs: int = 1

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Capabilities:
        return cls(
            cpus=d["cpus"],
            mem_mb=d["mem_mb"],
            disk_mb=d.get("disk_mb", 0),
            gpus=tuple(
                Gpu(g["model"], g["vram_mb"], g.get("cc", ""), g.get("cuda", "")) for g in d.get("gpus", [])
            ),
            enforced=frozenset(d.get("enforced", ())),
            executor=d.get("executor", "local"),
            max_jobs=d.get("max_jobs", 1),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpus": self.cpus,
            "mem_mb": self.mem_mb,
            "disk_mb": self.disk_mb,
            "gpus": [{"model": g.model, "vram_mb": g.vram_mb, "cc": g.cc, "cuda": g.cuda} for g in self.gpus],
            "enforced": sorted(self.enforced),
            "executor": self.executor,
            "max_jobs": self.max_jobs,
        }


def gpu_fits(gpu: Gpu, manifest: Manifest) -> bool:
    req = manifest.gpu
    return (
        gpu.vram_mb >= req.min_vram_gb * 1024
        and version_tuple(gpu.cc or "0") >= version_tuple(req.compute_capability)
        and version_tuple(gpu.cuda or "0") >= version_tuple(req.cuda_version)
    )


def ineligibility(caps: Capabilities, manifest: Manifest) -> str | None:
    """Why a node with ``caps`` cannot run ``manifest`` (None when it can)."""
    missing = REQUIRED_ENFORCEMENT - caps.enforced
    if missing:
        return f"does not enforce {', '.join(sorted(missing))}"
    if caps.cpus < manifest.cpu:
        return f"{caps.cpus} CPUs < {manifest.cpu}"
    if caps.mem_mb < manifest.memory_mb:
        return f"{caps.mem_mb} MB memory < {manifest.memory_mb} MB"
    if manifest.gpu.required:
        fitting = sum(1 for g in caps.gpus if gpu_fits(g, manifest))
        if fitting < manifest.gpu.count:
            return (
                "no GPU meets the requirement"
                if not caps.gpus
                else f"{fitting} fitting GPU(s) < {manifest.gpu.count}"
            )
    return None


def eligible(caps: Capabilities, manifest: Manifest) -> bool:
    return ineligibility(caps, manifest) is None


def widen_seed(job_id: bytes, chain_seed: bytes) -> bytes:
    """The 32-byte ranking seed from the chain's short seed (8 bytes of a block hash recorded at escrow).

    Every node derives it the same way, so the client, who cannot choose the block hash, cannot choose the
    ranking either.
    """
    return sha256(b"sandrun-p2p/seed\x00", job_id, chain_seed)


def hrw_score(job_id: bytes, seed: bytes, node_id: bytes) -> bytes:
    """Rendezvous score; compare as big-endian bytes, higher wins."""
    return sha256(b"sandrun-p2p/hrw\x00", job_id, seed, node_id)


#: Scores of recently ranked jobs (insertion-ordered, oldest dropped first). Every node of a shard ranks
#: the same job; in one process (the simulator) this turns n hashes per node into n per job.
#: (Bounded memo tables: :mod:`.memo`.)
_SCORE_CACHE: OrderedDict[tuple[bytes, bytes], dict[bytes, bytes]] = OrderedDict()
_SCORE_CACHE_JOBS = 4096


#: Rankings of recently ranked node sets (every node of a shard that knows the same eligible nodes ranks
#: the same set, in its own order; the ranking does not depend on it). Shared: callers must not mutate it.
_RANK_CACHE: OrderedDict[tuple[bytes, bytes, frozenset[bytes]], list[bytes]] = OrderedDict()


def rank(
    job_id: bytes, seed: bytes, node_ids: Iterable[bytes], members: frozenset[bytes] | None = None
) -> list[bytes]:
    """Node ids ordered best first (a list the caller must not mutate).

    ``members``: ``frozenset(node_ids)`` when the caller keeps one (it saves building and hashing it).
    """
    nodes = list(node_ids)
    if len(nodes) < 2:
        return nodes
    if members is None:
        members = frozenset(nodes)
    if len(members) != len(nodes):  # repeated ids: ranked as given
        return _rank(job_id, seed, nodes)
    memo = (job_id, seed, members)
    ranked = _RANK_CACHE.get(memo)
    if ranked is None:
        ranked = remember(_RANK_CACHE, memo, _rank(job_id, seed, nodes), _SCORE_CACHE_JOBS)
    return ranked


def _rank(job_id: bytes, seed: bytes, nodes: list[bytes]) -> list[bytes]:
    key = (job_id, seed)
    scores = _SCORE_CACHE.get(key)
    if scores is None:
        scores = remember(_SCORE_CACHE, key, {}, _SCORE_CACHE_JOBS)
    for n in nodes:
        if n not in scores:
            scores[n] = hrw_score(job_id, seed, n)
    return sorted(nodes, key=scores.__getitem__, reverse=True)


def top_claimants(job_id: bytes, seed: bytes, claimants: Iterable[bytes], k: int) -> list[bytes]:
    """The k claimants that win a conflict: the best HRW scores (view-independent)."""
    return rank(job_id, seed, claimants)[:k]


def claim_delay(position: int, redundancy: int, fallback_interval: float) -> float:
    """Seconds after the announcement at which the node at 0-based ``position`` may claim.

    The top ``redundancy`` claim at once; rank r > k (1-based) waits (r - k) fallback intervals
    and claims only if fewer than k valid claims are known by then.
    """
    return 0.0 if position < redundancy else (position - redundancy + 1) * fallback_interval


def shard_of(job_id: bytes, shard_bits: int) -> int:
    """Shard of a job among 2**shard_bits, from the first two bytes of its id."""
    if shard_bits == 0:
        return 0
    return int.from_bytes(job_id[:2], "big") >> (16 - shard_bits)


def in_shards(
    spec: JobSpec, fields: dict[str, Any], shard_bits: int, serves: Callable[[int], bool]
) -> JobSpec:
    """``spec``, or the same job (``fields``: its ``JobSpec.from_dict`` input) with another nonce, so that its id
    falls in a shard ``serves`` accepts: a job's origin reads only its shards' topics, so it would never see the
    claims of a job elsewhere. The nonce is the client's free choice: the next ones are hashed from the first
    (random when the caller made it so); with s of 2**shard_bits shards served one fits with chance
    s / 2**shard_bits. ``serves`` must accept at least one shard."""
    first, i = spec.nonce, 0
    while not serves(shard_of(spec.job_id, shard_bits)):
        i += 1
        spec = JobSpec.from_dict({**fields, "nonce": sha256(first, i.to_bytes(4, "big"))[:16]})
    return spec
