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

Optimistic finality (``challenge_window`` > 0, the contract's batched settle/challenge/finalize path):
a released result stays *provisional* for the window. The origin's :class:`ChallengeLedger` remembers
who vouched for it (the executor and every agreeing checker); when any node is caught, every result it
vouched for that is still inside the window is re-run by a trusted node (:func:`check_plan`); if the
re-run disagrees, a tie-break (:func:`dispute_plan`, :func:`verdict`) overturns it and slashes its
vouchers. Catching one colluder this way unravels the mates it confirmed. A client that uses a result before its window ends is exposed.
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
    # spot checks run only on trusted nodes (``JobSpec.executors``, :func:`check_executors`)
    gate_checks: bool = False
    check_pool_min: int = 2  # fewer trusted candidates than this: the check is not gated
    open_check_redundancy: int = 1  # executors (all must agree) of a check that could not be gated
    credibility_target: float = 0.0  # > 0: open checks sized by it (:func:`open_check_redundancy`)
    challenge_window: float = 0.0  # seconds a released result stays provisional (audits); 0: final at once
    dispute_redundancy: int = 4  # executors (all must agree) of a tie-break run when results disagree
    verdict_margin: int = 2  # votes the winning root needs over the runner-up before anyone is slashed
    verdict_target: float = 1e-4  # and at most this chance that all its voters are bad (see :func:`all_bad`)

    def __post_init__(self) -> None:
        if self.probation < 1 or self.open_check_redundancy < 1 or self.dispute_redundancy < 1:
            raise ValueError("probation, open_check_redundancy and dispute_redundancy must be >= 1")
        if not 0.0 <= self.spot_min <= self.spot_max <= 1.0:
            raise ValueError("need 0 <= spot_min <= spot_max <= 1")
        if not 0.0 <= self.credibility_target < 1.0 or not 0.0 < self.prior_bad < 1.0:
            raise ValueError("need 0 <= credibility_target < 1 and 0 < prior_bad < 1")
        if self.challenge_window < 0 or self.verdict_margin < 1 or not 0.0 < self.verdict_target < 1.0:
            raise ValueError("need challenge_window >= 0, verdict_margin >= 1 and 0 < verdict_target < 1")


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
    book: TrustBook, candidates: list[bytes], exclude: set[bytes], limit: int = 64, need: int = 1
) -> tuple[bytes, ...]:
    """Who may run a spot check (``JobSpec.executors``): candidates off probation and without faults, never the
    executors being checked, the most trusted first (at most ``limit``), sorted by id as the spec wants.

    Returns () when fewer than ``check_pool_min`` (or ``need``, the check's redundancy) qualify: the check then
    runs on any eligible node.
    Why: an ungated check of a k=1 result is itself a random k=1 job, which a colluder confirms whenever it wins it.
    """
    ok = [n for n in candidates if n not in exclude and not book.on_probation(n)]
    if len(ok) < max(book.policy.check_pool_min, need):
        return ()
    ok.sort(key=lambda n: (-book.trust(n), n))
    return tuple(sorted(ok[:limit]))


def open_check_redundancy(policy: TrustPolicy) -> int:
    """Executors of a check that cannot be gated (nobody trusted yet): ``open_check_redundancy``, or with a
    ``credibility_target`` the smallest k whose all-bad chance with the checked executor, prior_bad**(1+k),
    meets it (Sarmenta's credibility with independent random executors; at most 8)."""
    if policy.credibility_target <= 0.0:
        return policy.open_check_redundancy
    k = 1
    while k < 8 and policy.prior_bad ** (1 + k) > policy.credibility_target:
        k += 1
    return k


def check_plan(gated: bool, policy: TrustPolicy) -> Plan:
    """Redundancy/quorum of a check: one trusted executor, or (while too few are trusted, e.g. at the start)
    :func:`open_check_redundancy` random ones that must all agree, so a colluder alone cannot confirm a mate."""
    k = 1 if gated else open_check_redundancy(policy)
    return Plan(k, k)


def dispute_plan(gated: bool, policy: TrustPolicy) -> Plan:
    """Redundancy/quorum of a tie-break once results disagree: ``dispute_redundancy`` executors that must all
    agree (trusted ones when gated). Disputes are rare, so they buy independence: a tie-break decides who is
    slashed, and bad nodes hidden among the trusted (sleepers, share s) frame an honest one only with s**k."""
    k = max(policy.dispute_redundancy, 1 if gated else open_check_redundancy(policy))
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


def all_bad(book: TrustBook, voters: set[bytes] | tuple[bytes, ...]) -> float:
    """Chance that every one of these voters is bad, each bad with ``prior_bad * (1 - trust)`` independently."""
    f = book.policy.prior_bad
    x = 1.0
    for n in voters:
        x *= f * (1.0 - book.trust(n))
    return x


def verdict(results: list[tuple[bytes, tuple[bytes, ...]]], book: TrustBook) -> bytes | None:
    """The root that disagreeing results support, or None (run another tie-break). Its losers get slashed.

    ``results``: (root, executors that agreed on it) per job. Every distinct executor is one vote; executors
    already caught (faults) do not vote. A root wins with ``verdict_margin`` votes more than the runner-up (one
    bad vote can neither confirm a mate alone nor outvote an honest executor) and when the chance that all its
    voters are bad (:func:`all_bad`) is at most ``verdict_target``: four random start-up nodes outvoting one
    are all colluders with chance f**4 = 1.6e-3 at f = 0.2, too likely to slash on.
    """
    votes: dict[bytes, set[bytes]] = {}
    faulty = book.records
    for root, nodes in results:
        s = votes.setdefault(root, set())
        for n in nodes:
            r = faulty.get(n)
            if r is None or not r.faults:
                s.add(n)
    ranked = sorted((len(s) for s in votes.values()), reverse=True)
    if not ranked:
        return None
    second = ranked[1] if len(ranked) > 1 else 0
    if ranked[0] - second < book.policy.verdict_margin:
        return None
    root = next(root for root, s in votes.items() if len(s) == ranked[0])
    return root if all_bad(book, votes[root]) <= book.policy.verdict_target else None


@dataclass
class Provisional:
    """A released result inside its challenge window."""

    root: bytes
    vouchers: tuple[bytes, ...]  # the executor(s) and every checker that agreed
    released: float
    audited: bool = False


@dataclass
class ChallengeLedger:
    """Released results still inside ``window`` seconds, and who vouched for each (the origin's audit list)."""

    window: float
    open: dict[bytes, Provisional] = field(default_factory=dict)
    by_node: dict[bytes, list[bytes]] = field(default_factory=dict)

    def release(self, job_id: bytes, root: bytes, vouchers: tuple[bytes, ...], now: float) -> None:
        if self.window <= 0:
            return
        self.open[job_id] = Provisional(root, vouchers, now)
        for n in vouchers:
            self.by_node.setdefault(n, []).append(job_id)

    def closes_at(self, job_id: bytes) -> float:
        return self.open[job_id].released + self.window

    def to_audit(self, node: bytes, now: float) -> list[bytes]:
        """Caught ``node``: its results still inside their window and not audited yet (marked audited)."""
        out = []
        for jid in self.by_node.pop(node, []):
            p = self.open.get(jid)
            if p is not None and not p.audited and now < p.released + self.window:
                p.audited = True
                out.append(jid)
        return out

    def close(self, job_id: bytes) -> Provisional | None:
        """The window ended: the result is final (forget it)."""
        p = self.open.pop(job_id, None)
        if p is not None:
            for n in p.vouchers:
                lst = self.by_node.get(n)
                if lst is not None and job_id in lst:
                    lst.remove(job_id)
                    if not lst:
                        del self.by_node[n]
        return p
