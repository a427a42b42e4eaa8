"""The client side of adaptive verification, driven by :mod:`sandrun_p2p.protocol.trust`.

The job's origin plans k/q from the job's value; when a result settles it decides (secretly)
whether to re-run it as a check job of the same computation. Results that all agree are released;
when they disagree, tie-break runs (:func:`trust.dispute_plan`) continue until :func:`trust.verdict`
names a root, and the executors on the losing side are slashed with a fraud proof (a contract path
the design still has to add) and unstaked.

With ``gate_checks`` a check runs only on nodes the client trusts (``JobSpec.executors`` from
:func:`trust.check_executors`, in the primary's shard when it has enough of them). Until enough nodes
are trusted, checks are open to any node with k = q = :func:`trust.open_check_redundancy`.

With a ``challenge_window`` a released result is provisional until the window ends: whenever a node
is caught (a lost dispute or an on-chain slash), every released result it vouched for that is still in
its window is audited (a check as above); a disagreeing audit starts a dispute that may overturn the
result. :meth:`AdaptiveClient.summary` counts wrong results at release (provisional) and after the
windows (final, what ``metrics.wrong_accepted`` reports).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sandrun_p2p.protocol import trust
from sandrun_p2p.protocol.encoding import sha256

from .scenario import JobKind, Verification

if TYPE_CHECKING:
    from .engine import JobRec, Simulator

MAX_CHECKS = 6  # check/audit/tie-break jobs per case (refunded ones are retried)
POLICY_FIELDS = (
    "probation",
    "half_trust",
    "spot_min",
    "spot_max",
    "high_value_usd",
    "gate_checks",
    "check_pool_min",
    "open_check_redundancy",
    "credibility_target",
    "challenge_window",
    "dispute_redundancy",
    "verdict_margin",
    "verdict_target",
)


@dataclass
class Result:
    root: bytes
    nodes: tuple[bytes, ...]
    job: JobRec
    counted: bool = False  # its executors' trust already credited


@dataclass
class Case:
    """A primary job's result under verification: before release (``audit`` False) or inside its window."""

    results: list[Result]
    audit: bool = False
    spawned: int = 0
    close_after: bool = False  # the window ended while auditing: close once decided


class _Book(trust.TrustBook):
    """The origin's trust book; a new fault (from a dispute or a chain slash) triggers retroactive audits."""

    def __init__(self, policy: trust.TrustPolicy, on_caught: Any) -> None:
        super().__init__(policy)
        self._on_caught = on_caught

    def fault(self, node: bytes) -> None:
        super().fault(node)
        self._on_caught(node)


class AdaptiveClient:
    def __init__(self, sim: Simulator, v: Verification) -> None:
        self.sim = sim
        self.policy = trust.TrustPolicy(**{f: getattr(v, f) for f in POLICY_FIELDS})
        self.book = _Book(self.policy, self._caught)
        self.ledger = trust.ChallengeLedger(self.policy.challenge_window)
        self.secret = sha256(b"client-secret", sim.sc.seed.to_bytes(8, "big"))
        self.cases: dict[int, Case] = {}
        self.support: dict[int, list[Result]] = {}  # released job -> the results that vouch for it
        self.released: dict[int, bytes] = {}  # job -> root given to the client at release (provisional)
        self.checks = 0
        self.gated = 0
        self.audits = 0
        self.disputes = 0
        self.overturned = 0
        self.unresolved = 0
        self.fraud_proofs = 0

    def plan(self, kind: JobKind) -> tuple[int, int]:
        p = trust.plan(kind.value_usd, self.policy)
        return p.redundancy, p.quorum

    # ------------------------------------------------------------------ primary and check jobs

    def on_closed(self, rec: JobRec, t: float) -> None:
        """A job (primary or check) settled or was refunded on chain."""
        if rec.check_of is not None:
            self._check_closed(rec.check_of, rec, t)
            return
        if rec.root is None:  # refunded: nothing to check
            self.sim._final(rec, t, None)
            return
        if len(rec.payees) >= 2:
            for n in rec.payees:
                self.book.verified(n)
        first = Result(rec.root, rec.payees, rec, counted=len(rec.payees) >= 2)
        rate = trust.check_rate(self.book, rec.payees, rec.spec.redundancy)
        if trust.should_check(self.secret, rec.jid, rate):
            case = self.cases[rec.i] = Case([first])
            self._spawn(rec, case, t)
        else:
            for n in rec.payees:
                self.book.unverified(n)
            self._release(rec, t, [first])

    def _spawn(self, rec: JobRec, case: Case, t: float) -> None:
        """Another job of the same computation: a check (results agree so far) or a tie-break (they do not)."""
        case.spawned += 1
        exclude = {n for r in case.results for n in r.nodes}
        dispute = len({r.root for r in case.results}) > 1
        need = trust.dispute_plan(True, self.policy).redundancy if dispute else 1
        shard, executors = self._gate(rec, exclude, need) if self.policy.gate_checks else (None, ())
        if dispute:
            self.disputes += 1
            p = trust.dispute_plan(bool(executors), self.policy)
        else:
            self.audits += case.audit
            self.checks += not case.audit
            p = trust.check_plan(bool(executors), self.policy)
        self.gated += bool(executors)
        c = self.sim.submit(t, rec.kind, rec.comp, p.redundancy, p.quorum, rec, executors, shard)
        rec.checks.append(c)

    def _gate(self, rec: JobRec, exclude: set[bytes], need: int) -> tuple[int | None, tuple[bytes, ...]]:
        """A shard for the check and its allowlist: trusted candidates (alive, staked, not already involved).

        The primary's own shard when it has enough trusted nodes (checks spread like the jobs), else the shard
        with the most. The origin knows the shards from adverts; it grinds the nonce so the check lands there."""
        sim = self.sim

        def allow(s: int) -> tuple[bytes, ...]:
            cands = [sim.nodes[i].nid for i in sim.subs[s] if sim.nodes[i].alive and not sim.nodes[i].banned]
            return trust.check_executors(self.book, cands, exclude, need=need)

        own = allow(rec.shard)
        if own:
            return rec.shard, own
        best: tuple[int | None, tuple[bytes, ...]] = (None, ())
        for s in range(len(sim.subs)):
            a = allow(s)
            if len(a) > len(best[1]):
                best = (s, a)
        return best

    def _check_closed(self, rec: JobRec, check: JobRec, t: float) -> None:
        case = self.cases.get(rec.i)
        if case is None:
            return
        new = [Result(check.root, check.payees, check)] if check.root is not None else self._reveals(check)
        case.results += new
        # agreement: every result has one root, or only caught nodes contradict the root under test (the
        # primary's, or the released one in an audit); anything else (overturning included) needs a verdict
        live = {r.root for r in case.results if any(not self._faulty(n) for n in r.nodes)}
        under_test = case.results[0].root
        root = under_test if new and live == {under_test} else None
        if root is None and len({r.root for r in case.results}) > 1:
            root = trust.verdict([(r.root, r.nodes) for r in case.results], self.book)
        if root is not None:
            self._decide(rec, case, root, t)
        elif case.spawned < MAX_CHECKS:
            self._spawn(rec, case, t)
        else:  # no decision possible: a result never released is refunded, a released one stands
            del self.cases[rec.i]
            self.unresolved += 1
            if not case.audit:
                self.sim._final(rec, t, None)
            elif case.close_after:
                self._close(rec, t)

    def _faulty(self, node: bytes) -> bool:
        r = self.book.records.get(node)
        return r is not None and r.faults > 0

    def _reveals(self, check: JobRec) -> list[Result]:
        """A check that failed its quorum: the reveals its executors gossiped (as the origin's NodeCore holds
        them), one result per root, so a dissenter in a check is a vote (and can lose) like any other."""
        job = self.sim.nodes[check.origin].core.jobs.get(check.jid)
        if job is None:
            return []
        by_root: dict[bytes, list[bytes]] = {}
        for n, (root, _raw) in job.reveals.items():
            by_root.setdefault(root, []).append(n)
        return [Result(root, tuple(sorted(ns)), check) for root, ns in sorted(by_root.items())]

    def _decide(self, rec: JobRec, case: Case, root: bytes, t: float) -> None:
        """Credit the executors of ``root``, slash the others, then release or (in an audit) confirm/overturn."""
        del self.cases[rec.i]
        for r in case.results:
            if r.root == root:
                if not r.counted:
                    for n in r.nodes:
                        self.book.verified(n)
                    r.counted = True
                continue
            for n in r.nodes:
                self.fraud_proofs += 1
                self.book.fault(n)
                self.sim.slash_fraud(r.job, n, t)
        winners = [r for r in case.results if r.root == root]
        if not case.audit:
            self._release(rec, t, winners)
            return
        if root != rec.final_root:
            self.overturned += 1
            rec.final_root = root
        self.support[rec.i] = winners
        p = self.ledger.open.get(rec.jid)
        if p is not None:  # everyone who now vouches for it; audited again if one of them is caught later
            p.root, p.audited = root, False
            p.vouchers = tuple(dict.fromkeys(n for r in winners for n in r.nodes))
            for n in p.vouchers:
                lst = self.ledger.by_node.setdefault(n, [])
                if rec.jid not in lst:
                    lst.append(rec.jid)
        if case.close_after:
            self._close(rec, t)

    # ------------------------------------------------------------------ optimistic finality

    def _release(self, rec: JobRec, t: float, support: list[Result]) -> None:
        """Give the result to the client; with a challenge window it stays provisional until the window ends."""
        root = support[0].root
        self.released[rec.i] = root
        self.sim._final(rec, t, root)
        if self.policy.challenge_window <= 0:
            return
        vouchers = tuple(dict.fromkeys(n for r in support for n in r.nodes))
        self.support[rec.i] = support
        self.ledger.release(rec.jid, root, vouchers, t)
        self.sim.open += 1  # the run lasts until every window has ended
        self.sim.call_at(t + self.policy.challenge_window, self._window_end, rec)
        for n in vouchers:  # a voucher caught while this job was being checked: audit now
            if self._faulty(n):
                self._caught(n)

    def _caught(self, node: bytes) -> None:
        t = self.sim.now
        for jid in self.ledger.to_audit(node, t):
            rec = self.sim.by_jid[jid]
            if rec.i in self.cases:
                continue
            case = self.cases[rec.i] = Case(list(self.support[rec.i]), audit=True)
            self._spawn(rec, case, t)

    def _window_end(self, t: float, rec: JobRec) -> None:
        case = self.cases.get(rec.i)
        if case is not None:  # challenged inside the window: final once the audit is decided
            case.close_after = True
            return
        self._close(rec, t)

    def _close(self, rec: JobRec, t: float) -> None:
        self.ledger.close(rec.jid)
        self.support.pop(rec.i, None)
        self.sim.open -= 1
        self.sim._maybe_end(t)

    # ------------------------------------------------------------------ report

    def summary(self) -> dict[str, Any]:
        """Wrong results at release (provisional: what a client that does not wait for the window uses) and
        after the windows (final), with the verification work that went into them."""
        from .engine import correct_root

        prim = [r for r in self.sim.jobs if r.check_of is None]
        released = [r for r in prim if r.i in self.released]
        wrong_prov = sum(1 for r in released if self.released[r.i] != correct_root(r.comp))
        accepted = [r for r in prim if r.final_root is not None]
        wrong_final = sum(1 for r in accepted if r.final_root != correct_root(r.comp))
        return {
            "released": len(released),
            "wrong_provisional": wrong_prov,
            "wrong_provisional_rate": wrong_prov / max(1, len(released)),
            "wrong_final": wrong_final,
            "wrong_final_rate": wrong_final / max(1, len(accepted)),
            "checks": self.checks,
            "audits": self.audits,
            "disputes": self.disputes,
            "gated": self.gated,
            "overturned": self.overturned,
            "unresolved": self.unresolved,
            "fraud_proofs": self.fraud_proofs,
        }
