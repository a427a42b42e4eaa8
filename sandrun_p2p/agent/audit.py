"""The payer's audit of the voucher batches settled on its deposit (voucher mode, see voucherlink.py).

When a ``BatchSettled`` on this node's deposit is mapped onto its vouchers (:meth:`Audits.check`), the payer
rebuilds the results tree it expects: its jobs of the batch's seq range, in seq order, with the roots its
executor attested in its gossip reveals (kept when the payer served each voucher). The same root as the batch's
``resultsRoot``: verified, nothing more. Another root, or a job whose attestation it lacks: it asks the
executor for the batch's leaves (served under :func:`batch_tree_name` while the batch is pending, and
``voucher_tree_keep_s`` after the executor finalized it), checks that they hash to the on-chain root, and voids
the batch with ``challengeBatch`` when a leaf contradicts an attestation of that executor (:meth:`Audits.run`);
with under ``voucher_audit_margin_s`` left in the window, or once the batch is paid (a short window: the audit
goes on after the payment), such a batch is not challenged but its executor is blocked as one challenged. A
batch it cannot verify (no tree, a tree of another root, a malformed one) is reported, tried again (backing off)
until ``voucher_tree_keep_s`` after its window, and the payer signs no new voucher to that executor
(:attr:`Audits.blocked`) until its unverified batches verify on a later try (never, for one whose batch
contradicted an attestation), or until a restart: the block is kept in memory only (a restarted payer
audits again the batches still pending on its deposit, from the events read again or its chain checkpoint,
with the attestations it journaled, and goes on with the unfinished audits of paid ones, journaled with their
jobs' attestations: :meth:`Audits.resume`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from ..chain import Attestation, ChainError, ResultsTree

BATCH_TREE_PREFIX = "vbatch/"
#: Most leaves a batch tree may have (64 bytes each): a larger answer is refused.
MAX_TREE_LEAVES = 4096
_LEAF = 64


class AuditError(ValueError):
    """A batch tree that cannot be used (the message says why)."""


def batch_tree_name(batch_id: int) -> str:
    """The fetch name under which an executor serves the leaves of its pending batch ``batch_id``."""
    return f"{BATCH_TREE_PREFIX}{batch_id}"


def parse_batch_tree_name(name: str) -> int | None:
    """The batch id of a batch tree fetch name, or None when ``name`` is not one."""
    if not name.startswith(BATCH_TREE_PREFIX):
        return None
    rest = name[len(BATCH_TREE_PREFIX) :]
    return int(rest) if rest.isdigit() and len(rest) <= 20 else None


def tree_to_bytes(tree: ResultsTree) -> bytes:
    """The leaves, in order: job id (32 bytes) and trace root (32 bytes) each."""
    return b"".join(j + r for j, r in tree.results)


def tree_from_bytes(data: bytes, max_leaves: int = MAX_TREE_LEAVES) -> ResultsTree:
    """Parse :func:`tree_to_bytes`'s output; raise :class:`AuditError` when it is malformed or too large."""
    if not data or len(data) % _LEAF:
        raise AuditError(f"malformed batch tree ({len(data)} bytes, not a whole number of leaves)")
    if len(data) > max_leaves * _LEAF:
        raise AuditError(f"batch tree too large ({len(data) // _LEAF} leaves, at most {max_leaves})")
    return ResultsTree([(data[i : i + 32], data[i + 32 : i + _LEAF]) for i in range(0, len(data), _LEAF)])


def expected_root(jobs: list[bytes], count: int, attested: dict[bytes, Attestation]) -> bytes | None:
    """The results root of ``jobs`` (seq order) with their attested roots; None when the payer does not hold
    every one of the batch's ``count`` jobs with an attestation."""
    if not jobs or len(jobs) != count or any(j not in attested for j in jobs):
        return None
    return ResultsTree([(j, attested[j].trace_root) for j in jobs]).root


def contradictions(tree: ResultsTree, attested: dict[bytes, Attestation]) -> list[tuple[bytes, Attestation]]:
    """The leaves of ``tree`` whose root differs from the attestation held for their job."""
    out = []
    for jid, root in tree.results:
        att = attested.get(jid)
        if att is not None and att.trace_root != root:
            out.append((jid, att))
    return out


@dataclass
class Audit:
    """A batch on this node's deposit whose root did not match the expected one (or could not be rebuilt)."""

    executor: str
    node: int  # the executor's node index
    root: bytes
    release_at: int
    next_try: float = 0.0  # monotonic
    tries: int = 0
    reported: bool = False
    paid: bool = False  # its BatchPaid was read (tried on: its executor still serves its tree a while)


class Audits:
    """The payer's audits in progress and the executors it signs no voucher for (see the module docstring);
    ``report`` says what went wrong (the agent's log and status)."""

    def __init__(self, options: dict[str, Any], report: Callable[[str], None]) -> None:
        self.timeout = float(options.get("voucher_audit_timeout_s", 10.0))
        self.margin = int(options.get("voucher_audit_margin_s", 30))  # time left in the window to challenge
        # how long after its challenge window a batch's tree is still served (voucher_tree_keep_s: an executor keeps
        # the tree of a batch it finalized that long): tried until then, verified or not, paid or not
        self.late_s = int(options.get("voucher_tree_keep_s", 600))
        self.max_leaves = int(options.get("voucher_audit_max_leaves", MAX_TREE_LEAVES))
        self.report = report
        self.pending: dict[int, Audit] = {}
        # batches found as expected -> their release time (kept until paid or voided, or until their challenge
        # window closed: nothing can void them any more, and a batch nobody finalizes would stay for good)
        self.verified: dict[int, int] = {}
        self.challenged: dict[int, bytes] = {}  # batch -> the job whose leaf voided it
        self.blocked: dict[str, str] = {}  # executor -> why no new voucher is signed for it
        self._unverified: dict[str, set[int]] = {}  # executor -> its batches not verified (yet)

    def check(
        self,
        bid: int,
        executor: str,
        node: int,
        root: bytes,
        release_at: int,
        jobs: list[bytes],
        count: int,
        attested: dict[bytes, Attestation],
    ) -> bool:
        """Compare batch ``bid`` with the tree the payer expects; True when it is verified at once, else the
        batch waits for :meth:`run`."""
        if expected_root(jobs, count, attested) == root:
            self.verified[bid] = release_at
            return True
        self.pending[bid] = Audit(executor, node, root, release_at)
        return False

    def done(self, bid: int, paid: bool = False) -> None:
        """Batch ``bid`` is paid or voided: nothing more to challenge (a block it caused stays). The audit of a
        paid batch not verified yet goes on (:meth:`run`): its executor still serves its tree ``late_s`` after
        its window; verified, the executor is no longer held for it, and a leaf contradicting an attestation
        blocks it (too late to challenge)."""
        a = self.pending.get(bid)
        if paid and a is not None:
            a.paid = True
        else:
            self.pending.pop(bid, None)
        self.verified.pop(bid, None)
        self.challenged.pop(bid, None)

    def resume(self, bid: int, executor: str, node: int, root: bytes, release_at: int) -> None:
        """Go on with the unfinished audit of paid batch ``bid`` after a restart (journaled), tried at once."""
        if bid not in self.pending:
            self.pending[bid] = Audit(executor, node, root, release_at, paid=True)

    def closed(self, now: int) -> None:
        """Forget the verified batches whose challenge window has closed at chain time ``now`` (the contract refuses
        a challenge from ``releaseAt`` on): nothing is left to audit of them, paid or not."""
        for bid in [b for b, release_at in self.verified.items() if release_at <= now]:
            del self.verified[bid]

    def next_due(self) -> float | None:
        """Monotonic time of the next audit try, or None when none waits."""
        return min((a.next_try for a in self.pending.values()), default=None)

    async def run(
        self,
        fetch: Callable[[int, int], Awaitable[bytes | None]],
        challenge: Callable[[int, ResultsTree, bytes, Attestation], Awaitable[str]],
        chain_now: Callable[[], Awaitable[int]],
        attested: dict[bytes, Attestation],
    ) -> None:
        """Try the audits due now, all at once, each bounded by ``timeout``: ``fetch(node, batch)`` asks the
        executor for the batch's tree."""
        mono = time.monotonic()
        due = [bid for bid, a in self.pending.items() if a.next_try <= mono]
        if not due:
            return
        now = await chain_now()
        async with trio.open_nursery() as n:
            for bid in due:
                n.start_soon(self._one, bid, now, fetch, challenge, attested)

    async def _one(
        self,
        bid: int,
        now: int,
        fetch: Callable[[int, int], Awaitable[bytes | None]],
        challenge: Callable[[int, ResultsTree, bytes, Attestation], Awaitable[str]],
        attested: dict[bytes, Attestation],
    ) -> None:
        a = self.pending.get(bid)
        if a is None:
            return
        late = now - a.release_at >= self.late_s  # its executor no longer serves its tree
        if late and a.paid and not a.tries:  # (a batch paid long ago, read again after a restart)
            del self.pending[bid]
            return
        a.tries += 1
        if late:
            self._failed(bid, a, f"its challenge window ended {now - a.release_at} s ago", final=True)
            return
        data = None
        with trio.move_on_after(self.timeout):
            data = await fetch(a.node, bid)
        try:
            if not data:
                raise AuditError(f"the executor gave no batch tree in {self.timeout:.0f} s")
            tree = tree_from_bytes(data, self.max_leaves)
            if tree.root != a.root:
                raise AuditError("the executor's batch tree does not hash to the batch's results root")
        except AuditError as e:
            self._failed(bid, a, str(e))
            return
        if self.pending.pop(bid, None) is None:
            return  # voided meanwhile
        bad = contradictions(tree, attested)
        if not bad:
            self.verified[bid] = a.release_at
            self._cleared(bid, a.executor)
            return
        jid, att = bad[0]  # (one proof voids the batch)
        self.blocked[a.executor] = f"its batch {bid} contradicts its attestation of job {jid.hex()[:16]}"
        if a.release_at - now < self.margin:  # (paid, or too late for a challenge to be mined in time)
            self.report(
                f"audit: batch {bid} of {a.executor} contradicts {len(bad)} attestation(s) of its executor"
                f" (job {jid.hex()[:16]}): not challenged, its challenge window ends in"
                f" {max(0, a.release_at - now)} s"[:300]
            )
            return
        try:
            tx = await challenge(bid, tree, jid, att)
        except ChainError as e:
            self.report(f"audit: challengeBatch {bid} of {a.executor} failed: {e}"[:300])
            return
        self.challenged[bid] = jid
        self.report(
            f"audit: batch {bid} of {a.executor} contradicts {len(bad)} attestation(s) of its executor"
            f" (job {jid.hex()[:16]}): challenged, tx {tx}"[:300]
        )

    def _failed(self, bid: int, a: Audit, why: str, final: bool = False) -> None:
        """Batch ``bid`` could not be verified (this try): its executor gets no new voucher; tried again later
        (backing off) while its executor still serves its tree (``late_s`` after its window)."""
        self._unverified.setdefault(a.executor, set()).add(bid)
        self.blocked.setdefault(a.executor, f"its batch {bid} could not be verified")
        if final:
            self.pending.pop(bid, None)
        else:
            a.next_try = time.monotonic() + min(60.0, 2.0**a.tries)
        if final or not a.reported:
            a.reported = True
            self.report(f"audit: batch {bid} of {a.executor} could not be verified: {why}"[:300])

    def _cleared(self, bid: int, executor: str) -> None:
        """Batch ``bid`` verified after all: its executor is no longer blocked for it."""
        held = self._unverified.get(executor)
        if held is None:
            return
        held.discard(bid)
        if not held:
            del self._unverified[executor]
            if self.blocked.get(executor, "").endswith("could not be verified"):
                del self.blocked[executor]
