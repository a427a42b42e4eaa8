"""The client side of adaptive verification, driven by :mod:`sandrun_p2p.protocol.trust`.

The job's origin plans k/q from the job's value; when a result settles it decides (secretly)
whether to re-run it as a k=1 check job of the same computation. Agreement verifies both
executors; a mismatch triggers a tie-break check, and the executors on the losing side are
slashed with a fraud proof (a contract path the design still has to add) and unstaked.
The client's result is final only after its checks.

With ``gate_checks`` a check runs only on nodes the client trusts (``JobSpec.executors`` from
:func:`trust.check_executors`, in the primary's shard when it has enough of them): an ungated check of a
k=1 result is a random k=1 job that a colluder confirms whenever it wins it. Until enough nodes are
trusted, checks are open to any node with k = q = ``open_check_redundancy``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sandrun_p2p.protocol import trust
from sandrun_p2p.protocol.encoding import sha256

from .scenario import JobKind, Verification

if TYPE_CHECKING:
    from .engine import JobRec, Simulator

MAX_CHECKS = 4  # re-runs per job (refunded checks are retried)


class AdaptiveClient:
    def __init__(self, sim: Simulator, v: Verification) -> None:
        self.sim = sim
        self.policy = trust.TrustPolicy(
            probation=v.probation,
            half_trust=v.half_trust,
            spot_min=v.spot_min,
            spot_max=v.spot_max,
            high_value_usd=v.high_value_usd,
            gate_checks=v.gate_checks,
            check_pool_min=v.check_pool_min,
            open_check_redundancy=v.open_check_redundancy,
        )
        self.book = trust.TrustBook(self.policy)
        self.secret = sha256(b"client-secret", sim.sc.seed.to_bytes(8, "big"))
        self.checks = 0
        self.gated = 0
        self.fraud_proofs = 0

    def plan(self, kind: JobKind) -> tuple[int, int]:
        p = trust.plan(kind.value_usd, self.policy)
        return p.redundancy, p.quorum

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
        rate = trust.check_rate(self.book, rec.payees, rec.spec.redundancy)
        if trust.should_check(self.secret, rec.jid, rate):
            self._spawn_check(rec, t)
        else:
            for n in rec.payees:
                self.book.unverified(n)
            self.sim._final(rec, t, rec.root)

    def _spawn_check(self, rec: JobRec, t: float) -> None:
        self.checks += 1
        shard, executors = self._gate(rec) if self.policy.gate_checks else (None, ())
        if executors:
            self.gated += 1
        p = trust.check_plan(bool(executors), self.policy)
        c = self.sim.submit(t, rec.kind, rec.comp, p.redundancy, p.quorum, rec, executors, shard)
        rec.checks.append(c)

    def _gate(self, rec: JobRec) -> tuple[int | None, tuple[bytes, ...]]:
        """A shard for the check and its allowlist: trusted candidates (alive, staked, not the checked executors).

        The primary's own shard when it has enough trusted nodes (checks spread like the jobs), else the shard
        with the most. The origin knows the shards from adverts; it grinds the nonce so the check lands there."""
        exclude = set(rec.payees)
        for c in rec.checks:
            exclude.update(c.payees)
        sim = self.sim

        def allow(s: int) -> tuple[bytes, ...]:
            cands = [sim.nodes[i].nid for i in sim.subs[s] if sim.nodes[i].alive and not sim.nodes[i].banned]
            return trust.check_executors(self.book, cands, exclude)

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
        if rec.final_at is not None:
            return
        if check.root is None:
            if len(rec.checks) < MAX_CHECKS:
                self._spawn_check(rec, t)
            else:  # cannot check: release unverified
                self.sim._final(rec, t, rec.root)
            return
        rec.check_roots.append((check.root, check.payees))
        results = [(rec.root, rec.payees, rec), *((r, p, c) for (r, p), c in zip(rec.check_roots, rec.checks, strict=False))]
        roots = [r for r, _, _ in results]
        if len(results) == 2 and roots[0] == roots[1]:
            for _, payees, _ in results:
                for n in payees:
                    self.book.verified(n)
            self.sim._final(rec, t, rec.root)
            return
        counts = {r: roots.count(r) for r in roots}
        best = max(counts.values())
        if best * 2 <= len(roots):  # no majority yet: another independent re-run
            if len(rec.checks) < MAX_CHECKS:
                self._spawn_check(rec, t)
            else:
                self.sim._final(rec, t, None)
            return
        winner = next(r for r in roots if counts[r] == best)
        for r, payees, job in results:
            for n in payees:
                if r == winner:
                    self.book.verified(n)
                else:
                    self.book.fault(n)
                    self.fraud_proofs += 1
                    self.sim.slash_fraud(job, n, t)
        self.sim._final(rec, t, winner)
