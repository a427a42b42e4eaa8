"""Adaptive verification for a client: redundancy from the job's value, spot checks from the executors' trust.

The rules are :mod:`sandrun_p2p.protocol.trust`, the same functions the simulator's origin runs
(``sims/adaptive.py``, where they were studied: 20% colluders, no wrong result final, ~1.25-1.3x compute).
This module drives them through the SDK, so a client gets them with ``sandrun-p2p submit --verify adaptive``:

1. :meth:`AdaptiveVerifier.submit` picks k/q with :func:`trust.plan` from the job's value (k = 1 below
   ``high_value_usd``, else 2-of-3).
2. :meth:`AdaptiveVerifier.verify`, once the job settled, reads who agreed on the accepted root and decides
   with :func:`trust.check_rate` and the client's secret (:func:`trust.should_check`, so no executor can tell
   whether it is being checked) whether to re-run the computation as a *check* job: on trusted nodes only when
   enough are trusted (:func:`trust.check_executors`, ``JobSpec.executors``), else on any node but the ones
   being checked, with :func:`trust.check_plan`'s redundancy.
3. Results are compared by :func:`~sandrun_p2p.protocol.trace.computation_digest` (the trace root without the
   job id), read from each executor's stored trace. Agreement releases the result and credits every executor;
   disagreement starts tie-break re-runs (:func:`trust.dispute_plan`) until :func:`trust.verdict` names a
   computation: executors on the losing side get a fault (never trusted again by this client), and when the
   primary lost, the outcome names the re-run whose result to use instead.

4. Audits (optimistic finality, ``TrustPolicy.challenge_window``; the client's default is a day,
   :data:`AUDIT_WINDOW_S`): a released result stays *provisional* for the window, kept in a
   :class:`trust.ChallengeLedger` with who vouched for it (its executors and every agreeing checker). When a
   node gets a fault (a spot check or dispute caught it, or it was outvoted in a quorum job), every result it
   vouched for that is still inside its window is re-checked at once (a forced check, then tie-breaks as in 3);
   an audit may overturn an earlier result (the outcome names the re-run to use instead) and catch more nodes,
   whose results are audited in turn (at most ``max_audits`` per verification; the rest wait for the next).
Trust is this client's own verified history (``<client home>/trust.json``, mode 0600, with the secret and the
open results); the on-chain facts it can see feed it too: a dissenter outvoted in a quorum job (which the
contract slashed) gets a fault. Not done here: the contract has no fraud-proof path yet, so an executor caught by a spot check is
recorded and avoided, not slashed on chain (the simulator charges that slash; see the README).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..private_files import write_private
from ..protocol import trust
from ..protocol.encoding import decode_canonical
from ..protocol.trace import Trace, computation_digest
from .errors import ClientError, DeadlinePassed, ResultRejected
from .records import JobRecord, client_home
from .sdk import Client, eligible_nodes

TRUST_FILE = "trust.json"
AUDIT_WINDOW_S = 86_400.0  # the client's default challenge window: results of a day are audited on a fault
MAX_TRACE_BYTES = 1 << 20  # a trace lists up to 4096 outputs


class TrustStore:
    """This client's :class:`trust.TrustBook` and spot-check secret, kept in ``<root>/trust.json`` (mode 0600)."""

    def __init__(self, root: Path | None = None, policy: trust.TrustPolicy | None = None) -> None:
        self.path = (Path(root) if root is not None else client_home()) / TRUST_FILE
        self.book = trust.TrustBook(policy or trust.TrustPolicy(challenge_window=AUDIT_WINDOW_S))
        self.ledger = trust.ChallengeLedger(self.book.policy.challenge_window)
        self.secret = b""
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            self.secret = os.urandom(32)
            return
        try:
            d = json.loads(self.path.read_text())
            self.secret = bytes.fromhex(d["secret"])
            for node, (verified, unverified, faults) in d["nodes"].items():
                self.book.records[bytes.fromhex(node)] = trust.TrustRecord(
                    int(verified), int(unverified), int(faults)
                )
            now = time.time()
            for jid, (digest, vouchers, released, audited) in d.get("open", {}).items():
                if self.ledger.window > 0 and now < float(released) + self.ledger.window:
                    self.ledger.release(
                        bytes.fromhex(jid),
                        bytes.fromhex(digest),
                        tuple(bytes.fromhex(n) for n in vouchers),
                        float(released),
                    )
                    if audited:
                        self.ledger.open[bytes.fromhex(jid)].audited = True
            if len(self.secret) != 32:
                raise ValueError("the secret is not 32 bytes")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ClientError(
                f"trust file {self.path} is unreadable ({type(e).__name__}: {e}); move it away to "
                "start with no trust (every result is then checked until nodes earn it again)"
            ) from None

    def save(self) -> None:
        """Write atomically with mode 0600 (the secret decides which results are checked)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        nodes = {n.hex(): [r.verified, r.unverified, r.faults] for n, r in sorted(self.book.records.items())}
        now = time.time()
        for jid in [j for j in self.ledger.open if now >= self.ledger.closes_at(j)]:
            self.ledger.close(jid)  # its window ended: final
        open_ = {
            jid.hex(): [p.root.hex(), [n.hex() for n in p.vouchers], p.released, p.audited]
            for jid, p in sorted(self.ledger.open.items())
        }
        write_private(
            self.path, json.dumps({"secret": self.secret.hex(), "nodes": nodes, "open": open_}, indent=1)
        )

    def table(self) -> list[dict[str, Any]]:
        """Every known node with its record and trust, most trusted first."""
        rows = [
            {"node_id": n.hex(), **asdict(r), "trust": round(self.book.trust(n), 4)}
            for n, r in self.book.records.items()
        ]
        return sorted(rows, key=lambda r: (-r["trust"], r["node_id"]))


@dataclass(frozen=True)
class Run:
    """One settled job's result as verification sees it."""

    job_id: str
    digest: bytes  # computation_digest of the accepted trace
    agreeing: tuple[bytes, ...]  # executors whose reveal is the accepted root
    dissenting: tuple[bytes, ...] = ()  # executors outvoted in this job (slashed by the contract)


@dataclass
class Outcome:
    """What verification decided about one job."""

    job_id: str
    verdict: str  # "released" | "overturned" (use result_job instead) | "undecided" (do not use it)
    checked: bool
    check_rate: float
    result_job: str  # the job whose result to use
    executors: list[str]
    reruns: list[str] = field(default_factory=list)  # check and tie-break jobs, in order
    caught: list[str] = field(default_factory=list)  # executors found wrong (faults recorded)
    # earlier results of caught nodes, re-checked now
    audits: list[dict[str, Any]] = field(default_factory=list)
    audits_left: int = 0  # results still to audit (past max_audits): the next verification goes on
    detail: str = ""  # why an audit stayed undecided

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AdaptiveVerifier:
    """Drives :mod:`trust` for one client (see the module docstring)."""

    def __init__(
        self,
        client: Client,
        store: TrustStore | None = None,
        *,
        max_tiebreaks: int = 3,
        timeout: float | None = None,
        max_audits: int = 8,
    ) -> None:
        self.client = client
        self.store = store or TrustStore(client.records.root)
        self.max_tiebreaks = max_tiebreaks
        self.timeout = timeout
        self.max_audits = max_audits

    @property
    def policy(self) -> trust.TrustPolicy:
        return self.store.book.policy

    def plan(self, value_usd: float) -> trust.Plan:
        return trust.plan(value_usd, self.policy)

    async def submit(self, code: str | Path, manifest: Any, value_usd: float, **kw: Any) -> JobRecord:
        """Submit with the redundancy and quorum :func:`trust.plan` gives for ``value_usd``."""
        p = self.plan(value_usd)
        return await self.client.submit(code, manifest, redundancy=p.redundancy, quorum=p.quorum, **kw)

    async def verify(self, job_id: str) -> Outcome:
        """After ``job_id`` settled: maybe spot-check it, settle any disagreement, audit the earlier results of
        any node found wrong (inside their window), update and save trust."""
        book, rec = self.store.book, self.client.records.load(job_id)
        k = rec.job_spec().redundancy
        primary = await self.settled_run(rec.job_id)
        for n in primary.dissenting:
            book.fault(n)
        rate = trust.check_rate(book, primary.agreeing, k)
        out = Outcome(rec.job_id, "released", False, rate, rec.job_id, [n.hex() for n in primary.agreeing])
        if not trust.should_check(self.store.secret, bytes.fromhex(rec.job_id), rate):
            for n in primary.agreeing:
                (book.verified if k >= 2 else book.unverified)(n)
            self._release(rec.job_id, primary.digest, primary.agreeing)
        else:
            out.checked = True
            await self._check(rec.job_id, primary, out)
        try:
            await self._audit([*primary.dissenting, *(bytes.fromhex(n) for n in out.caught)], out)
        finally:
            self.store.save()
        return out

    async def _check(self, job_id: str, primary: Run, out: Outcome) -> None:
        """Re-run ``primary``'s computation and decide (tie-breaks on disagreement); fills ``out``, records
        faults and credits, and (re)releases the result that won into the ledger."""
        book = self.store.book
        runs = [primary]
        runs.append(await self._rerun(job_id, runs, trust.check_plan, out.reruns))
        if runs[-1].digest == primary.digest:
            for n in {*primary.agreeing, *runs[-1].agreeing}:
                book.verified(n)
            self._release(job_id, primary.digest, (*primary.agreeing, *runs[-1].agreeing))
            return
        winner = None
        for _ in range(self.max_tiebreaks):
            try:
                runs.append(await self._rerun(job_id, runs, trust.dispute_plan, out.reruns))
            except DeadlinePassed:  # e.g. its executors did not all agree (one of them bad): no vote, go on
                continue
            winner = trust.verdict([(r.digest, r.agreeing) for r in runs], book)
            if winner is not None:
                break
        if winner is None:
            out.verdict, out.result_job = "undecided", ""
            return
        caught = sorted({n for r in runs if r.digest != winner for n in r.agreeing})
        for n in caught:
            book.fault(n)
        backers = {n for r in runs if r.digest == winner for n in r.agreeing}
        for n in backers:
            book.verified(n)
        self._release(job_id, winner, tuple(backers))
        out.caught = [n.hex() for n in caught]
        if winner != primary.digest:
            out.verdict = "overturned"
            out.result_job = next(r.job_id for r in runs if r.digest == winner)

    def _release(self, job_id: str, digest: bytes, vouchers: tuple[bytes, ...]) -> None:
        """The result of ``job_id`` is given out: provisional for the window (from when it was first given out),
        vouched for by ``vouchers``."""
        ledger, jid = self.store.ledger, bytes.fromhex(job_id)
        first = ledger.open[jid].released if jid in ledger.open else time.time()
        ledger.release(jid, digest, tuple(sorted(set(vouchers))), first)

    async def _audit(self, caught: list[bytes], out: Outcome) -> None:
        """Re-check the results the ``caught`` nodes vouched for that are still inside their window (and those
        of any node an audit catches, and those an earlier verification left over), at most ``max_audits``;
        each audit's outcome goes to ``out.audits``."""
        ledger, records = self.store.ledger, self.store.book.records
        left = sorted(n for n in ledger.by_node if n in records and records[n].faults)
        queue, seen = list(dict.fromkeys([*caught, *left])), set()
        while queue:
            node = queue.pop(0)
            if node in seen:
                continue
            seen.add(node)
            for jid in ledger.to_audit(node, time.time()):
                # not audited after all: left for the next verification
                if len(out.audits) >= self.max_audits:
                    ledger.open[jid].audited = False
                    ledger.by_node.setdefault(node, []).append(jid)
                    out.audits_left += 1
                    continue
                # what was given out then (its computation and who vouched for it) is what the audit re-checks
                given = ledger.open[jid]
                o = Outcome(jid.hex(), "released", True, 1.0, jid.hex(), [n.hex() for n in given.vouchers])
                try:
                    await self._check(jid.hex(), Run(jid.hex(), given.root, given.vouchers), o)
                except ClientError as e:  # e.g. no re-run settled: this result stays unconfirmed
                    o.verdict, o.detail = "undecided", str(e)
                if o.verdict != "overturned":
                    o.result_job = ""  # only an overturned result names the job to use instead
                out.audits.append(o.to_dict())
                queue.extend(bytes.fromhex(n) for n in o.caught)

    async def _rerun(self, job_id: str, runs: Sequence[Run], planner: Any, started: list[str]) -> Run:
        """Re-run ``job_id``'s computation on nodes none of ``runs`` used: trusted ones when enough are
        trusted (``planner(True, policy)`` executors), else ``planner(False, policy)`` executors among the rest
        (any node when too few are left). Its job id goes to ``started``; DeadlinePassed if it does not settle."""
        book = self.store.book
        used = {n for r in runs for n in (*r.agreeing, *r.dissenting)}
        rec = self.client.records.load(job_id)
        nodes = [n for n in await self.client.peer_of(rec).nodes() if n.get("staked") and n.get("fresh")]
        ok, _ = eligible_nodes(nodes, rec.job_spec().manifest)
        candidates = [bytes.fromhex(n["node_id"]) for n in ok]
        p = planner(True, self.policy)
        execs = trust.check_executors(book, candidates, used, need=p.redundancy)
        if not execs:
            p = planner(False, self.policy)
            rest = sorted(
                n for n in candidates if n not in used and not book.records.get(n, trust.TrustRecord()).faults
            )
            execs = tuple(rest) if len(rest) >= p.redundancy else ()
        again = await self.client.rerun(job_id, redundancy=p.redundancy, quorum=p.quorum, executors=execs)
        started.append(again.job_id)
        return await self.settled_run(again.job_id)

    async def settled_run(self, job_id: str) -> Run:
        """Wait until ``job_id`` settles; its accepted computation and who agreed (read from the stored traces)."""
        last = await self.client.wait(job_id, timeout=self.timeout)
        if last.state != "settled":
            raise DeadlinePassed(f"job {job_id[:16]} ended {last.state} ({last.detail}); nothing to verify")
        rec = self.client.records.load(job_id)
        peer = self.client.peer_of(rec)
        view = await peer.job(job_id)
        root = view.get("accepted_root") or ""
        reveals: dict[str, dict[str, Any]] = view.get("reveals") or {}
        agreeing = tuple(sorted(bytes.fromhex(n) for n, r in reveals.items() if r.get("root") == root))
        dissenting = tuple(
            sorted(bytes.fromhex(n) for n, r in reveals.items() if r.get("root") not in (root, None))
        )
        if not root or not agreeing:
            raise ResultRejected(f"job {job_id[:16]} settled but its peer names no agreeing executor")
        cid = reveals[agreeing[0].hex()].get("trace_cid") or ""
        trace = _trace_of(await peer.blob(cid), bytes.fromhex(job_id))
        if trace.root.hex() != root:
            raise ResultRejected(f"the trace {cid} of job {job_id[:16]} does not hash to its accepted root")
        return Run(job_id, computation_digest(trace), agreeing, dissenting)


def _trace_of(data: bytes, job_id: bytes) -> Trace:
    try:
        trace = Trace.from_dict(decode_canonical(data, MAX_TRACE_BYTES))
    except Exception as e:
        raise ResultRejected(f"an executor's stored trace does not decode ({e})") from None
    if trace.job_id != job_id:
        raise ResultRejected("an executor's stored trace is of another job")
    return trace
