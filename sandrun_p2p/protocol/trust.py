"""Adaptive verification: per-node trust from verified history, per-job redundancy and spot checks.

Pure and deterministic (no I/O, no clock, no randomness of its own). Anchors: BOINC's adaptive
replication (a host is trusted after a run of validated results; trusted hosts are replicated
only at random) and iExec's trust levels / Sarmenta's credibility (a result is accepted once the
probability that every agreeing executor is bad falls below a target).

How the agent uses it: the client's gateway node (the job's origin) keeps a :class:`TrustBook`
fed from chain facts (settlements name the agreeing executors, slashes name the cheaters, and a
failed spot check is a fraud proof). Before announcing, it calls :func:`plan` with the job's
value to pick redundancy/quorum. After a result is accepted it calls :func:`check_rate` with the
trust of the agreeing executors and :func:`should_check` with a secret only it knows (so an
executor cannot tell whether it is being checked); a check is a re-run of the same computation
as a new k=1 job, and the result is only released to the client once the check agrees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .encoding import sha256


@dataclass
class TrustRecord:
    verified: int = 0  # results confirmed by an independent executor (quorum peer or spot check)
    unverified: int = 0  # accepted results nobody else re-ran
    faults: int = 0  # slashed or failed a spot check


@dataclass(frozen=True)
class TrustPolicy:
    """Knobs of adaptive verification (all values are protocol options, same for every origin)."""

    probation: int = 3  # verified results before a node's k=1 results are only spot-checked
    half_trust: float = 5.0  # verified results at which trust reaches 0.5 (beyond probation)
    spot_min: float = 0.05  # spot-check rate for the most trusted node
    spot_max: float = 0.5  # spot-check rate right after probation
    high_value_usd: float = 1.0  # at or above: plain k=3, q=2 (and spot checks as usual)
    prior_bad: float = 0.2  # assumed share of bad nodes among unknown ones (for :func:`credibility`)
    gate_checks: bool = (
        False  # spot checks run only on trusted nodes (``JobSpec.executors``, :func:`check_executors`)
    )
    check_pool_min: int = 2  # fewer trusted candidates than this: the check is not gated
    open_check_redundancy: int = 1  # executors (all must agree) of a check that could not be gated


@dataclass
class TrustBook:
    """Trust of every node this origin has seen, from verified history only."""

    policy: TrustPolicy = field(default_factory=TrustPolicy)
    records: dict[bytes, TrustRecord] = field(default_factory=dict)

    def _rec(self, node: bytes) -> TrustRecord:
        r = self.records.get(node)
        if r is None:
            r = self.records[node] = TrustRecord()
        return r

    def verified(self, node: bytes) -> None:
        self._rec(node).verified += 1

    def unverified(self, node: bytes) -> None:
        self._rec(node).unverified += 1

    def fault(self, node: bytes) -> None:
        self._rec(node).faults += 1

    def trust(self, node: bytes) -> float:
        """0 for unknown, on probation or faulty nodes; then rises towards 1 with verified results."""
        r = self.records.get(node)
        if r is None or r.faults or r.verified < self.policy.probation:
            return 0.0
        v = r.verified - self.policy.probation + 1
        return v / (v + self.policy.half_trust)

    def on_probation(self, node: bytes) -> bool:
        r = self.records.get(node)
        return r is None or r.faults > 0 or r.verified < self.policy.probation


@dataclass(frozen=True)
class Plan:
    redundancy: int
    quorum: int


def plan(value_usd: float, policy: TrustPolicy) -> Plan:
    """Redundancy and quorum for a job of this value (chosen before the claimants are known)."""
    if value_usd >= policy.high_value_usd:
        return Plan(3, 2)
    return Plan(1, 1)


def check_rate(book: TrustBook, executors: tuple[bytes, ...], redundancy: int) -> float:
    """Probability that an accepted result is re-run before release.

    Results of any executor on probation are always checked; a k=1 result of a trusted node is
    checked at a rate that falls from ``spot_max`` to ``spot_min`` with its trust; quorum results
    (k >= 2) get the minimum rate (their agreement already verified each other).
    """
    p = book.policy
    if not executors or any(book.on_probation(n) for n in executors):
        return 1.0
    if redundancy >= 2:
        return p.spot_min
    t = min(book.trust(n) for n in executors)
    return p.spot_min + (p.spot_max - p.spot_min) * (1.0 - t)


def check_executors(
    book: TrustBook, candidates: list[bytes], exclude: set[bytes], limit: int = 64
) -> tuple[bytes, ...]:
    """Who may run a spot check (``JobSpec.executors``): candidates off probation and without faults, never the
    executors being checked, the most trusted first (at most ``limit``), sorted by id as the spec wants.

    Returns () when fewer than ``check_pool_min`` qualify: the check then runs on any eligible node.
    Why: an ungated check of a k=1 result is itself a random k=1 job, which a colluder confirms whenever it wins it.
    """
    ok = [n for n in candidates if n not in exclude and not book.on_probation(n)]
    if len(ok) < book.policy.check_pool_min:
        return ()
    ok.sort(key=lambda n: (-book.trust(n), n))
    return tuple(sorted(ok[:limit]))


def check_plan(gated: bool, policy: TrustPolicy) -> Plan:
    """Redundancy/quorum of a check: one trusted executor, or (while too few are trusted, e.g. at the start)
    ``open_check_redundancy`` random ones that must all agree, so a colluder alone cannot confirm a mate."""
    k = 1 if gated else policy.open_check_redundancy
    return Plan(k, k)


def should_check(secret: bytes, job_id: bytes, rate: float) -> bool:
    """Deterministic, unpredictable to executors (they do not know ``secret``) draw with probability ``rate``."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    x = int.from_bytes(sha256(b"sandrun-p2p/spot\x00", secret, job_id)[:8], "big")
    return x < rate * 2**64


def credibility(book: TrustBook, agreeing: tuple[bytes, ...]) -> float:
    """Probability that a result is right given these agreeing executors (Sarmenta-style, independent faults)."""
    f = book.policy.prior_bad
    bad = 1.0
    good = 1.0
    for n in agreeing:
        b = f * (1.0 - book.trust(n))
        bad *= b
        good *= 1.0 - b
    return good / (good + bad) if good + bad > 0 else 0.0
