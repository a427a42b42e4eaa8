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

Trust is this client's own verified history (``<client home>/trust.json``, mode 0600, with the secret); the
on-chain facts it can see feed it too: a dissenter outvoted in a quorum job (which the contract slashed)
gets a fault. Not done here: the contract has no fraud-proof path yet, so an executor caught by a spot check is
recorded and avoided, not slashed on chain (the simulator charges that slash; see the README).
"""

from __future__ import annotations

import json
import os
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
MAX_TRACE_BYTES = 1 << 20  # a trace lists up to 4096 outputs


class TrustStore:
    """This client's :class:`trust.TrustBook` and spot-check secret, kept in ``<root>/trust.json`` (mode 0600)."""

    def __init__(self, root: Path | None = None, policy: trust.TrustPolicy | None = None) -> None:
        self.path = (Path(root) if root is not None else client_home()) / TRUST_FILE
        self.book = trust.TrustBook(policy or trust.TrustPolicy())
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
                self.book.records[bytes.fromhex(node)] = trust.TrustRecord(int(verified), int(unverified),
                                                                           int(faults))
            if len(self.secret) != 32:
                raise ValueError("the secret is not 32 bytes")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ClientError(f"trust file {self.path} is unreadable ({type(e).__name__}: {e}); move it away to "
                              "start with no trust (every result is then checked until nodes earn it again)") from None

    def save(self) -> None:
        """Write atomically with mode 0600 (the secret decides which results are checked)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        nodes = {n.hex(): [r.verified, r.unverified, r.faults] for n, r in sorted(self.book.records.items())}
        write_private(self.path, json.dumps({"secret": self.secret.hex(), "nodes": nodes}, indent=1))

    def table(self) -> list[dict[str, Any]]:
        """Every known node with its record and trust, most trusted first."""
        rows = [{"node_id": n.hex(), **asdict(r), "trust": round(self.book.trust(n), 4)}
                for n, r in self.book.records.items()]
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AdaptiveVerifier:
    """Drives :mod:`trust` for one client (see the module docstring)."""

    def __init__(self, client: Client, store: TrustStore | None = None, *, max_tiebreaks: int = 3,
                 timeout: float | None = None) -> None:
        self.client = client
        self.store = store or TrustStore(client.records.root)
        self.max_tiebreaks = max_tiebreaks
        self.timeout = timeout

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
        """After ``job_id`` settled: maybe spot-check it, settle any disagreement, update and save trust."""
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
            self.store.save()
            return out
        out.checked = True
        runs = [primary]
        runs.append(await self._rerun(rec.job_id, runs, trust.check_plan, out.reruns))
        if runs[-1].digest == primary.digest:
            for n in {*primary.agreeing, *runs[-1].agreeing}:
                book.verified(n)
            self.store.save()
            return out
        winner = None
        for _ in range(self.max_tiebreaks):
            try:
                runs.append(await self._rerun(rec.job_id, runs, trust.dispute_plan, out.reruns))
            except DeadlinePassed:  # e.g. its executors did not all agree (one of them bad): no vote, go on
                continue
            winner = trust.verdict([(r.digest, r.agreeing) for r in runs], book)
            if winner is not None:
                break
        if winner is None:
            out.verdict, out.result_job = "undecided", ""
            self.store.save()
            return out
        caught = sorted({n for r in runs if r.digest != winner for n in r.agreeing})
        for n in caught:
            book.fault(n)
        for n in {n for r in runs if r.digest == winner for n in r.agreeing}:
            book.verified(n)
        self.store.save()
        out.caught = [n.hex() for n in caught]
        if winner != primary.digest:
            out.verdict = "overturned"
            out.result_job = next(r.job_id for r in runs if r.digest == winner)
        return out

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
            rest = sorted(n for n in candidates if n not in used and not book.records.get(n, trust.TrustRecord()).faults)
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
        dissenting = tuple(sorted(bytes.fromhex(n) for n, r in reveals.items() if r.get("root") not in (root, None)))
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
