"""Commit/reveal, quorum decisions and slashing evidence.

A commitment binds a node to a trace root without revealing it:
``sha256(job_id || node_id || trace_root || salt)`` (128 bytes in, the same formula on chain
through the SHA-256 precompile). Because the node id is inside, a commitment copied from a
peer never verifies for the copier.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .encoding import sha256
from .errors import ProtocolError

HASH_LEN = 32


def commitment(job_id: bytes, node_id: bytes, trace_root: bytes, salt: bytes) -> bytes:
    """The salted commitment an executor publishes before revealing its trace root."""
    for name, v in (("job_id", job_id), ("node_id", node_id), ("trace_root", trace_root), ("salt", salt)):
        if len(v) != HASH_LEN:
            raise ProtocolError("bad-commitment", f"{name} must be {HASH_LEN} bytes")
    return sha256(job_id, node_id, trace_root, salt)


def reveal_matches(commit: bytes, job_id: bytes, node_id: bytes, trace_root: bytes, salt: bytes) -> bool:
    """True when a reveal opens ``commit`` for this job and this node."""
    try:
        return commitment(job_id, node_id, trace_root, salt) == commit
    except ProtocolError:
        return False


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    PENDING = "pending"  # more reveals could still reach quorum
    FAILED = "failed"  # quorum is now impossible


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    root: bytes | None  # the accepted root
    agreeing: tuple[bytes, ...]  # nodes that revealed the accepted root (sorted)
    dissenting: tuple[bytes, ...]  # nodes that revealed another root (sorted)
    reason: str = ""


def decide(reveals: dict[bytes, bytes], redundancy: int, quorum: int, final: bool = False) -> Decision:
    """Quorum rule: accept root R when at least ``quorum`` (a strict majority of ``redundancy``) reveals equal R.

    ``reveals`` maps node id -> revealed root (only reveals that opened a valid commitment).
    ``final`` means no further reveal can arrive (reveal deadline passed).
    Never accepts a minority result: quorum > redundancy / 2 is checked.
    """
    if not (redundancy // 2 < quorum <= redundancy):
        raise ProtocolError("bad-quorum", f"quorum {quorum} is not a strict majority of {redundancy}")
    if not reveals and not final and redundancy >= quorum:
        return _PENDING  # the common case while waiting for the first reveal (what the general path returns)
    if quorum == 1 and len(reveals) == 1:  # k = 1 (q a strict majority): its one reveal is the result
        ((node, root),) = reveals.items()
        return Decision(Outcome.ACCEPTED, root, (node,), ())
    counts: dict[bytes, int] = {}
    for r in reveals.values():
        counts[r] = counts.get(r, 0) + 1
    if counts:
        root, n = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
        if n >= quorum:
            agree = tuple(sorted(k for k, v in reveals.items() if v == root))
            dissent = tuple(sorted(k for k, v in reveals.items() if v != root))
            return Decision(Outcome.ACCEPTED, root, agree, dissent)
    missing = max(0, redundancy - len(reveals))
    best = max(counts.values(), default=0)
    if final or best + missing < quorum:
        reason = f"no quorum: {len(reveals)} of {redundancy} revealed, best agreement {best}, quorum {quorum}"
        return Decision(Outcome.FAILED, None, (), tuple(sorted(reveals)), reason)
    return Decision(Outcome.PENDING, None, (), ())


_PENDING = Decision(Outcome.PENDING, None, (), ())


class EvidenceKind(StrEnum):
    EQUIVOCATION = "equivocation"  # two conflicting signed messages from one node
    NO_REVEAL = "no_reveal"  # committed, never revealed by the deadline
    DISSENT = "dissent"  # revealed a root that contradicts the accepted quorum


@dataclass(frozen=True)
class Evidence:
    """A slashing case against ``accused`` for ``job_id``; ``items`` are raw signed messages."""

    kind: EvidenceKind
    job_id: bytes
    accused: bytes
    items: tuple[bytes, ...]
    accepted_root: bytes = b""
