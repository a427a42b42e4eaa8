"""The node runtime on trio: feeds network, timer, executor and chain events to NodeCore and carries out its actions.

Shape (as aioquic's asyncio adaptor around ``QuicConnection``): :meth:`Agent.feed` is synchronous; it
calls ``core.handle(event, now)`` and dispatches the returned actions. Anything that must wait (a
publish, an execution, a chain transaction) is handed to a task through a channel, so the core is
never re-entered. One timer follows ``SetTimer``.

Restarts: every accepted job message is journaled with its raw signed bytes before NodeCore sees it,
and an execution's result is journaled before its commitment is published. On start the agent replays
the raw messages of every open job into a fresh NodeCore; when the core asks to execute a job the
journal already has a result for, the stored result is fed back instead of running it again, and a job
whose execution was interrupted by the crash is released (the fallback rank takes it over).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import time
from collections import deque
from pathlib import Path
from typing import Any

import trio

from ..chain.crypto import Attestation
from ..client.peer import ESCROW_WAIT_S
from ..exec.capabilities import caps_from_exec
from ..exec.result import ExecResult
from ..net.host import NetConfig, Network
from ..net.topics import topic_for
from ..protocol import messages as m
from ..protocol.claiming import Capabilities
from ..protocol.encoding import canonical, sha256
from ..protocol.errors import ProtocolError
from ..protocol.events import (
    CancelExecution,
    CapabilitiesChanged,
    Event,
    ExecutionDone,
    ExecutionFailed,
    JobEvent,
    Publish,
    Received,
    RequestGrant,
    SetTimer,
    Start,
    StartExecution,
    SubmitJob,
    SubmitTx,
    Tick,
)
from ..protocol.identity import NodeKey, short_id
from ..protocol.jobspec import PAY_VOUCHER, JobSpec
from ..protocol.node import ACCEPTED, NodeCore
from ..protocol.node import _parse_spec as parse_spec  # NodeCore's bounded parse cache, keyed by the dict
from ..protocol.pricing import usage_charge
from .audit import parse_batch_tree_name
from .checkpoints import STOP_LEAD_S, Checkpoints
from .config import AgentConfig
from .evidence import with_attestation
from .grants import BundleKeyError, KeyStore, grant_bodies, open_for_execution, seal_result
from .inline import InlineBlocks, block_to_inline, check_inline
from .journal import FINAL_STATES, Journal
from .ports import ChainPort
from .vouchers import parse_voucher_name

log = logging.getLogger("sandrun_p2p.agent")

#: Seconds after one of this node's jobs is accepted before it looks at the chain for the settlement (the
#: settling transaction was sent when the last reveal was published; a little later it is likely mined), and
#: how often it looks again until the job is settled, for at most ``SETTLEMENT_WATCH_S``.
SETTLEMENT_POLL_S = 0.05
SETTLEMENT_REPOLL_S = 0.2
SETTLEMENT_WATCH_S = 30.0


def job_id_of(msg: m.Message) -> bytes | None:
    """The job a message belongs to (None for adverts); raises ProtocolError for a bad job spec."""
    if msg.kind == m.ADVERT:
        return None
    if msg.kind == m.JOB:
        return parse_spec(msg.body["spec"]).job_id  # NodeCore's cache: it finds the same dict parsed
    return msg.body["job"]


class Agent:
    """One node. Build it with :func:`build_agent` (or pass parts for tests), then ``await agent.run()``."""

    def __init__(
        self,
        cfg: AgentConfig,
        *,
        key: NodeKey,
        executor: Any,
        store: Any,
        chain: ChainPort,
        exec_caps: dict[str, Any],
    ) -> None:
        self.cfg = cfg
        self.key = key
        self.node_id = key.node_id
        self.executor = executor
        self.store = store
        self.inline = InlineBlocks()  # code blocks announced inline, for this node's executions (inline.py)
        self.chain = chain
        # the port sends a commit and its reveal as one transaction when they come in one step (ChainLink)
        self._pair_txs = getattr(chain, "commit_reveal", False) is True
        self.exec_caps = exec_caps
        self.caps = caps_from_exec(exec_caps, cfg.caps, cfg.max_jobs)
        self.core = NodeCore(key.node_id, self.caps, cfg.core_config(), frozenset(cfg.shards), b"")
        self._commit_due = trio.Event()
        self.journal = Journal(
            cfg.data_dir / "journal.sqlite", group_commit=True, on_begin=self._commit_due.set
        )
        # the chain adaptor's voucher mode, when it has one (ports.py): its state is kept in the journal
        self.vouchers = getattr(chain, "vouchers", None)
        attach = getattr(chain, "attach", None)
        if attach is not None:  # a checkpoint of its view of the chain (it attaches its voucher mode too)
            attach(self.journal, cfg.history_s)
        elif self.vouchers is not None:
            self.vouchers.attach(self.journal)  # signed and held vouchers, batches not yet paid
        self.keys = KeyStore(cfg.data_dir)
        self.keys.sweep(set(self.journal.open_jobs()))  # keys of jobs that ended while this node was down
        self.checkpoints = Checkpoints(
            store,
            lambda jid, body: self._do(Publish(m.CHECKPOINT, body, self.core.jobs[jid].shard)),
            key.node_id,
        )
        self.net = Network(
            key,
            NetConfig(listen=cfg.listen, bootstrap=cfg.bootstrap, mdns=cfg.mdns, shards=cfg.shards),
            self._on_net_message,
        )
        self.started_at = time.time()
        self.eth = b""
        self._seq = 0
        self._pending: deque[Event] = deque()
        self._feeding = False
        self._deadline: float | None = None
        self._timer_changed = trio.Event()
        self._events_changed = trio.Event()
        self._poll_wake = trio.Event()  # set when a poll was asked for (``_poll_at`` moved earlier)
        self._poll_at: float | None = None  # the earliest poll asked for (trio clock) beyond the regular ones
        # this node's accepted escrow jobs not yet seen settled -> until when to keep looking
        self._settling: dict[bytes, float] = {}
        self._pub_send, self._pub_recv = trio.open_memory_channel[tuple[str, bytes]](math.inf)
        self._tx_send, self._tx_recv = trio.open_memory_channel[SubmitTx](math.inf)
        self._exec_send, self._exec_recv = trio.open_memory_channel[StartExecution](math.inf)
        self._running: dict[bytes, trio.CancelScope] = {}
        self._code_origin: dict[str, bytes] = {}  # code CID being fetched -> its job's origin
        self._limiter = trio.CapacityLimiter(self.caps.max_jobs or 1)
        self._replaying = False
        self._stopping = False
        self.stats: dict[str, int] = {}
        self.chain_errors: deque[str] = deque(maxlen=20)

    # ------------------------------------------------------------------ core driving

    def feed(self, event: Event) -> None:
        """Hand one event to NodeCore and carry out its actions (re-entrant calls are queued)."""
        self._pending.append(event)
        if self._feeding:
            return
        self._feeding = True
        try:
            while self._pending:
                ev = self._pending.popleft()
                actions = self.core.handle(ev, time.time())
                if self._pair_txs and len(actions) > 1:
                    actions = self._pair_commit_reveal(actions)
                for action in actions:
                    self._do(action)
        finally:
            self._feeding = False

    def _pair_commit_reveal(self, actions: list[Any]) -> list[Any]:
        """A commit followed, in the same step, by the reveal of the same job (this node's commitment completes
        the k: nobody is left who could copy the result) becomes one ``commit_reveal`` transaction, in the
        reveal's place. Per-job escrow only (a voucher job sends neither); the chain port falls back to the two
        transactions when the chain refuses the pair."""
        commits: dict[bytes, int] = {}
        out: list[Any] | None = None
        for i, a in enumerate(actions):
            if not isinstance(a, SubmitTx):
                continue
            if a.kind == "commit":
                commits[a.job_id] = i
            elif a.kind == "reveal" and a.job_id in commits:
                view = self.core.jobs.get(a.job_id)
                if view is None or view.spec.pay == PAY_VOUCHER:
                    continue
                if out is None:
                    out = list(actions)
                j = commits.pop(a.job_id)
                out[i] = SubmitTx("commit_reveal", a.job_id, {"commit": actions[j].args, "reveal": a.args})
                out[j] = None
        return actions if out is None else [a for a in out if a is not None]

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def _next_seq(self) -> int:
        # Time-based so a restarted node never reuses a (sender, seq) pair peers still remember.
        self._seq = max(self._seq + 1, time.time_ns() // 1000)
        return self._seq

    def _do(self, a: Any) -> None:
        if isinstance(a, Publish):
            # Journaled when our own publish passes the gossip validator (as every accepted message).
            body = with_attestation(getattr(self.chain, "attest", None), a.kind, a.body)
            raw = m.encode(self.key, a.kind, body, self._next_seq(), int(time.time() * 1000))
            self._pub_send.send_nowait((topic_for(a.kind, a.shard), raw))
        elif isinstance(a, SetTimer):
            self._deadline = a.at
            self._timer_changed.set()
        elif isinstance(a, StartExecution):
            self._start_execution(a)
        elif isinstance(a, CancelExecution):
            scope = self._running.get(a.job_id)
            if scope is not None:
                scope.cancel()
            self.journal.execution_ended(a.job_id, "cancelled", a.reason)
            self._log("cancel", a.job_id, reason=a.reason)
        elif isinstance(a, SubmitTx):
            self.journal.tx(a.job_id, a.kind, "queued")
            self._tx_send.send_nowait(self._enrich(a))
        elif isinstance(a, RequestGrant):
            self._grant(a)
        elif isinstance(a, JobEvent):
            self.journal.event(a.job_id, a.state, a.detail, a.node)
            if a.state == ACCEPTED:
                self._settlement_due(a.job_id)
            if a.state in FINAL_STATES:
                self._settling.pop(a.job_id, None)
                self.keys.delete(a.job_id)  # the job ended: nobody needs its bundle key any more
            if self.vouchers is not None and a.state in ("failed", "forgotten"):
                self.vouchers.ended(a.job_id)  # a voucher job funded here and never signed: its price is free
            self._log(a.state, a.job_id, node=short_id(a.node) if a.node else "", detail=a.detail)
            self._events_changed.set()
            self._events_changed = trio.Event()

    def _settlement_due(self, job_id: bytes) -> None:
        """A job this node posted was accepted: the transaction that settles it is on its way (the last reveal
        settles a per-job escrow), so look at the chain shortly and every ``SETTLEMENT_REPOLL_S`` until it is
        settled, and tell the client then rather than up to ``chain_poll_s`` later."""
        view = self.core.jobs.get(job_id)
        if view is not None and view.origin == self.node_id and view.spec.pay != PAY_VOUCHER:
            self._settling[job_id] = trio.current_time() + SETTLEMENT_WATCH_S
            self._poll_soon(SETTLEMENT_POLL_S)

    def _grant(self, a: RequestGrant) -> None:
        """Seal the job's bundle key to each new winner and publish the grants (this node is the origin)."""
        key = self.keys.get(a.job_id)
        view = self.core.jobs.get(a.job_id)
        if key is None or view is None:
            self._log("grant-failed", a.job_id, reason="this node holds no bundle key for the job")
            return
        for body in grant_bodies(a.job_id, key, a.nodes):
            self._do(Publish(m.GRANT, body, view.shard))
        self._log("granted", a.job_id, nodes=",".join(short_id(n) for n in a.nodes))

    def _enrich(self, tx: SubmitTx) -> SubmitTx:
        """Add what the chain needs beyond NodeCore's arguments: the openings seen on gossip (so one settle
        transaction can reveal for everyone), and a commit's usage price when the core did not give it."""
        if tx.kind == "commit_reveal":  # (per-job escrow only: nothing to add for a voucher)
            commit = self._enrich(SubmitTx("commit", tx.job_id, tx.args["commit"])).args
            return SubmitTx(tx.kind, tx.job_id, {"commit": commit, "reveal": tx.args["reveal"]})
        args = dict(tx.args)
        if tx.kind == "commit" and "usage_wei" not in args:
            ex = self.journal.execution(tx.job_id)
            args["usage_wei"] = ex.usage_wei if ex else 0
        elif tx.kind == "settle":
            view = self.core.jobs.get(tx.job_id)
            if view is not None:
                args["reveals"] = {n: (b["root"], b["salt"]) for n, b in view.reveal_msgs.items()}
        view = self.core.jobs.get(tx.job_id)
        if view is not None and view.spec.pay == PAY_VOUCHER:  # paid by a voucher the origin signs
            args.update(pay=PAY_VOUCHER, origin=view.origin, price=view.spec.payment_wei)
        return SubmitTx(tx.kind, tx.job_id, args)

    def _log(self, event: str, job_id: bytes | None = None, **fields: Any) -> None:
        if not log.isEnabledFor(logging.INFO):
            return  # formatting the line is most of its cost
        parts = [f"event={event}"]
        if job_id is not None:
            parts.append(f"job={job_id.hex()[:16]}")
        for k, v in fields.items():
            if v not in ("", None):
                s = str(v).replace("\n", " ")
                parts.append(f"{k}={s!r}" if (" " in s or "=" in s) else f"{k}={s}")
        log.info(" ".join(parts))

    # ------------------------------------------------------------------ network in

    def _on_net_message(self, msg: m.Message, now: float) -> None:
        """Called from the gossip validator; a ProtocolError here rejects the message (the forwarder pays) and
        nothing of it is journaled (the core's handling and the journal write happen in the same loop turn, so
        nothing that depends on the message leaves before both)."""
        jid = job_id_of(msg)
        if (
            jid is not None
            and msg.kind == m.JOB
            and self.core.cfg.require_escrow
            and jid not in self.core.funded
        ):
            self._poll_soon(0.0)  # look for the escrow now rather than at the next poll
        # (an origin's own inline block is in its store already: nothing to check or keep)
        mine = msg.sender == self.node_id
        code = check_inline(msg, parse_spec(msg.body["spec"])) if msg.kind == m.JOB and not mine else None
        self.feed(Received(msg))
        if code is not None and jid in self.core.jobs:
            self.inline.keep(self.core.jobs[jid].spec.code_cid, code)
        if jid is not None:
            self.journal.add_message(jid, msg.kind, msg.raw)
            if mine:
                self.journal.commit()  # our own message is durable before it leaves
            self.checkpoints.on_notice(msg, getattr(self.core.jobs.get(jid), "origin", None))

    # ------------------------------------------------------------------ executions

    def _start_execution(self, a: StartExecution) -> None:
        if a.job_id in self._running:
            return
        prev = self.journal.execution(a.job_id)
        if prev is not None and prev.status == "done" and prev.trace_root:
            self._log("resume-result", a.job_id, root=prev.trace_root.hex()[:16])
            self._pending.append(
                ExecutionDone(
                    a.job_id,
                    prev.trace_root,
                    prev.salt or b"",
                    prev.trace_cid or "",
                    prev.result_cid or "",
                    prev.usage_wei,
                )
            )
            return
        if prev is not None and (prev.status == "running" or self._replaying):
            self.journal.execution_ended(a.job_id, "abandoned", "interrupted by an agent restart")
            self._log("abandon", a.job_id, reason="execution interrupted by an agent restart")
            self._pending.append(ExecutionFailed(a.job_id, "execution interrupted by an agent restart"))
            return
        if self._stopping:
            self._pending.append(ExecutionFailed(a.job_id, "agent shutting down"))
            return
        self.journal.execution_started(a.job_id)
        self._running[a.job_id] = trio.CancelScope()
        self._exec_send.send_nowait(a)

    async def _exec_dispatcher(self, nursery: trio.Nursery) -> None:
        async for a in self._exec_recv:
            nursery.start_soon(self._execute, a)

    async def _execute(self, a: StartExecution) -> None:
        scope = self._running[a.job_id]
        outcome: Event | None = None
        try:
            with scope:
                async with self._limiter:
                    outcome = await self._run_job(a)
            if scope.cancelled_caught:
                outcome = None  # NodeCore asked for the cancel; it already knows
        except Exception as e:  # anything from fetching, the executor or the store
            reason = f"{type(e).__name__}: {e}"[:200]
            self.journal.execution_ended(a.job_id, "failed", reason)
            self._log("exec-failed", a.job_id, reason=reason)
            outcome = ExecutionFailed(a.job_id, reason)
        finally:
            self._running.pop(a.job_id, None)
        if outcome is not None:
            self.feed(outcome)

    async def _fetcher(self, cid: str) -> bytes | None:
        block = self.inline.take(cid)  # announced inline: no fetch (the store checks it like any peer's)
        if block is not None:
            return block
        return await self.net.fetch_any(cid, prefer=self._origins(cid))

    def _origins(self, cid: str = "") -> list[bytes]:
        """Whom to ask for a block first: the origin of the job whose code is ``cid``, then the origins of the jobs
        whose code is being fetched (a bundle's other blocks), then those of every running job."""
        first = [self._code_origin[cid]] if cid in self._code_origin else []
        return [
            *first,
            *self._code_origin.values(),
            *(v.origin for jid, v in self.core.jobs.items() if jid in self._running),
        ]

    async def _run_job(self, a: StartExecution) -> ExecutionDone | ExecutionFailed:
        self.journal.commit()  # "running" is durable before the execution starts (a restart then releases it)
        spec = a.spec
        t0 = time.time()
        view = self.core.jobs.get(a.job_id)
        if view is not None:
            self._code_origin[spec.code_cid] = view.origin
        try:
            with trio.fail_after(self.cfg.fetch_timeout_s):
                bundle = await self.store.get(spec.code_cid)
        finally:
            self._code_origin.pop(spec.code_cid, None)
        t_fetched = time.time()
        try:
            bundle = open_for_execution(bundle, spec, a.grant, self.key, self.keys.get(a.job_id))
        except BundleKeyError as e:
            self.journal.execution_ended(a.job_id, "failed", str(e))
            self._log("exec-failed", a.job_id, reason=str(e))
            return ExecutionFailed(a.job_id, str(e))
        view = self.core.jobs.get(a.job_id)
        opts = await self.checkpoints.run_options(
            a.job_id,
            spec.manifest,
            self.journal.messages(a.job_id),
            set(view.claims) if view else set(),
            getattr(self.executor, "resumes_checkpoints", True),
        )
        t_run = time.time()
        result = await self.executor.run(bundle, spec.manifest, a.job_id, **opts)
        t_ran = time.time()
        if self.checkpoints.stopped(a.job_id):  # stopped at shutdown: hand the job over with its checkpoint
            failed = await self.checkpoints.hand_over(a.job_id, result)
            self.journal.execution_ended(a.job_id, "stopped", failed.reason)
            return failed
        self.checkpoints.finished(a.job_id)
        trace = result.trace
        if self.cfg.test_faulty_executor:
            trace = dataclasses.replace(trace, stdout_sha256=sha256(b"faulty", trace.stdout_sha256))
        stage = self.cfg.data_dir / "results" / a.job_id.hex()
        trace_bytes = canonical(trace.to_dict())
        stage = await trio.to_thread.run_sync(_stage_result, stage, result, trace_bytes)
        trace_cid = await self.store.put_bytes(trace_bytes, pin=True)
        # sealed to the client: the CID is of the ciphertext, the trace root of the plaintext
        if spec.result_key:
            sealed = await trio.to_thread.run_sync(seal_result, stage, spec.result_key)
            result_cid = await self.store.put_bytes(sealed, pin=True)
        else:
            result_cid = await self.store.put_dir(stage, pin=True)
        await trio.to_thread.run_sync(_remove_staged, stage, Path(result.outputs_dir).parent)
        salt = os.urandom(32)
        usage = usage_charge(
            spec.manifest,
            spec.redundancy,
            spec.payment_wei,
            trace.status,
            trace.usage.get("wall_ms", 0) / 1000,
        )
        root = trace.root
        self.journal.execution_done(a.job_id, root, salt, trace_cid, result_cid, usage)
        self._log(
            "executed",
            a.job_id,
            root=root.hex()[:16],
            status=trace.status,
            exit=trace.exit_code,
            secs=f"{time.time() - t0:.2f}",
            fetch=f"{t_fetched - t0:.3f}",
            prepare=f"{t_run - t_fetched:.3f}",
            run=f"{t_ran - t_run:.3f}",
            store=f"{time.time() - t_ran:.3f}",
        )
        return ExecutionDone(a.job_id, root, salt, trace_cid, result_cid, usage)

    # ------------------------------------------------------------------ tasks

    async def _publisher(self) -> None:
        """Publish queued messages; whatever queued up meanwhile (e.g. the claims for a batch of announced jobs)
        leaves together, batched per topic (``Network.publish_many``)."""
        async for first in self._pub_recv:
            if self.cfg.publish_batch_window_s > 0:
                await trio.sleep(self.cfg.publish_batch_window_s)
            by_topic: dict[str, list[bytes]] = {first[0]: [first[1]]}
            while True:
                try:
                    topic, raw = self._pub_recv.receive_nowait()
                except trio.WouldBlock:
                    break
                by_topic.setdefault(topic, []).append(raw)
            self.journal.commit()  # e.g. a result is durable before its commitment leaves
            for topic, raws in by_topic.items():
                try:
                    await self.net.publish_many(topic, raws)
                except Exception as e:
                    self._log("publish-failed", None, error=f"{type(e).__name__}: {e}")

    async def _journal_committer(self) -> None:
        """Commit the journal's open transaction once per loop turn (its first write wakes this task)."""
        while True:
            await self._commit_due.wait()
            self._commit_due = trio.Event()
            self.journal.on_begin = self._commit_due.set
            self.journal.commit()

    async def _journal_pruner(self) -> None:
        """Drop the raw messages of jobs final for longer than ``forget_after`` (the core has forgotten them, a
        restart no longer replays them; events and results stay), and the whole history of jobs final for longer
        than ``history_s`` (this node's own executions and transactions too), at start and every
        ``forget_after``: without it the journal kept every message and event of every job the node ever saw."""
        every = self.core.cfg.forget_after
        while True:
            self.prune_journal()
            await trio.sleep(every)

    def prune_journal(self) -> tuple[int, int]:
        """(raw messages, jobs' histories) dropped from the journal now."""
        n = self.journal.forget_final(self.core.cfg.forget_after)
        h = self.journal.forget_history(self.cfg.history_s)
        h += self.journal.forget_strays(self.core.cfg.forget_after)
        if n or h:
            self._log("pruned", None, messages=n, jobs=h)
        return n, h

    async def _timer(self) -> None:
        while True:
            changed = self._timer_changed
            if self._deadline is None:
                await changed.wait()
            else:
                delay = self._deadline - time.time()
                if delay <= 0:
                    self._deadline = None
                    self.feed(Tick())
                    continue
                with trio.move_on_after(delay):
                    await changed.wait()
            if changed.is_set():
                self._timer_changed = trio.Event()

    async def _chain_sender(self, nursery: trio.Nursery) -> None:
        """Transactions of one job go out in order; different jobs proceed concurrently (a refund may wait)."""
        queues: dict[bytes, deque[SubmitTx]] = {}

        async def worker(jid: bytes) -> None:
            q = queues[jid]
            while q:
                await self._send_tx(q.popleft())
            del queues[jid]

        async for tx in self._tx_recv:
            if tx.job_id in queues:
                queues[tx.job_id].append(tx)
            else:
                queues[tx.job_id] = deque([tx])
                nursery.start_soon(worker, tx.job_id)

    async def _send_tx(self, tx: SubmitTx) -> None:
        self.journal.commit()
        try:
            with trio.fail_after(self.cfg.tx_timeout_s):
                receipt = await self.chain.submit(self.node_id, tx)
            self.journal.tx(tx.job_id, tx.kind, "ok", receipt)
            self._log("tx", tx.job_id, kind=tx.kind, receipt=receipt)
        except Exception as e:
            msg = f"{type(e).__name__}: {e}"[:300]
            self.journal.tx(tx.job_id, tx.kind, "failed", msg)
            self.chain_errors.append(f"{tx.kind} {tx.job_id.hex()[:16]}: {msg}")
            self._log("tx-failed", tx.job_id, kind=tx.kind, error=msg)

    def _voucher_error(self, msg: str) -> None:
        self.chain_errors.append(f"vouchers: {msg}"[:300])
        self._log("voucher-batch-failed", None, error=msg)

    def _voucher_audit(self, msg: str) -> None:
        self.chain_errors.append(f"vouchers: {msg}"[:300])
        self._log("voucher-audit", None, error=msg)

    def _poll_soon(self, delay: float) -> None:
        """Have the chain watcher poll within ``delay`` seconds (not up to ``chain_poll_s`` later)."""
        at = trio.current_time() + delay
        if self._poll_at is None or at < self._poll_at:
            self._poll_at = at
            self._poll_wake.set()

    async def _chain_watcher(self) -> None:
        while True:
            self._poll_at = None  # what is asked for from here on needs a poll after this one
            try:
                with trio.fail_after(30):
                    updates = await self.chain.poll()
                for u in updates:
                    self.feed(u)
            except Exception as e:
                self.chain_errors.append(f"poll: {type(e).__name__}: {e}"[:300])
                self._log("chain-poll-failed", None, error=f"{type(e).__name__}: {e}")
                await trio.sleep(2)
            wait = self.cfg.chain_poll_s
            if self._settling:  # a settlement is on its way: look again soon (a busy chain mines it later)
                now = trio.current_time()
                self._settling = {j: t for j, t in self._settling.items() if t > now}
                if self._settling:
                    wait = min(wait, SETTLEMENT_REPOLL_S)
            sooner = getattr(self.chain, "poll_in", None)
            if sooner is not None and (at := sooner()) is not None:
                # e.g. a voucher batch comes of age: settle it then, not up to a poll later
                wait = min(wait, at)
            until = trio.current_time() + wait
            while True:
                due = until if self._poll_at is None else min(until, self._poll_at)
                if trio.current_time() >= due:
                    break
                self._poll_wake = trio.Event()
                with trio.move_on_at(due):
                    await self._poll_wake.wait()

    async def _caps_watcher(self, detect: Any) -> None:
        while True:
            await trio.sleep(self.cfg.caps_refresh_s)
            try:
                new = caps_from_exec(await trio.to_thread.run_sync(detect), self.cfg.caps, self.cfg.max_jobs)
            except Exception as e:
                self._log("caps-failed", None, error=str(e))
                continue
            if _material_change(self.caps, new):
                self.caps = new
                self._log("caps-changed", None, cpus=new.cpus, mem_mb=new.mem_mb, gpus=len(new.gpus))
                self.feed(CapabilitiesChanged(new))

    # ------------------------------------------------------------------ lifecycle

    def replay_journal(self) -> int:
        """Rebuild the view of every open job from its journaled raw messages (before joining the mesh)."""
        n = 0
        self._replaying = True
        try:
            for jid in self.journal.open_jobs():
                msgs = self.journal.messages(jid)
                msgs.sort(key=lambda km: km[0] != m.JOB)  # the announcement first, the rest in arrival order
                for _kind, raw in msgs:
                    try:
                        msg = m.decode(raw)
                    except ProtocolError:
                        continue
                    if msg.sender == self.node_id and msg.kind != m.JOB:
                        continue  # our own claims/commits are re-derived by the core
                    try:
                        self.feed(Received(msg))
                        n += 1
                    except ProtocolError as e:  # e.g. the job's deadline passed while we were down
                        self._log("replay-skip", jid, reason=str(e))
                        break
        finally:
            self._replaying = False
        return n

    async def announce_job(self, spec: JobSpec, bundle_key: bytes = b"") -> bytes:
        """Announce, as its origin, a job a client escrowed itself; the seed comes from the chain. Raises
        :class:`~.ports.NotFunded` when the chain's escrow does not match the spec."""
        with trio.fail_after(30):
            seed = await self.chain.check_job(spec)
        if bundle_key:
            self.keys.put(spec.job_id, bundle_key)
        code = await block_to_inline(self.store, spec, self.cfg.inline_code_max)
        self.journal.mark_job(spec.job_id, origin=self.node_id, redundancy=spec.redundancy, mine=True)
        self.feed(SubmitJob(spec, seed, code))
        return seed

    async def submit_job(self, spec: JobSpec) -> bytes:
        """Announce a job as its origin: escrow on chain (which fixes the seed), then gossip it."""
        with trio.fail_after(ESCROW_WAIT_S):
            seed = await self.chain.fund_job(spec, self.node_id)
        code = await block_to_inline(self.store, spec, self.cfg.inline_code_max)
        self.journal.mark_job(spec.job_id, origin=self.node_id, redundancy=spec.redundancy, mine=True)
        self.feed(SubmitJob(spec, seed, code))
        return spec.job_id

    async def submit_jobs(self, specs: list[JobSpec]) -> list[bytes | BaseException]:
        """Announce several jobs as their origin: escrowed together (one ``postJobs`` transaction per 64 escrowed
        jobs, see :meth:`~.ports.ChainPort.fund_jobs`), then every funded job is announced at once (so the
        publisher batches them). Per job: its id, or the exception that kept it from being funded."""
        results: list[bytes | BaseException] = [ValueError("not funded")] * len(specs)
        codes: list[bytes] = [b""] * len(specs)

        async def fund() -> None:
            try:
                with trio.fail_after(ESCROW_WAIT_S):
                    results[:] = await self.chain.fund_jobs(specs, self.node_id)
            except trio.TooSlowError as e:
                results[:] = [e] * len(specs)

        async def inline(i: int) -> None:
            codes[i] = await block_to_inline(self.store, specs[i], self.cfg.inline_code_max)

        async with trio.open_nursery() as nursery:  # the inline code is read while the escrow is mined
            nursery.start_soon(fund)
            for i in range(len(specs)):
                nursery.start_soon(inline, i)
        for i, (spec, seed) in enumerate(zip(specs, results, strict=True)):
            if isinstance(seed, BaseException):
                continue
            self.journal.mark_job(spec.job_id, origin=self.node_id, redundancy=spec.redundancy, mine=True)
            self.feed(SubmitJob(spec, seed, codes[i]))
            results[i] = spec.job_id
        return results

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED, detect_caps: Any = None) -> None:
        """Join the mesh and run until cancelled or SIGINT/SIGTERM; always closes the host and the journal."""
        from .control import ControlServer

        self.store.fetcher = self._fetcher
        self.net.set_provider(self._provide)
        if self.vouchers is not None:
            self.vouchers.fetcher = self.net.fetch_from
            self.vouchers.on_error = self._voucher_error
            self.vouchers.on_audit = self._voucher_audit
        try:
            async with trio.open_nursery() as nursery:
                with trio.fail_after(120):
                    self.eth = await self.chain.join(self.node_id)
                self.core.eth = self.eth
                replayed = self.replay_journal()
                await nursery.start(self.net.run)
                nursery.start_soon(self._journal_committer)
                nursery.start_soon(self._journal_pruner)
                nursery.start_soon(self._publisher)
                nursery.start_soon(self._timer)
                nursery.start_soon(self._chain_sender, nursery)
                nursery.start_soon(self._chain_watcher)
                nursery.start_soon(self._exec_dispatcher, nursery)
                nursery.start_soon(self.checkpoints.keeper)
                if detect_caps is not None:
                    nursery.start_soon(self._caps_watcher, detect_caps)
                control = ControlServer(self)
                await nursery.start(control.serve)
                self.feed(Start())
                self._log(
                    "started",
                    None,
                    node=self.node_id.hex(),
                    peer=str(self.net.peer_id),
                    eth=self.eth.hex(),
                    control=control.url,
                    replayed=replayed,
                    chain=self.chain.kind,
                )
                task_status.started(self)
                await self._wait_for_signal()
                await self._shutdown()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                with _suppress():
                    await self.chain.close()
                with _suppress():
                    await self.store.close()
                with _suppress():
                    getattr(self.executor, "close", lambda: None)()
                self.journal.close()
                self._log("stopped", None)

    async def _wait_for_signal(self) -> None:
        import signal

        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for sig in signals:
                self._log("signal", None, signal=signal.Signals(sig).name)
                return

    async def _shutdown(self) -> None:
        """Stop taking work; give running executions ``shutdown_grace_s`` to finish and commit. Jobs that
        checkpoint are stopped ``STOP_LEAD_S`` before the end and handed over with their last checkpoint."""
        self._stopping = True
        end = trio.current_time() + self.cfg.shutdown_grace_s
        with trio.move_on_at(end - STOP_LEAD_S):
            while self._running:
                await trio.sleep(0.05)
        with trio.move_on_at(end):
            if self.checkpoints.stop_all():
                self._log("stopping-checkpointed-jobs", None)
            while self._running:
                await trio.sleep(0.05)
            await trio.sleep(0.2)  # let the last commits (and checkpoints, releases) leave
        for scope in self._running.values():
            scope.cancel()

    async def _provide(self, cid: str) -> bytes | None:
        asked = parse_voucher_name(cid)
        if asked is not None:
            return await self._serve_voucher(*asked)
        batch = parse_batch_tree_name(cid)
        if batch is not None:  # a payer auditing a batch this node settled (audit.py)
            return self.vouchers.batch_tree(batch) if self.vouchers is not None else None
        try:
            with trio.fail_after(10):
                return await self.store.get_block(cid)
        except Exception:
            return None

    async def _serve_voucher(self, job_id: bytes, executor: bytes) -> bytes | None:
        """As a voucher job's origin: the voucher for ``executor`` once its reveal opened its commitment here
        (waits up to 5 s for the reveal, which gossip may deliver after the executor's request)."""
        if self.vouchers is None:
            return None
        issue = self.vouchers.issue
        reveal = None
        with trio.move_on_after(5):
            while True:
                view = self.core.jobs.get(job_id)
                if view is None or view.origin != self.node_id or view.spec.pay != PAY_VOUCHER:
                    return None
                reveal = view.reveal_msgs.get(executor)
                if reveal is not None and view.accepted_root == reveal["root"]:
                    break
                reveal = None
                await self.wait_events(1.0)
        if reveal is None:
            return None
        advert = self.core.adverts.get(executor)
        eth = advert.eth if advert is not None else (self.eth if executor == self.node_id else b"")
        if len(eth) != 20:
            return None
        sig = reveal.get("attest")
        att = Attestation(job_id, reveal["root"], sig) if sig else None
        return await issue(job_id, "0x" + eth.hex(), att)

    # ------------------------------------------------------------------ read models for the control API

    async def wait_events(self, timeout: float) -> None:
        with trio.move_on_after(timeout):
            await self._events_changed.wait()


class _suppress:
    """``contextlib.suppress(Exception)`` that also logs what it swallowed."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: Any, e: BaseException | None, tb: Any) -> bool:
        if e is not None and isinstance(e, Exception):
            log.debug("ignored during cleanup: %r", e)
            return True
        return False


def _stage_result(stage: Path, result: ExecResult, trace_bytes: bytes) -> Path:
    """Lay out a run's result for the store: ``outputs/``, ``stdout``, ``stderr``, ``trace.cbor`` (a worker
    thread's file work, kept out of the loop); returns the directory. The executor's own result directory is
    used as it is when it has that layout (the local sandbox's does): nothing copied, and fewer files created
    and deleted per job, which ext4 makes costly (see ``store.embedded._Staging``). Else it is copied to
    ``stage``."""
    own = Path(result.outputs_dir).parent
    if (
        Path(result.outputs_dir) == own / "outputs"
        and Path(result.stdout) == own / "stdout"
        and Path(result.stderr) == own / "stderr"
        and {p.name for p in own.iterdir()} == {"outputs", "stdout", "stderr"}
    ):
        (own / "trace.cbor").write_bytes(trace_bytes)
        return own
    if stage.exists():
        shutil.rmtree(stage)
    (stage / "outputs").mkdir(parents=True)
    for p in Path(result.outputs_dir).iterdir():
        shutil.move(str(p), stage / "outputs" / p.name)
    shutil.copyfile(result.stdout, stage / "stdout")
    shutil.copyfile(result.stderr, stage / "stderr")
    (stage / "trace.cbor").write_bytes(trace_bytes)
    return stage


def _remove_staged(*dirs: Path) -> None:
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def _material_change(old: Capabilities, new: Capabilities) -> bool:
    """Changes worth a new advert: anything but small swings of free disk space (which moves all the time)."""
    if dataclasses.replace(old, disk_mb=0) != dataclasses.replace(new, disk_mb=0):
        return True
    return abs(new.disk_mb - old.disk_mb) > max(1024, old.disk_mb // 10)
