"""The agent's :class:`~sandrun_p2p.agent.ports.ChainPort` over the project's chain client (SandrunMarket).

How NodeCore's transactions map onto the contract:

* ``join``: ``register(node_id)`` with the minimum stake when this account has no node yet;
* ``fund_job``: ``postJob`` (escrow); the contract fixes an 8-byte seed from the previous block hash, widened
  to the 32-byte ranking seed as ``sha256("sandrun-p2p/seed" || job_id || seed8)`` by every node alike;
* ``fund_jobs`` (a batch submission): one ``postJobs`` per 64 escrowed jobs; when the contract refuses one (a
  job posted before, a deadline out of range: the whole call reverts), those jobs are posted one by one, so each
  gets its own outcome; when the outcome is unknown (no receipt in time, the node unreachable), each gets the
  error and nothing is sent again;
* ``check_job``: for a job a client escrowed from its own key (``POST /v1/announce``): ``getJob`` must be open
  with escrow >= the spec's payment and the spec's k, q and deadline; the seed is widened as above;
* ``commit``: ``commit(job, commitment, usage)`` (usage is the price the executor asks, bound by the commitment);
* ``reveal``: this node's opening ``(position, root, salt, usage)``; retried while the chain still waits for other
  commitments; the reveal that opens the last committed position settles the job on chain;
* ``commit_reveal`` (the agent pairs a commit with the reveal NodeCore asks for in the same step, when this node's
  commitment is the k-th: k = 1 always): one ``commitReveal(job, root, salt, usage)`` transaction (a k = 1 job
  settles in it); when the chain refuses it (``NotLastCommitment``: another commitment is still missing on
  chain; or the commitment is already there, after a restart) the commit then the reveal above, as two
  transactions, with the same outcomes as when NodeCore's two transactions are sent apart;
* ``settle``: reveals every opening this node saw on gossip that the chain still lacks, then ``finalize`` once
  the reveal window is over (silent and dissenting executors are slashed by the contract's settlement);
* ``refund``: ``finalize`` after the deadline (no commitment: the escrow becomes the client's refund). The
  deadline is judged by ``max(time.time(), chain.now())`` and a ``TooEarly`` revert is retried: an idle
  development chain mines no blocks, so its latest timestamp (and eth-tester's next one) lags the wall clock;
  there one empty block is mined before the retry (never on other chains);
* ``slash``: dissent and silence are settled by the contract itself (nothing to send); equivocation is posted
  as ``slashEquivocation`` with the two chain attestations the accused's conflicting reveals carry
  (``evidence.py``; every reveal carries its executor's attestation, see :meth:`ChainLink.attest`).

Options (``[chain]`` in the agent config): ``rpc`` (JSON-RPC URL; none: an in-process embedded chain with its own
deployment, for a one-node trial), ``kind`` (embedded|anvil|devnet|rpc), ``addresses_file`` (written by
``deploy-contracts``; default ``<data_dir>/sandrun-chain.json``), ``key_file`` (hex private key, mode 0600) or
``key_env`` (variable holding it); on development chains without a key, ``account_index`` picks a funded account;
``max_inflight_txs`` (default 8): transactions this node may have waiting for receipts at once over JSON-RPC.

Restarts: what :meth:`ChainLink.poll` derives from the contract's events (the node registry, the jobs posted with
their seeds, commitments and how they closed, the voucher mode's batches as payer) is checkpointed in the agent's
journal (:meth:`ChainLink.attach`; tables ``chain_view``, ``chain_nodes``, ``chain_jobs``) together with the event
poller's position, by the poll that changed it and in the same transaction as that poll's other writes. A
restarted agent reads the contract's events from that position on, not from the deployment block, and its first
poll hands NodeCore the updates a full replay would have left it with (the stake table, the seeds of the jobs
kept, how the closed ones ended). The checkpoint is keyed to the chain id, the contract address and the hash of
its deployment block: another chain or deployment in the same data dir, or a checkpoint that cannot be read, is
said in a log line and replaced after a full replay. Jobs closed (or past their deadline) for longer than
``history_s`` leave it, as their history leaves the journal.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import sqlite3
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ..private_files import write_private
from ..protocol.claiming import widen_seed
from ..protocol.events import ChainUpdate, SubmitTx
from ..protocol.jobspec import PAY_VOUCHER, JobSpec
from ..protocol.verification import commitment
from .ports import NotFunded, fund_each
from .voucherlink import BATCH_EVENTS, VoucherLink

#: ChainError reasons after which a transaction may or may not have been mined: nothing is sent again
_OUTCOME_UNKNOWN = frozenset({"timeout", "connection", "rpc", "nonce"})


class _Pending:
    """One job's place in a commitReveal batch (:meth:`ChainLink._commit_reveal_tx`)."""

    def __init__(self, args: tuple[bytes, bytes, bytes, int]) -> None:
        self.args = args
        self.done = False
        self.alone = False  # its batch was refused: send it on its own
        self._receipt: Any = None
        self._error: BaseException | None = None

    def settle(self, *, receipt: Any = None, error: BaseException | None = None, alone: bool = False) -> None:
        self.done, self._receipt, self._error, self.alone = True, receipt, error, alone

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._receipt


if TYPE_CHECKING:
    from .journal import Journal

log = logging.getLogger("sandrun_p2p.agent")
SLASH_REASONS = {1: "no_reveal", 2: "dissent", 3: "equivocation"}
#: The events :meth:`ChainLink.poll` turns into updates: the node asks only for these (``Revealed``, one per
#: opening, and the money-movement events are neither sent nor decoded).
POLLED_EVENTS = frozenset(
    {"NodeRegistered", "UnbondRequested", "UnbondCancelled", "JobPosted", "Committed", "JobClosed", "Slashed"}
)


def read_key_file(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ValueError(f"{path} has mode {mode:o}; an account key must be readable by its owner only")
    return path.read_text().strip()


def write_key_file(path: Path, key_hex: str) -> None:
    write_private(path, key_hex + "\n")


class ChainLink:
    """Blocking web3 calls run in worker threads: up to ``max_inflight_txs`` transactions at once over JSON-RPC
    (default 8; nonces are allocated in order by the chain client), one at a time on the embedded chain."""

    def __init__(self, options: dict[str, Any], shared: ChainLink | None = None) -> None:
        """``shared``: use that link's in-process embedded chain and deployment (several nodes in one process,
        as in tests); pick this node's account with ``account_index``."""
        from ..chain import Chain, Deployment, EventPoller, Signer

        data_dir = Path(options.get("data_dir") or ".")
        rpc = options.get("rpc")
        self.rpc: str | None = rpc or None
        if shared is not None:
            self.chain, dep, self.deploy_block = shared.chain, shared.deployment, shared.deploy_block
        elif rpc:
            self.chain = Chain.connect(rpc, kind=options.get("kind", "rpc"))
            path = Path(options.get("addresses_file") or data_dir / "sandrun-chain.json")
            dep = Deployment.load(path)
            self.deploy_block = dep.deploy_block
        else:
            from ..chain import deploy

            self.chain = Chain.embedded()
            dep = deploy(self.chain, self.chain.dev_signers()[0])
            self.deploy_block = dep.deploy_block
        self.deployment = dep
        self.chain_id = self.chain.chain_id  # cached: status must not block on RPC
        self.kind = "devnet-embedded" if self.chain.kind == "devnet" else self.chain.kind
        if options.get("key_file"):
            self.signer = Signer.from_key(read_key_file(Path(options["key_file"])))
        elif options.get("key_env"):
            from ..chain import load_signer

            self.signer = load_signer(key_env=options["key_env"])
        elif self.chain.is_dev:
            self.signer = self.chain.dev_signers()[int(options.get("account_index", 0))]
        else:
            raise ValueError("no account key: set [chain] key_file or key_env")
        self.market = dep.market(self.chain, self.signer)
        # reads (event polling, status) use their own connection so they never queue behind a transaction
        self.reader = (
            dep.market(Chain.connect(rpc, kind=options.get("kind", "rpc")), self.signer)
            if rpc
            else self.market
        )
        self._read_lock = trio.Lock() if rpc else None
        # one eth_getLogs per poll; the head is read every 16th
        self.poller = EventPoller(
            self.reader, from_block=self.deploy_block, names=set(POLLED_EVENTS | BATCH_EVENTS), head_every=16
        )
        # the addresses file records the deployment parameters (Market.params() needs eth_call without "from",
        # which the embedded devnet rejects)
        params = dep.params or dataclasses.asdict(self.market.params())
        self.stake = int(options.get("stake_wei", 0)) or int(params["min_stake"])
        # transactions of different jobs overlap (the chain client allocates nonces under its own lock and each
        # waits for its receipt in its own thread); the in-process embedded chain takes one call at a time
        inflight = int(options.get("max_inflight_txs", 8)) if rpc else 1
        if inflight < 1:
            raise ValueError("[chain] max_inflight_txs must be >= 1")
        self._lock = trio.CapacityLimiter(inflight)
        self._cr_queue: list[_Pending] = []  # commitReveals waiting for the next batch
        self._cr_lock = trio.Lock()  # one commitReveal batch in flight at a time
        self.node_ids: dict[int, bytes] = {}
        self.commits: dict[bytes, dict[int, tuple[int, int]]] = {}  # job -> pos -> (node idx, usage)
        self.closed: dict[bytes, dict[str, Any]] = {}
        self.closed_at: dict[bytes, float] = {}  # job -> when this node saw it close (wall clock)
        self.roots: dict[bytes, bytes] = {}  # closed job -> the agreed root's prefix (JobClosed)
        self.deadlines: dict[bytes, int] = {}
        self.seeds: dict[bytes, bytes] = {}  # job -> ranking seed (from JobPosted)
        self.unbonding: set[int] = set()  # node indices that requested unbonding
        # job -> this node's commitment position (from its commit receipt)
        self.positions: dict[bytes, int] = {}
        # jobs this node's own reveal closed (k = 1: the settle is a no-op)
        self.closed_here: set[bytes] = set()
        self.reveal_window = int(params["reveal_window"])
        self.node_id = b""
        self.accounts: dict[bytes, str] = {}  # node id -> account (from NodeRegistered)
        self.account_of_index: dict[int, str] = {}
        self.vouchers = VoucherLink(self, options)
        # the checkpoint of this view in the agent's journal (attach())
        self.journal: Journal | None = None
        self.history_s = 7 * 86400.0
        self._stored: tuple | None = None  # the checkpoint read by attach(), resumed from by the first poll
        # chain id, contract, deployment block hash (read by the first poll)
        self._view_key: str | None = None
        self._restored: list[ChainUpdate] = []  # what the first poll hands NodeCore from the checkpoint
        self._saved_at: int | None = None  # the stored checkpoint's position
        self._replace_view = True  # the next checkpoint replaces every stored row
        self._dirty_nodes: set[int] = set()
        self._dirty_jobs: dict[bytes, None] = {}  # (an ordered set: rows are restored in event order)
        self._next_prune = 0.0

    async def _run(self, fn: Any, *args: Any) -> Any:
        async with self._lock:
            return await trio.to_thread.run_sync(fn, *args)

    async def _read(self, fn: Any, *args: Any) -> Any:
        if self._read_lock is None:
            return await self._run(fn, *args)
        async with self._read_lock:
            return await trio.to_thread.run_sync(fn, *args)

    # ------------------------------------------------------------------ port

    async def join(self, node_id: bytes) -> bytes:
        self.node_id = node_id

        def work() -> bytes:
            info = self.market.node_by_id(node_id)
            if info is None:
                self.market.register(node_id, self.stake)
            return bytes.fromhex(self.signer.address[2:])

        return await self._run(work)

    async def fund_job(self, spec: JobSpec, origin: bytes) -> bytes:
        jid = spec.job_id
        if spec.pay == PAY_VOUCHER:
            return await self.vouchers.fund(spec)

        def work() -> bytes:
            res = self.market.post_job(jid, spec.redundancy, spec.quorum, spec.deadline, spec.payment_wei)
            return widen_seed(jid, bytes(res.event("JobPosted")["seed"]))

        return await self._run(work)

    async def fund_jobs(self, specs: list[JobSpec], origin: bytes) -> list[bytes | BaseException]:
        from ..chain import ChainError
        from ..chain.market import MAX_JOBS_PER_CALL

        out: list[bytes | BaseException] = [NotFunded("not funded")] * len(specs)

        async def each(idx: list[int]) -> None:
            for i, r in zip(
                idx, await fund_each(self.fund_job, [specs[i] for i in idx], origin), strict=True
            ):
                out[i] = r

        async def batch(idx: list[int]) -> None:
            def work() -> dict[bytes, bytes]:
                res = self.market.post_jobs(
                    [
                        (s.job_id, s.redundancy, s.quorum, s.deadline, s.payment_wei)
                        for s in (specs[i] for i in idx)
                    ]
                )
                return {bytes(e["jobId"]): bytes(e["seed"]) for e in res.all("JobPosted")}

            try:
                seeds = await self._run(work)
            except ChainError as e:
                if e.reason in _OUTCOME_UNKNOWN:
                    for i in idx:
                        out[i] = e
                else:  # refused: which job was it?
                    await each(idx)
                return
            except Exception as e:
                for i in idx:
                    out[i] = e
                return
            for i in idx:
                jid = specs[i].job_id
                out[i] = widen_seed(jid, seeds[jid])

        escrowed = [i for i, s in enumerate(specs) if s.pay != PAY_VOUCHER]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(each, [i for i, s in enumerate(specs) if s.pay == PAY_VOUCHER])
            for at in range(0, len(escrowed), MAX_JOBS_PER_CALL):
                part = escrowed[at : at + MAX_JOBS_PER_CALL]
                nursery.start_soon(each if len(part) == 1 else batch, part)
        return out

    async def check_job(self, spec: JobSpec) -> bytes:
        jid = spec.job_id
        if spec.pay == PAY_VOUCHER:
            raise NotFunded(
                "a voucher job is announced by the origin that pays it (POST /v1/jobs), not announced"
            )
        info = await self._read(self.reader.job, jid)
        if info.state_name != "open":
            raise NotFunded(f"job {jid.hex()} is not open on chain (state {info.state_name})")
        diffs = [
            f"{what}: chain {have}, spec {want}"
            for what, have, want in (
                ("k", info.k, spec.redundancy),
                ("q", info.q, spec.quorum),
                ("deadline", info.deadline, spec.deadline),
            )
            if have != want
        ]
        if info.escrow < spec.payment_wei:
            diffs.append(f"escrow: chain {info.escrow} wei, spec payment_wei {spec.payment_wei}")
        if diffs:
            raise NotFunded(f"job {jid.hex()} on chain does not match its spec (" + "; ".join(diffs) + ")")
        return widen_seed(jid, bytes(info.seed))

    def info(self) -> dict[str, Any]:
        return {
            "rpc": self.rpc,
            "market": self.market.address,
            "kind": self.chain.kind,
            "chain_id": self.chain_id,
        }

    async def submit(self, node_id: bytes, tx: SubmitTx) -> str:
        jid = tx.job_id
        if tx.args.get("pay") == PAY_VOUCHER:
            return await self._submit_voucher_job(tx)
        if tx.kind == "commit":
            return await self._commit(jid, tx.args)
        if tx.kind == "reveal":
            return await self._until_open(lambda: self._reveal_mine(jid, tx.args), "reveal")
        if tx.kind == "commit_reveal":
            return await self._commit_reveal(node_id, jid, tx.args["commit"], tx.args["reveal"])
        if tx.kind == "settle":
            return await self._settle(jid, tx.args)
        if tx.kind == "refund":
            return await self._finalize(jid)
        if tx.kind == "slash":
            kind = str(tx.args.get("kind", ""))
            if kind in ("dissent", "no_reveal"):
                return "left to the contract's settlement (it slashes dissenting and silent executors)"
            return await self._run(self._slash_equivocation, tx.args["evidence"])
        raise ValueError(f"unknown transaction kind {tx.kind!r}")

    #: Whether :meth:`submit` takes ``commit_reveal`` (the agent pairs a commit with its reveal only then).
    commit_reveal = True

    async def _commit(self, jid: bytes, args: dict[str, Any]) -> str:
        r = await self._run(self.market.commit, jid, args["commitment"], int(args.get("usage_wei", 0)))
        self.positions[jid] = int(r.event("Committed")["pos"])  # the reveal needs it: no extra call then
        return r.tx_hash

    async def _commit_reveal(
        self, node_id: bytes, jid: bytes, commit: dict[str, Any], reveal: dict[str, Any]
    ) -> str:
        """One ``commitReveal`` for this node's commitment and its opening; when the chain refuses it, the
        commit then the reveal (a commit that fails, e.g. already on chain before a restart, does not stop the
        reveal: as when the two are sent apart). Returns the receipt(s) and, on the fallback, why."""
        from ..chain import ChainError

        root, salt, usage = reveal["root"], reveal["salt"], int(reveal.get("usage_wei", 0))
        if commitment(jid, node_id, root, salt) != commit["commitment"] or usage != int(
            commit.get("usage_wei", 0)
        ):
            why = "the opening is not of this commitment"  # (never from NodeCore) the two as they are
        else:
            try:
                r = await self._commit_reveal_tx(jid, root, salt, usage)
            except Exception as e:  # a revert, or an RPC failure: the commitment may have landed or not
                why = e.reason if isinstance(e, ChainError) else f"{type(e).__name__}: {e}"[:120]
            else:
                return self._closing(jid, r)
        try:
            first = await self._commit(jid, commit)
        except ChainError as e:
            first = f"failed ({e.reason})"
        second = await self._until_open(lambda: self._reveal_mine(jid, reveal), "reveal")
        if second.startswith("0x"):
            second = f"reveal {second}"
        return f"commitReveal refused ({why}): commit {first}, {second}"

    async def _commit_reveal_tx(self, jid: bytes, root: bytes, salt: bytes, usage: int) -> Any:
        """This node's ``commitReveal`` for ``jid``, sent together with those of its other jobs that are ready:
        one batch is in flight at a time, and the next carries every one queued meanwhile (group commit), as one
        ``commitRevealMany``. When the contract refuses a batch, each of its jobs is sent alone (so the refusal
        lands on the job it concerns); an RPC failure is every job's."""
        from ..chain import ChainError
        from ..chain.market import MAX_JOBS_PER_CALL

        item = _Pending((jid, root, salt, usage))
        self._cr_queue.append(item)
        try:
            await self._cr_lock.acquire()
        except (
            BaseException
        ):  # cancelled while waiting: not sent by a later batch either (unless one took it)
            if item in self._cr_queue:
                self._cr_queue.remove(item)
            raise
        try:
            if not item.done:  # (else a batch sent while this one waited carried it)
                try:
                    await trio.lowlevel.checkpoint()  # the jobs made ready in this same turn join the batch
                except BaseException:
                    self._cr_queue.remove(item)  # (still queued: the lock kept other batches from taking it)
                    raise
                batch = self._cr_queue[:MAX_JOBS_PER_CALL]
                del self._cr_queue[: len(batch)]
                if len(batch) == 1:
                    fn: Any = functools.partial(self.market.commit_reveal, *item.args)
                else:
                    fn = functools.partial(self.market.commit_reveal_many, [p.args for p in batch])
                try:
                    r = await self._run(fn)
                except ChainError as e:
                    for p in batch:
                        p.settle(error=e, alone=len(batch) > 1 and e.reason not in _OUTCOME_UNKNOWN)
                except Exception as e:
                    for p in batch:
                        p.settle(error=e)
                except BaseException:  # this task cancelled before the batch went out: the others send theirs
                    self._cr_queue[:0] = [p for p in batch if p is not item]
                    raise
                else:
                    for p in batch:
                        p.settle(receipt=r)
        finally:
            self._cr_lock.release()
        if item.alone:  # its batch was refused: this job on its own
            return await self._run(self.market.commit_reveal, *item.args)
        return item.result()

    async def _submit_voucher_job(self, tx: SubmitTx) -> str:
        """A voucher job's transactions are coalesced: only the executor's reveal does something now."""
        if tx.kind == "reveal":
            return await self.vouchers.accept(tx.job_id, tx.args)
        if tx.kind == "refund":
            self.vouchers.release(tx.job_id)
            return "voucher job: nothing escrowed to refund"
        if tx.kind == "slash":
            return "voucher job: equivocation is proven against the batch (challengeBatch)"
        return f"voucher job: no {tx.kind} transaction (results settle in batches)"

    def attest(self, job_id: bytes, root: bytes) -> bytes | None:
        """This account's attestation of ``root`` for ``job_id`` (carried in reveals), or None without a key."""
        if self.signer.private_key is None:
            return None
        return self.market.attest(job_id, root).signature

    def _slash_equivocation(self, ev: Any) -> str:
        from ..chain import ChainError
        from .evidence import EvidenceError, attestation_pair

        try:
            a, b = attestation_pair(ev)
        except EvidenceError as e:
            raise ChainError("unsupported", f"equivocation not provable on chain: {e}") from e
        try:
            return self.market.slash_equivocation(a, b).tx_hash
        except ChainError as e:
            if e.reason == "AlreadySlashed":
                return "slash: another node posted the evidence first"
            raise

    def _reveal_mine(self, jid: bytes, args: dict[str, Any]) -> str:
        from ..chain import Opening

        pos = self.positions.pop(jid, None)
        if pos is None:
            pos = self.market.position_of(jid)
        if pos is None:
            raise ValueError("this node has no commitment on chain for the job")
        op = Opening(pos, args["root"], args["salt"], int(args.get("usage_wei", 0)))
        return self._closing(jid, self.market.reveal(jid, [op]))

    def _closing(self, jid: bytes, r: Any) -> str:
        """``r``'s hash, noting when this node's transaction closed the job (its settle step then reads nothing)."""
        if any(e.name == "JobClosed" and bytes(e.args["jobId"]) == jid for e in r.events):
            self.closed_here.add(jid)
        return r.tx_hash

    async def _until_open(self, fn: Any, what: str) -> str:
        """Retry ``fn`` while the chain says it is too early (other commitments or the deadline pending)."""
        from ..chain import ChainError

        deadline = time.monotonic() + 120
        while True:
            try:
                return await self._run(fn)
            except ChainError as e:
                text = f"{e.reason} {e}"
                if "JobNotOpen" in text or "AlreadyRevealed" in text:
                    return f"{what}: job already closed on chain"
                if ("RevealNotOpen" in text or "TooEarly" in text) and time.monotonic() < deadline:
                    await trio.sleep(0.5)
                    continue
                raise

    async def _settle(self, jid: bytes, args: dict[str, Any]) -> str:
        from ..chain import Opening

        if jid in self.closed_here or jid in self.closed:
            self.closed_here.discard(jid)
            return "already closed"

        def reveal_rest() -> str:
            info = self.market.job(jid)
            if info.state_name != "open":
                return "already closed"
            ops = []
            for pos, idx in enumerate(info.executors):
                if info.revealed_mask & (1 << pos):
                    continue
                known = self.commits.get(jid, {}).get(pos)
                # its Committed event not polled yet: a guessed usage would revert (BadOpening)
                if known is None:
                    continue
                rv = (args.get("reveals") or {}).get(self._node_id(idx))
                if rv is not None:
                    ops.append(Opening(pos, rv[0], rv[1], known[1]))
            if not ops:
                return "nothing to reveal"
            return self.market.reveal(jid, ops).tx_hash

        out = await self._until_open(reveal_rest, "settle")
        if out.startswith("0x") or "closed" in out:
            return out
        return await self._finalize(jid)

    async def _finalize(self, jid: bytes) -> str:
        """``finalize`` once the deadline (or the reveal window after it) has passed."""
        from ..chain import ChainError

        info = await self._run(self.market.job, jid)
        if info.state_name != "open":
            return "already closed"
        wait_until = info.deadline + (self.reveal_window if info.commits else 0) + 1
        while True:
            now = max(time.time(), await self._run(self.chain.now))
            if now >= wait_until:
                break
            await trio.sleep(min(5.0, max(0.2, wait_until - now)))
        give_up = time.monotonic() + 60
        while True:
            try:
                return (await self._run(self.market.finalize, jid)).tx_hash
            except ChainError as e:
                text = f"{e.reason} {e}"
                if "JobNotOpen" in text:
                    return "already closed"
                if "TooEarly" not in text or time.monotonic() > give_up:
                    raise
            if self.chain.is_dev:
                await self._run(self.chain.mine)  # an idle dev chain's clock moves only with blocks
            await trio.sleep(1.0)

    def _node_id(self, idx: int) -> bytes:
        nid = self.node_ids.get(idx)
        if nid is None:
            nid = self.node_ids[idx] = self.reader.node(idx).node_id
        return nid

    def poll_in(self) -> float | None:
        """Seconds until a poll has work beyond reading events (a voucher batch due or payable), or None."""
        return self.vouchers.poll_in()

    async def poll(self) -> list[ChainUpdate]:
        await self.vouchers.tick()

        def work() -> list[ChainUpdate]:
            if self._view_key is None:  # (an RPC error here: tried again by the next poll)
                key = self._read_view_key()
                if self._stored is not None:
                    self._resume_view(key, self.reader.chain.block_number(), *self._stored)
                    self._stored = None
                self._view_key = key
            out = list(self._restored)  # (kept until a poll succeeds)
            for ev in self.poller.poll():
                a = ev.args
                if ev.name in BATCH_EVENTS:
                    self.vouchers.on_event(ev.name, a)
                elif ev.name == "NodeRegistered":
                    self.node_ids[int(a["node"])] = bytes(a["nodeId"])
                    self.accounts[bytes(a["nodeId"])] = a["account"]
                    self.account_of_index[int(a["node"])] = a["account"]
                    self.unbonding.discard(int(a["node"]))
                    self._dirty_nodes.add(int(a["node"]))
                    out.append(
                        ChainUpdate(
                            "staked", node=bytes(a["nodeId"]), data={"eth": bytes.fromhex(a["account"][2:])}
                        )
                    )
                elif ev.name == "UnbondRequested":
                    self.unbonding.add(int(a["node"]))
                    self._dirty_nodes.add(int(a["node"]))
                    out.append(ChainUpdate("unstaked", node=self._node_id(int(a["node"]))))
                elif ev.name == "UnbondCancelled":  # eligible again
                    idx = int(a["node"])
                    self.unbonding.discard(idx)
                    self._dirty_nodes.add(idx)
                    nid = self._node_id(idx)
                    acc = self.account_of_index.get(idx)
                    out.append(
                        ChainUpdate("staked", node=nid, data={"eth": bytes.fromhex(acc[2:])} if acc else {})
                    )
                elif ev.name == "JobPosted":
                    jid = bytes(a["jobId"])
                    self.deadlines[jid] = int(a["deadline"])
                    self.seeds[jid] = widen_seed(jid, bytes(a["seed"]))
                    self._dirty_jobs[jid] = None
                    out.append(ChainUpdate("job_funded", jid, data={"seed": self.seeds[jid]}))
                elif ev.name == "Committed":
                    jid = bytes(a["jobId"])
                    self.commits.setdefault(jid, {})[int(a["pos"])] = (int(a["node"]), int(a["usage"]))
                    self._dirty_jobs[jid] = None
                elif ev.name == "JobClosed":
                    jid = bytes(a["jobId"])
                    execs = self.commits.get(jid, {})
                    paid = {
                        self._node_id(execs[p][0]).hex(): int(c)
                        for p, c in enumerate(a["credited"])
                        if p in execs and int(c) > 0
                    }
                    settled = int(a["state"]) == 2
                    self.closed[jid] = {
                        "state": "settled" if settled else "refunded",
                        "paid": paid,
                        "paid_wei": sum(paid.values()),
                        "refunded_wei": int(a["refund"]),
                        "agreeing": int(a["agreeing"]),
                    }
                    self.roots[jid], self.closed_at[jid] = bytes(a["rootPrefix"]), time.time()
                    self._dirty_jobs[jid] = None
                    out.append(self._closed_update(jid))
                elif ev.name == "Slashed":
                    reason = SLASH_REASONS.get(int(a["reason"]), str(a["reason"]))
                    out.append(
                        ChainUpdate(
                            "slashed",
                            bytes(a["jobId"]),
                            self._node_id(int(a["node"])),
                            data={"reason": reason, "amount": int(a["amount"])},
                        )
                    )
            self._restored = []
            return out

        updates = await self._read(work) + self.vouchers.drain()
        await self.vouchers.audit()  # (a batch just settled on this node's deposit: within this poll)
        self._save_view()
        return updates

    def _closed_update(self, jid: bytes) -> ChainUpdate:
        kind = "job_settled" if self.closed[jid]["state"] == "settled" else "job_refunded"
        return ChainUpdate(kind, jid, data={"root": self.roots[jid]})

    # ------------------------------------------------------------------ checkpoint of the view

    def attach(self, journal: Journal, history_s: float | None = None) -> None:
        """Checkpoint this view in ``journal`` from now on and resume from the checkpoint it holds (read here,
        used by the first poll); attach the voucher mode to it too. ``history_s``: how long closed jobs stay."""
        self.journal = journal
        if history_s is not None:
            self.history_s = float(history_s)
        try:
            self._stored = journal.chain_view()
        except sqlite3.Error as e:
            self._view_unusable(f"unreadable: {e}")
        self.vouchers.attach(journal)

    def _view_unusable(self, why: str) -> None:
        log.warning(
            "event=chain-checkpoint-unused reason=%r (the events are read from block %d)",
            why,
            self.deploy_block,
        )

    def _read_view_key(self) -> str:
        chain = self.reader.chain
        block = chain._read(lambda: chain.w3.eth.get_block(self.deploy_block))
        return (
            f"{self.chain_id}:{self.market.address.lower()}:{self.deploy_block}:{bytes(block['hash']).hex()}"
        )

    def _resume_view(
        self, key: str, head: int, stored_key: str, position: int, extra: str, nodes: list, jobs: list
    ) -> None:
        """Take the stored checkpoint (in the poller's thread, before the first events are read), or say why not
        and leave the view empty (the events are then read from the deployment block on)."""
        if stored_key != key:
            self._view_unusable(f"taken on another chain or deployment ({stored_key[:60]})")
            return
        try:
            position = int(position)
            if not self.deploy_block <= position <= head + 1:
                raise ValueError(f"position {position} outside blocks {self.deploy_block}..{head + 1}")
            node_rows = [(int(i), bytes(n), str(acc), bool(u)) for i, n, acc, u in nodes]
            job_rows = []
            for jid, seed, deadline, commits, closed, closed_at in jobs:
                c = None if closed is None else _closed_from_json(closed, float(closed_at))
                pos = {int(p): (int(i), int(u)) for p, (i, u) in json.loads(commits).items()}
                job_rows.append((bytes(jid), bytes(seed), int(deadline), pos, c))
            extra_d = json.loads(extra)
            if (extra_d["nodes"], extra_d["jobs"]) != (len(node_rows), len(job_rows)):
                raise ValueError(
                    f"{len(node_rows)} node and {len(job_rows)} job rows, "
                    f"{extra_d['nodes']} and {extra_d['jobs']} written"
                )
            vouchers = self.vouchers.parse_view(extra_d["vouchers"])
        except Exception as e:
            self._view_unusable(f"unreadable: {type(e).__name__}: {e}")
            return
        for i, nid, acc, unbonding in node_rows:
            self.node_ids[i], self.accounts[nid], self.account_of_index[i] = nid, acc, acc
            if unbonding:
                self.unbonding.add(i)
            else:
                self._restored.append(ChainUpdate("staked", node=nid, data={"eth": bytes.fromhex(acc[2:])}))
        for jid, seed, deadline, pos, c in job_rows:
            self.seeds[jid], self.deadlines[jid] = seed, deadline
            if pos:
                self.commits[jid] = pos
            self._restored.append(ChainUpdate("job_funded", jid, data={"seed": seed}))
            if c is not None:
                self.closed[jid], self.roots[jid], self.closed_at[jid] = c
                self._restored.append(self._closed_update(jid))
        vouchers()
        self.poller.position = self._saved_at = position
        self._replace_view = False
        log.info(
            "event=chain-checkpoint-resumed block=%d nodes=%d jobs=%d",
            position,
            len(node_rows),
            len(job_rows),
        )

    def _save_view(self) -> None:
        """Move the journal's checkpoint to the poller's position with the rows this poll changed (in the trio
        thread, after the poll's own journal writes: the agent commits them together)."""
        if self.journal is None or self._view_key is None or not self.vouchers.steady():
            return  # (restored voucher results not reconciled with the chain yet: their events may be needed)
        now = time.time()
        pruned = now >= self._next_prune and self._prune(now)
        pos = self.poller.position
        if pos == self._saved_at and not (
            self._dirty_nodes or self._dirty_jobs or self._replace_view or pruned
        ):
            return
        if self._replace_view:
            self._dirty_nodes, self._dirty_jobs = set(self.account_of_index), dict.fromkeys(self.seeds)
        nodes = [
            (i, self.node_ids[i], self.account_of_index[i], int(i in self.unbonding))
            for i in sorted(self._dirty_nodes)
            if i in self.account_of_index
        ]
        jobs = [self._job_row(jid) for jid in self._dirty_jobs if jid in self.seeds]
        # the row counts: rows lost from the tables are noticed
        n = {"nodes": len(self.account_of_index), "jobs": len(self.seeds)}
        extra = json.dumps({**n, "vouchers": self.vouchers.view()}, sort_keys=True)
        self.journal.chain_view_put(self._view_key, pos, extra, nodes, jobs, replace=self._replace_view)
        self._dirty_nodes, self._dirty_jobs = set(), {}
        self._saved_at, self._replace_view = pos, False

    def _job_row(self, jid: bytes) -> tuple[bytes, bytes, int, str, str | None, float | None]:
        commits = json.dumps({str(p): list(v) for p, v in self.commits.get(jid, {}).items()})
        c = self.closed.get(jid)
        closed = None if c is None else json.dumps({**c, "root": self.roots[jid].hex()}, sort_keys=True)
        return jid, self.seeds[jid], self.deadlines[jid], commits, closed, self.closed_at.get(jid)

    def _prune(self, now: float) -> bool:
        """Forget the jobs closed, or past their deadline, for longer than ``history_s`` (here and in the
        checkpoint; at most every ten minutes). Whether any was."""
        self._next_prune = now + min(600.0, self.history_s)
        cutoff = now - self.history_s
        old = [
            jid
            for jid in {**self.seeds, **self.closed_at}  # (a job closed after its posting was pruned, too)
            if self.closed_at.get(jid, float("inf")) < cutoff
            or (jid not in self.closed and self.deadlines[jid] + self.reveal_window < cutoff)
        ]
        for jid in old:
            for d in (
                self.seeds,
                self.deadlines,
                self.commits,
                self.closed,
                self.roots,
                self.closed_at,
                self.positions,  # (committed here, never revealed)
                self._dirty_jobs,
            ):
                d.pop(jid, None)
            self.closed_here.discard(jid)  # (closed by this node's reveal, its settle step never came)
        if old and self.journal is not None:
            self.journal.chain_jobs_forget(old)
        return bool(old)

    async def account(self, node_id: bytes) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            info = self.reader.node_by_id(node_id)
            if info is None:
                return {"registered": False}
            return {
                "registered": True,
                "address": info.account,
                "stake_wei": info.stake,
                "earned_wei": info.earnings,
                "withdrawable_wei": self.reader.withdrawable(info.account),
                "completed": info.completed,
                "failed": info.failed,
                "slashed": info.slashed,
                "open_jobs": info.open_jobs,
            }

        return await self._read(work)

    async def job(self, job_id: bytes) -> dict[str, Any]:
        paid_by_voucher = self.vouchers.job(job_id)
        if paid_by_voucher is not None:
            return paid_by_voucher
        if job_id in self.closed:
            return {**self.closed[job_id], "reason": ""}
        try:
            info = await self._read(self.reader.job, job_id)
        except Exception as e:
            return {"state": "unknown", "error": str(e)}
        return {
            "state": info.state_name,
            "escrow_wei": info.escrow,
            "commits": info.commits,
            "paid": {},
            "paid_wei": 0,
            "refunded_wei": 0,
            "reason": "",
        }

    async def close(self) -> None:
        return None


def _closed_from_json(text: str, at: float) -> tuple[dict[str, Any], bytes, float]:
    """(what :meth:`ChainLink.job` reports, root prefix, when seen) of a checkpointed closed job."""
    d = json.loads(text)
    if d["state"] not in ("settled", "refunded"):
        raise ValueError(f"closed job state {d['state']!r}")
    closed = {
        "state": d["state"],
        "paid": {str(k): int(v) for k, v in d["paid"].items()},
        "paid_wei": int(d["paid_wei"]),
        "refunded_wei": int(d["refunded_wei"]),
        "agreeing": int(d["agreeing"]),
    }
    return closed, bytes.fromhex(d["root"]), at


def open_chain(options: dict[str, Any]) -> ChainLink:
    return ChainLink(options)
