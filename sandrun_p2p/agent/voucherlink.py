"""The voucher payment mode inside :class:`~sandrun_p2p.agent.chainlink.ChainLink` (``spec.pay = "voucher"``).

NodeCore emits the same transactions for every k = 1 job (commit, reveal, settle, refund); for a voucher job
the adaptor coalesces them instead of sending them one per job:

* origin (payer): ``fund_job`` sends nothing per job: it tops up this account's deposit in chunks
  (``voucher_deposit_wei``, default 64 job prices) and takes the ranking seed from the latest block hash. When
  the executor whose reveal the origin saw asks for its voucher (the runtime serves ``voucher/<job>/<node>`` on
  the fetch stream), :meth:`VoucherLink.issue` signs the next cumulative voucher for it, once per job;
* executor: ``commit`` and ``settle`` send nothing; ``reveal`` fetches the voucher from the origin, checks it
  (:meth:`BatchQueue.check`) and queues (job_id, trace_root); :meth:`VoucherLink.tick` (run by every chain
  poll) sends one ``settleBatch`` per payer when ``voucher_batch_jobs`` (default 32) results wait or the oldest
  waited ``voucher_batch_age_s`` (default 2 s), then ``finalizeBatch`` once the challenge window passed;
* both: ``BatchSettled``/``BatchPaid``/``BatchVoided`` map back to jobs (the executor knows its batches; the
  payer maps the batch's seq range onto the vouchers it signed), and a job counts as ``settled`` once its batch
  is paid (``owed`` while a batch short of deposit left part of its price owing: the payer's next batch of this
  executor, or a top-up, pays it; the executor checks such a payer's deposit every ``voucher_top_up_s``, default
  60 s, and tops up once it holds more: :meth:`VoucherLink._top_up_owed`). A batch that reverts is reported
  (``on_error``) and retried; after ``MAX_BATCH_TRIES`` its jobs are ``unconfirmed`` with the reason
  (journaled): a try may still be mined, and the payer's next voucher is cumulative, so they join the batch
  whose ``BatchSettled`` has their results root, or the next batch whose ``count`` covers their seqs; ``unpaid``
  once nothing can settle them any more, or ``history_s`` later.

Restarts (:meth:`VoucherLink.attach`, given the agent's journal): the payer journals each voucher job's price
and, committed before the voucher leaves, the voucher it signed, so a restarted payer serves the same voucher
for a job again and numbers the next one after the later of the chain's channel and its own vouchers (its
first ``fund`` reads the deposit's unpromised room from the chain: :meth:`VoucherLink._read_room`); a job it
funded that ends without a voucher drops its row (:meth:`VoucherLink.ended`). The executor journals each voucher it queued and each batch it settled, so a restarted executor sends its queued
results and finalizes its pending batches. On the first poll after a restart the chain wins: results its
channel already settled are not sent again (the replayed ``BatchSettled`` whose results root they make gives
them their batch back) and batches no longer pending are not finalized. A batch sent before the crash may also
be mined after that first poll: the restarted executor's settleBatch of the same results then reverts
(``VoucherSpent``), or settles only the results queued after it (its ``count`` is short); either way the
results the chain's channel settled go to that batch's ``BatchSettled`` (kept when read before them), not to a
failed try. Rows go once their batch is paid or voided (an ``owed`` job's once it is paid in full: restored
``owed``, with what was paid). What either side keeps of a job final here (paid, voided, refunded, unpaid, or
ended unpaid at the payer) goes ``history_s`` later (:meth:`VoucherLink._prune`), but for the payer's row of its
highest voucher to each executor (the numbering after a restart).

The events this needs after a restart are read again, also when the ChainLink resumes from its chain
checkpoint rather than the deployment block: a batch's ``BatchSettled``/``BatchPaid``/``BatchVoided`` that the
journal has not taken in yet was mined after the checkpoint (which a poll writes after its batch writes), and
the checkpoint holds what the payer derived from the older ones (:meth:`VoucherLink.view`: the seq each
executor's channel reached, the batches on its deposit not paid yet). It does not move while restored results
are not reconciled with the chain, nor while a settleBatch that failed (mined all the same, when only its
receipt was lost) waits for its next try (:meth:`VoucherLink.steady`). Results given up after the last try
(``unconfirmed``) do not hold it: the events kept while the tries' outcome was unknown are matched to them when
they are given up, and every own batch event read after that is matched to them as it is read.

Equivocation: the payer checks each batch settled on its deposit against the roots its executor revealed on
gossip (with their attestations, journaled with its vouchers); a leaf that contradicts an attestation voids the
batch (``challengeBatch``). See audit.py: a matching root costs nothing more; otherwise the payer fetches the
batch's leaves from its executor (:meth:`VoucherLink.batch_tree` serves them, also ``voucher_tree_keep_s``
after the payment: a short window's audit may come after it) and challenges; an executor whose batch cannot be
verified gets no new voucher.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio
from eth_utils import to_checksum_address

from ..chain import Attestation, ChainError, ResultsTree, Voucher
from ..chain.crypto import verify_attestation
from ..protocol.claiming import widen_seed
from ..protocol.events import ChainUpdate
from ..protocol.jobspec import JobSpec
from .audit import MAX_TREE_LEAVES, AuditError, Audits, batch_tree_name, tree_from_bytes, tree_to_bytes
from .vouchers import (
    BatchQueue,
    Finals,
    Pending,
    VoucherBook,
    VoucherError,
    batch_of,
    paid_parts,
    prefix_run,
    voucher_from_bytes,
    voucher_to_bytes,
)

if TYPE_CHECKING:
    from .journal import Journal

MAX_BATCH_TRIES = 3
#: Most bytes of paid batches' trees an executor keeps serving (``voucher_tree_keep_s``): 16 of the largest.
KEPT_TREE_BYTES = 16 * MAX_TREE_LEAVES * 64
#: Events the voucher mode needs from the poller.
BATCH_EVENTS = frozenset({"BatchSettled", "BatchPaid", "BatchVoided"})


@dataclass
class _Batch:
    jobs: list[bytes]
    amount: int
    release_at: int
    tree: ResultsTree | None = None
    paying: bool = False  # a batch settled on this node's deposit (as payer): forgotten once paid or voided
    audit: tuple[bytes, int, int] | None = None  # paying: (results root, executor's node index, count)
    # what it pays each job (wei: its voucher's amount, less what a short batch left owing; a top-up's are jobs an
    # earlier batch settled), and the channel's cumulative amount it paid up to (None: not known)
    paid: dict[bytes, int] = field(default_factory=dict)
    top: int | None = None
    # executor: the vouchers of its leaves (a top-up of it whose receipt was lost is found by its root: _top_up),
    # and of the jobs it pays what a short batch left owing
    vouchers: list[Voucher] = field(default_factory=list)
    # executor: found paid or voided by another's finalizeBatch (or one whose receipt was lost), or after a restart:
    # not finalized again; its event says which (a paid one's tree is kept: VoucherLink._keep_tree)
    finalized: bool = False


class VoucherLink:
    """State and calls of the voucher mode; ``link`` is the owning ChainLink (its market, lock, run helpers)."""

    def __init__(self, link: Any, options: dict[str, Any]) -> None:
        self.link = link
        m = link.market
        self.book = VoucherBook()
        self.queue = BatchQueue(
            m.signer.address,
            link.chain_id,
            m.address,
            max_jobs=int(options.get("voucher_batch_jobs", 32)),
            max_age=float(options.get("voucher_batch_age_s", 2.0)),
        )
        self.deposit_chunk = int(options.get("voucher_deposit_wei", 0))
        # executor: how often it reads the deposit of a payer it has jobs owing from (_top_up_owed)
        self.top_up_s = float(options.get("voucher_top_up_s", 60.0))
        self.fetcher: Callable[[bytes, str], Awaitable[bytes | None]] | None = None  # set by the runtime
        self.on_error: Callable[[str], None] = lambda msg: None
        self.fetch_timeout = float(options.get("voucher_fetch_timeout_s", 30.0))
        # executor: the trees of its paid batches, still served for a payer's audit that comes after the
        # payment (a short challenge window), ``voucher_tree_keep_s`` and at most KEPT_TREE_BYTES: batch -> (until,
        # leaves; monotonic), oldest first (:meth:`batch_tree`)
        self.tree_keep_s = float(options.get("voucher_tree_keep_s", 600.0))
        self._paid_trees: dict[int, tuple[float, bytes]] = {}
        self.prices: dict[bytes, int] = {}  # payer: job -> price
        self.room = 0  # payer: deposit not yet promised
        # read from the chain by the first fund() (the deposit may hold some already)
        self._room_known = False
        self._deposit_lock = trio.Lock()
        # issue() numbers vouchers in a worker thread; ChainLink runs several at once, so two vouchers for one
        # executor could both take the same next seq (the executor then refuses one as replayed)
        self._issue_lock = trio.Lock()
        self._seed: tuple[float, bytes] = (0.0, b"")
        self.payer_seq: dict[str, int] = {}  # payer: executor -> last seq the chain settled
        self.batches: dict[int, _Batch] = {}  # this node's batches (as executor) and its deposit's (as payer)
        self.tries: dict[str, int] = {}
        self.state: dict[bytes, dict[str, Any]] = {}  # job -> what job() reports
        self.attested: dict[bytes, Attestation] = {}  # payer: job -> the executor's attestation of its reveal
        self.on_audit: Callable[[str], None] | None = None  # audit reports (default: on_error)
        self.audits = Audits(options, lambda msg: (self.on_audit or self.on_error)(msg))
        # payer: paid batches whose unfinished audit is journaled (with their jobs' attestations: their rows went
        # with the payment), forgotten once it ends (:meth:`audit`)
        self._audits_kept: set[int] = set()
        self.updates: list[ChainUpdate] = []
        self.journal: Journal | None = None
        self._writes: list[Callable[[Journal], None]] = []  # from the poller thread, written by drain()
        self._resumed = True  # False: state restored from the journal, not yet reconciled with the chain
        # payer -> results settled unseen
        self.orphans: dict[str, dict[int, tuple[bytes, bytes, Voucher]]] = {}
        # executor, after a restart: payers some of whose results were restored unbatched (a settleBatch of theirs
        # may have been in flight at the crash and be mined later), and their own BatchSettled events that matched
        # no orphan yet (the orphans may come later: :meth:`_orphan`)
        self._restored: set[str] = set()
        self._unmatched: dict[str, dict[int, dict[str, Any]]] = {}
        # payers whose last settleBatch failed: it may have been mined all the same (a receipt lost), and after a
        # restart its BatchSettled is needed again (steady())
        self._unsure: set[str] = set()
        # results whose settleBatch was given up after MAX_BATCH_TRIES (payer -> seq -> item): a try may still be
        # mined, so they are matched like the orphans until ``history_s`` after the last give-up (_give_up)
        self.unconfirmed: dict[str, dict[int, tuple[bytes, bytes, Voucher]]] = {}
        self._unconfirmed_until: dict[str, float] = {}
        # payer -> results root -> the results of each of its tries of unknown outcome (a mined one's batch has
        # them as its leaves, which may repeat results an earlier try settled: _own_batch); after a restart,
        # the first seq of each group of results given up together (their tries are prefixes of it)
        self._tried: dict[str, dict[bytes, dict[int, tuple[bytes, bytes, Voucher]]]] = {}
        self._given_up_from: dict[str, set[int]] = {}
        # jobs final here: what is kept of them goes ``history_s`` later (_prune); payer: executor -> the job whose
        # journal row, kept after the job went, holds this executor's highest voucher (numbering after a restart)
        self.finals = Finals()
        self._kept: dict[str, bytes] = {}
        self._pruned_at = float("-inf")
        # executor, after a restart: batches restored from a journal written before their leaves (payer of each),
        # whose tree is rebuilt from its rows and checked against the chain's results root (_resume)
        self._rebuild: dict[int, str] = {}
        self._rows: dict[str, dict[int, tuple[bytes, bytes]]] = {}  # payer -> seq -> (job, root) restored
        # executor: the vouchers (and results' roots) of its jobs a batch short of deposit left owing (a later batch
        # of their payer pays the rest: _adopt, _top_up_owed), until they are paid in full; when each payer's deposit
        # is read next for a top-up (monotonic)
        self._owing: dict[bytes, tuple[Voucher, bytes]] = {}
        self._top_up_at: dict[str, float] = {}
        # payer, after a restart: owed jobs -> the last batch counted in what they were paid (not counted again when
        # its events are read again)
        self._counted: dict[bytes, int] = {}

    # ------------------------------------------------------------------ journal

    def attach(self, journal: Journal) -> None:
        """Keep this node's voucher state in ``journal`` from now on, and restore what it holds (the agent
        calls this before it polls or serves anything)."""
        self.journal = journal
        # (oldest ended first: the order in which they go)
        for row in sorted(journal.voucher_rows("payer"), key=lambda r: r["given_up"] or 0.0):
            jid = row["job_id"]
            self.prices[jid] = row["price"]
            st: dict[str, Any] = {"state": "open", "pay": "voucher", "paid_wei": 0, "refunded_wei": 0}
            if row["voucher"] is not None:
                v = voucher_from_bytes(row["voucher"])
                self.book.restore(v)
                st.update({"state": "voucher-signed", "executor": v.executor, "seq": v.seq})
                if row["root"] is not None and row["attest"] is not None:
                    self.attested[jid] = Attestation(jid, row["root"], row["attest"])
                if row["given_up"] is not None:  # the job ended here unpaid (ended()), or paid short
                    self.finals.mark(jid, float(row["given_up"]))
                if row["paid"] is not None:
                    st = {**self._owed(v, row["paid"], row["batch"]), "executor": v.executor}
                    self._counted[jid] = row["batch"] or 0
            self.state[jid] = st
        by_batch: dict[int, list[tuple[int, bytes, bytes]]] = {}
        now = time.monotonic()
        groups: dict[tuple[str, float], int] = {}
        batched: dict[bytes, Voucher] = {}
        for row in journal.voucher_rows("executor"):
            jid, v, bid = row["job_id"], voucher_from_bytes(row["voucher"]), row["batch"]
            if row["paid"] is not None:  # its batch paid it short (and is gone): owed the rest
                self.queue.mark_used(v.client, v.seq, jid)
                self._owing[jid] = (v, row["root"])
                self.state[jid] = self._owed(v, row["paid"], bid)
                self.finals.mark(jid, float(row["given_up"] or time.time()))
                continue
            if bid is None and row["given_up"] is not None:
                payer, at = to_checksum_address(v.client), float(row["given_up"])
                self.queue.mark_used(payer, v.seq, jid)  # (a seq pays for one job only)
                self._hold(
                    payer, {v.seq: (jid, row["root"], v)}, f"given up after {MAX_BATCH_TRIES} tries", at
                )
                groups[(payer, at)] = min(v.seq, groups.get((payer, at), v.seq))
                continue
            self.queue.restore(v, v.client, jid, row["root"], bid, now)
            self.state[jid] = {
                "state": "batching" if bid is None else "batched",
                "pay": "voucher",
                "seq": v.seq,
                "paid_wei": 0,
                "refunded_wei": 0,
                **({} if bid is None else {"batch": bid}),
            }
            if bid is not None:
                by_batch.setdefault(bid, []).append((v.seq, jid, row["root"]))
                batched[jid] = v
                self._rows.setdefault(to_checksum_address(v.client), {})[v.seq] = (jid, row["root"])
            else:
                self._restored.add(to_checksum_address(v.client))
        for bid, payer, amount, release_at, whole, paid in journal.voucher_batches():
            leaves = sorted(by_batch.get(bid, []))
            tree = None
            if whole is not None:
                # the tree as settled: it may hold results an earlier try settled too (those rows are that
                # batch's) and not the given-up results it took in (_covered), so its rows would not give its
                # root back (the payer's audit asks); a top-up has no rows at all
                with contextlib.suppress(AuditError):
                    tree = tree_from_bytes(whole)
            elif leaves:  # (a journal written before the leaves: _resume checks the rows' tree on chain)
                tree = ResultsTree([(jid, root) for _, jid, root in leaves])
                self._rebuild[bid] = to_checksum_address(payer)
            # (journaled before what it paid: in full)
            parts = {jid: batched[jid].amount for _, jid, _ in leaves}
            parts.update(paid or {})
            vouchers = [batched[j] for j, _ in tree.results if j in batched] if tree is not None else []
            self.batches[bid] = _Batch(
                [jid for _, jid, _ in leaves], amount, release_at, tree, paid=parts, vouchers=vouchers
            )
            roots = dict(tree.results) if tree is not None else {}
            self._owing.update(
                {v.job_id: (v, roots[v.job_id]) for v in vouchers if parts.get(v.job_id, v.amount) < v.amount}
            )
        for (payer, _), first in groups.items():
            self._given_up_from.setdefault(payer, set()).add(first)
        wall, mono = time.time(), time.monotonic()
        for bid, until, data in journal.voucher_trees():  # (the paid batches' trees still served)
            self._paid_trees[bid] = (mono + min(until - wall, self.tree_keep_s), data)
        self._trim_trees()
        for bid, executor, node, root, release_at, attests in journal.voucher_audits():
            self.audits.resume(bid, executor, node, root, release_at)
            for jid, (trace_root, sig) in attests.items():
                self.attested.setdefault(jid, Attestation(jid, trace_root, sig))
                if jid not in self.finals:
                    self.finals.mark(jid, time.time())  # (forgotten history_s later)
            self._audits_kept.add(bid)
        self._resumed = not (self.queue.pending or self.batches)

    def _write(self, op: Callable[[Journal], None] | None, commit: bool = False) -> None:
        """Run ``op`` on the journal (from the trio thread only), committing at once when ``commit``."""
        if self.journal is not None:
            if op is not None:
                op(self.journal)
            if commit:
                self.journal.commit()

    async def _resume(self) -> None:
        """After a restart, reconcile the restored executor state with the chain (the chain wins)."""
        market = self.link.market
        payers, bids = list(self.queue.pending), list(self.batches)

        def work() -> tuple[dict[str, int], dict[int, dict[str, Any]]]:
            return (
                {p: market.channel(p, market.account)[1] for p in payers},
                {b: market.batch(b) for b in bids},
            )

        settled, on_chain = await self.link._read(work)
        states = {bid: int(b["state"]) for bid, b in on_chain.items()}
        for bid, payer in self._rebuild.items():
            if states.get(bid) == 1:
                self._rebuilt(bid, payer, bytes(on_chain[bid]["results_root"]))
        self._rebuild, self._rows = {}, {}
        for payer, seq in settled.items():
            gone = self.queue.settled_by_chain(payer, seq)
            if gone is not None:
                self._orphan(payer, gone.items)
            self._settled_restored(payer)
        for bid, st in states.items():
            b = self.batches.get(bid)
            if st != 1 and b is not None:  # paid or voided meanwhile: its event (read again) says which
                b.finalized = True
        self._resumed = True

    def _rebuilt(self, bid: int, payer: str, root: bytes) -> None:
        """Batch ``bid``, restored from a journal written before its leaves: its tree is the run of ``payer``'s
        restored results, in seq order, that ends with its highest result and hashes to its on-chain ``root``
        (its rows alone may hold given-up results it took in, or lack results an earlier try settled too);
        journaled as its leaves once found, else reported (its rows' tree is kept: it is still finalized)."""
        b = self.batches[bid]
        rows = self._rows.get(payer, {})
        own = [int(self.state[j]["seq"]) for j in b.jobs if "seq" in self.state.get(j, {})]
        seqs = sorted(s for s in rows if own and s <= max(own))
        runs = (
            ResultsTree([rows[s] for s in seqs[-n:]]) for n in range(1, min(len(seqs), MAX_TREE_LEAVES) + 1)
        )
        tree = next((t for t in runs if t.root == root), None)
        if tree is None:
            self.on_error(f"batch {bid}: no results restored for it hash to its results root"[:300])
            return
        b.tree = tree
        self._writes.append(
            lambda j: j.voucher_batch(bid, payer, b.amount, b.release_at, tree_to_bytes(tree), b.paid)
        )

    # ------------------------------------------------------------------ payer

    async def fund(self, spec: JobSpec) -> bytes:
        """Reserve the job's price in this account's deposit (topping it up when short); return the seed."""
        price = spec.payment_wei
        async with self._deposit_lock:
            if not self._room_known:
                await self._read_room()
            if self.room < price:
                amount = max(self.deposit_chunk or 64 * price, price - self.room)
                await self.link._run(self.link.market.deposit, amount)
                self.room += amount
            self.room -= price
        self.prices[spec.job_id] = price
        self.state[spec.job_id] = {"state": "open", "pay": "voucher", "paid_wei": 0, "refunded_wei": 0}
        self._write(lambda j: j.voucher_put(spec.job_id, "payer", price=price))
        return widen_seed(spec.job_id, await self._recent_seed())

    async def _read_room(self) -> None:
        """What this account's deposit holds beyond its promises: the chain's balance less what its vouchers
        promise beyond their channels' settled amounts (:meth:`VoucherBook.outstanding`) and the prices of the
        jobs funded but not signed yet (both restored from the journal after a restart), so that a restarted
        payer does not lock another chunk while its deposit still covers the job."""
        market = self.link.market

        def work() -> tuple[int, dict[str, int]]:
            settled = {}
            for ex in self.book.executors():
                paid, seq = market.channel(market.account, ex)
                self.book.open_channel(ex, seq, paid)
                settled[ex] = paid
            return market.deposit_of()[0], settled

        async with self._issue_lock:  # issue() numbers in the book meanwhile otherwise
            balance, settled = await self.link._read(work)
            owed = self.book.outstanding(settled)
            reserved = sum(p for jid, p in self.prices.items() if jid not in self.book.issued)
        self.room = max(0, balance - owed - reserved)
        self._room_known = True

    async def _recent_seed(self) -> bytes:
        """First 8 bytes of the latest block hash (read at most once a second)."""
        at, seed = self._seed
        if time.monotonic() - at > 1.0 or not seed:
            chain = self.link.reader.chain
            block = await self.link._read(lambda: chain.w3.eth.get_block("latest"))
            seed = bytes(block["hash"])[:8]
            self._seed = (time.monotonic(), seed)
        return seed

    async def issue(self, job_id: bytes, executor: str, attest: Attestation | None = None) -> bytes | None:
        """The voucher for ``job_id`` to ``executor`` (signed once; the same bytes on every request), or None
        when this node is not the job's voucher payer, or signs no new voucher to ``executor`` (one of its batches
        failed the audit: audit.py). ``attest``: the executor's attestation carried by its reveal (kept for the
        audit when it is the executor's)."""
        price = self.prices.get(job_id)
        if price is None:
            return None
        executor = to_checksum_address(executor)
        market = self.link.market
        blocked = self.audits.blocked.get(executor)
        if blocked is not None and job_id not in self.book.issued:
            if job_id in self.state:
                self.state[job_id]["reason"] = f"no voucher signed for {executor}: {blocked}"
            return None

        def work() -> tuple[Voucher, bool, Attestation | None] | None:
            if job_id not in self.prices:
                return None  # (forgotten meanwhile: final for longer than history_s)
            att = attest
            if att is not None and (
                att.job_id != job_id
                or not verify_attestation(att, self.link.chain_id, market.address, executor)
            ):
                att = None  # (not its executor's: useless to challenge a batch)
            if not self.book.has_channel(executor):
                # after the later of the chain's channel and the vouchers restored from the journal; payer_seq
                # (which maps batches onto vouchers) follows the BatchSettled events only (kept in the chain
                # checkpoint across restarts: view())
                paid, seq = market.channel(market.account, executor)
                self.book.open_channel(executor, seq, paid)
            terms = self.book.next_terms(executor, job_id, price)
            if isinstance(terms, Voucher):
                return terms, False, att
            v = market.sign_voucher(executor, job_id, terms[0], price, terms[1])
            self.book.record(v)
            return v, True, att

        async with self._issue_lock:
            signed = await self.link._run(work)
            if signed is None:
                return None
            v, new, att = signed
            if new:  # durable before it leaves: a restarted payer serves it again and numbers after it
                kept = self._kept.pop(executor, None)  # (numbers after this one now)

                def op(j: Journal) -> None:
                    j.voucher_put(
                        job_id,
                        "payer",
                        price=price,
                        voucher=voucher_to_bytes(v),
                        root=att.trace_root if att is not None else None,
                        attest=att.signature if att is not None else None,
                    )
                    if kept is not None:
                        j.voucher_forget([kept], "payer")

                self._write(op, commit=True)
        if att is not None and job_id in self.state:  # (journaled with a new voucher only)
            self.attested.setdefault(job_id, att)
        if new:  # (served again: its state may have moved on, to batched or settled)
            self.state[job_id].update({"state": "voucher-signed", "executor": executor, "seq": v.seq})
        return voucher_to_bytes(v)

    # ------------------------------------------------------------------ executor

    async def accept(self, job_id: bytes, args: dict[str, Any]) -> str:
        """Fetch the voucher for this node's result from the job's origin, check it and queue the result."""
        origin: bytes = args["origin"]
        held = self.state.get(job_id, {})
        # e.g. a reveal sent again after a restart
        if held.get("state") in ("batching", "batched", "owed", "settled", "unconfirmed"):
            return f"voucher seq {held.get('seq')} already held ({held['state']})"
        payer = self.link.accounts.get(origin)
        if payer is None:
            raise VoucherError(f"the origin {origin.hex()[:16]} has no account on chain")
        v = await self._fetch(job_id, origin)
        market = self.link.market

        def check() -> None:
            paid, seq = market.channel(payer, market.account)
            balance, _ = market.deposit_of(payer)
            self.queue.check(v, payer, job_id, int(args.get("price", 0)), seq, paid, balance)

        try:
            await self.link._read(check)
        except VoucherError as e:
            self.state[job_id] = {"state": "unpaid", "pay": "voucher", "reason": str(e), "paid_wei": 0}
            self.finals.mark(job_id, time.time())
            raise
        self.queue.add(v, payer, job_id, args["root"], time.monotonic())
        self._write(
            lambda j: j.voucher_put(job_id, "executor", voucher=voucher_to_bytes(v), root=args["root"]),
            commit=True,
        )
        self.state[job_id] = {
            "state": "batching",
            "pay": "voucher",
            "seq": v.seq,
            "paid_wei": 0,
            "refunded_wei": 0,
        }
        return f"voucher seq {v.seq} ({v.cumulative} wei in total) queued for a batch"

    async def _fetch(self, job_id: bytes, origin: bytes) -> Voucher:
        from .vouchers import voucher_name

        name = voucher_name(job_id, self.link.node_id)
        give_up = time.monotonic() + self.fetch_timeout
        delay = 0.05
        while True:
            if origin == self.link.node_id:
                data = await self.issue(job_id, self.link.market.account)
            elif self.fetcher is not None:
                data = await self.fetcher(origin, name)
            else:
                raise VoucherError("no way to reach the origin for a voucher")
            if data:
                return voucher_from_bytes(data)
            if time.monotonic() > give_up:
                raise VoucherError(
                    f"the origin {origin.hex()[:16]} gave no voucher in {self.fetch_timeout:.0f}s"
                )
            await trio.sleep(delay)
            delay = min(1.0, delay * 2)

    # ------------------------------------------------------------------ batches (run by every poll)

    async def tick(self) -> None:
        if not self._resumed:
            await self._resume()
        self._prune(time.time())  # (first: what becomes final below is still reported until the next prune)
        for payer in self.queue.due(time.monotonic()):
            await self._settle(payer, self.queue.take(payer))
        await self._top_up_owed()
        self._expire()
        await self._finalize_due()
        if self.audits.verified:  # (those whose challenge window closed are forgotten: one chain read a poll)
            self.audits.closed(int(await self.link._read(self.link.reader.chain.now)))
        await self.audit()

    async def _settle(self, payer: str, p: Pending) -> None:
        voucher, tree, jobs = batch_of(p)
        self._write(None, commit=True)  # what the batch covers is durable before it is sent
        try:
            res = await self.link._run(self.link.market.settle_batch, voucher, tree)
        except ChainError as e:
            # mined all the same (a lost receipt, or an earlier try mined late)? then its BatchSettled gives
            # these results their batch
            self._tried.setdefault(payer, {})[tree.root] = dict(p.items)
            if await self._settled_meanwhile(payer, p):
                self.tries.pop(payer, None)  # the outcome is known: the rest were not settled
                self._unsure.discard(payer)
                if payer not in self._restored:
                    self._settled_restored(payer)  # (a restored payer's, when its results are all batched)
                return
            self._unsure.add(payer)
            tries = self.tries[payer] = self.tries.get(payer, 0) + 1
            msg = f"settleBatch of {len(jobs)} job(s) for {payer} failed ({tries}/{MAX_BATCH_TRIES}): {e}"
            self.on_error(msg[:300])
            if tries < MAX_BATCH_TRIES:
                p.since = time.monotonic()
                self.queue.put_back(payer, p)
            else:
                self.tries.pop(payer, None)
                self._unsure.discard(payer)
                self._give_up(payer, p, str(e)[:200])
            return
        self.tries.pop(payer, None)
        unsure = payer in self._unsure
        self._unsure.discard(payer)
        ev = res.event("BatchSettled")
        bid = int(ev["batchId"])
        early = len(jobs) - int(ev["count"])
        if early > 0 and (payer in self._restored or unsure):
            # an earlier try taken for failed, or a batch sent before a restart, was mined after the chain was
            # consulted and settled the lowest of these results (this one then settled only the rest: the count
            # says how many; none when it tops up what that earlier batch, short of deposit, left owing: it pays
            # the highest of them, which stay that batch's)
            seqs = sorted(p.items)
            jobs = jobs[early:]
            self._adopt(bid, payer, jobs, ev, tree, [it[2] for it in p.items.values()], voucher.cumulative)
            self._orphan(payer, {s: p.items[s] for s in seqs[:early]})
        else:
            self._adopt(bid, payer, jobs, ev, tree, [it[2] for it in p.items.values()], voucher.cumulative)
        self._settled_restored(payer)
        self._flush(commit=True)

    async def _settled_meanwhile(self, payer: str, p: Pending) -> bool:
        """A settleBatch failed: did the chain settle some of these results meanwhile (a try whose receipt was
        lost, or mined late; a batch sent before a restart, mined after it)? Those go to the orphans (the
        batch's ``BatchSettled``, read or still to come, gives them their batch), the rest waits for the next
        batch; False when the chain settled none of them."""
        market = self.link.market
        try:
            _, seq = await self.link._read(market.channel, payer, market.account)
        except ChainError:
            return False
        gone = {s: it for s, it in p.items.items() if s <= seq}
        if not gone:
            return False
        rest = Pending(p.since, {s: it for s, it in p.items.items() if s > seq})
        if rest.items:
            self.queue.put_back(payer, rest)
        self._orphan(payer, gone)
        return True

    async def _top_up_owed(self) -> None:
        """Executor: each payer its short batches left owing, once per ``top_up_s`` (and unless a batch of its
        results waits or a try's outcome is unknown: the next batch's cumulative voucher pays it then), gets a top-up
        when its deposit holds something now (:meth:`_top_up_payer`)."""
        now = time.monotonic()
        owed: dict[str, dict[int, tuple[bytes, bytes, Voucher]]] = {}
        for jid, (v, root) in self._owing.items():
            owed.setdefault(to_checksum_address(v.client), {})[v.seq] = (jid, root, v)
        for payer in [*self._top_up_at]:
            if payer not in owed:
                del self._top_up_at[payer]
        for payer, items in owed.items():
            if self._top_up_at.get(payer, now) > now or payer in self.queue.pending or payer in self._unsure:
                continue
            self._top_up_at[payer] = now + self.top_up_s
            await self._top_up_payer(payer, items)

    async def _top_up_payer(self, payer: str, items: dict[int, tuple[bytes, bytes, Voucher]]) -> None:
        """Settle ``payer``'s highest owed voucher again (the same seq: a batch of count 0, whose leaves are the owed
        results) when the chain's channel has not been paid up to it and the payer's deposit holds something: it
        pays what the deposit covers of the rest (:meth:`_adopt`). A failed try is reported, tried again
        ``top_up_s`` later, and matched by its results root should it be mined all the same (:meth:`_top_up`)."""
        market = self.link.market
        voucher, tree, _ = batch_of(Pending(0.0, items))

        def due() -> bool:
            paid, seq = market.channel(payer, market.account)
            return voucher.cumulative > paid and seq <= voucher.seq and market.deposit_of(payer)[0] > 0

        try:
            if not await self.link._read(due):
                return
        except ChainError:
            return  # (read again top_up_s later)
        try:
            res = await self.link._run(market.settle_batch, voucher, tree)
        except ChainError as e:
            self._tried.setdefault(payer, {})[tree.root] = dict(items)
            self.on_error(f"top-up settleBatch of {len(items)} owed job(s) for {payer} failed: {e}"[:300])
            return
        ev = res.event("BatchSettled")
        self._adopt(
            int(ev["batchId"]), payer, [], ev, tree, [v for _, _, v in items.values()], voucher.cumulative
        )
        self._flush(commit=True)

    def _settled_restored(self, payer: str) -> None:
        """``payer``'s restored results, or those of a try of unknown outcome, are all in a batch, matched or
        given up: none can be orphaned any more, so batch events that matched none are dropped."""
        if payer in self._restored and payer not in self.queue.pending:
            self._restored.discard(payer)
            self._unmatched.pop(payer, None)
        elif payer not in self._restored and payer not in self._unsure and not self.orphans.get(payer):
            self._unmatched.pop(payer, None)
        self._tidy(payer)

    def _tidy(self, payer: str) -> None:
        """Forget what was kept to match ``payer``'s batches once none of its results can be matched any more."""
        if self.unconfirmed.get(payer):
            return
        self.unconfirmed.pop(payer, None)
        self._unconfirmed_until.pop(payer, None)
        self._given_up_from.pop(payer, None)
        if payer not in self._restored and payer not in self._unsure and not self.orphans.get(payer):
            self._tried.pop(payer, None)

    def _orphan(self, payer: str, items: dict[int, tuple[bytes, bytes, Voucher]]) -> None:
        """Results of ``payer`` the chain settled in a batch this node does not know (sent before a restart);
        matched to the batch's ``BatchSettled`` now if it was already read, else when it is."""
        self.orphans.setdefault(payer, {}).update(items)
        self._match_kept(payer)

    def _match_kept(self, payer: str) -> None:
        """Match ``payer``'s own batch events kept unmatched to the results that may be theirs now."""
        for bid, a in sorted(self._unmatched.get(payer, {}).items()):
            if self._own_batch(bid, payer, a):
                del self._unmatched[payer][bid]

    def _give_up(self, payer: str, p: Pending, reason: str) -> None:
        """``p``'s settleBatch failed MAX_BATCH_TRIES times: it is not sent again, but a try may have been mined all
        the same (a receipt lost, a try mined late). Its results wait as ``unconfirmed`` (journaled) for their
        batch's ``BatchSettled`` (read already, kept while the tries' outcome was unknown, or still to come:
        :meth:`_own_batch`) or a later batch of theirs that covers them (:meth:`_covered`), until ``history_s``
        has passed (then ``unpaid``). The chain checkpoint need not wait for them: from now on every own batch
        event read is matched to them at once (:meth:`steady`)."""
        now = time.time()
        self._hold(payer, p.items, reason, now)
        jobs = [jid for jid, _, _ in p.items.values()]

        def op(j: Journal) -> None:
            for jid in jobs:
                j.voucher_put(jid, "executor", given_up=now)

        self._writes.append(op)
        self._match_kept(payer)
        self._settled_restored(payer)

    def _hold(
        self, payer: str, items: dict[int, tuple[bytes, bytes, Voucher]], reason: str, given_up: float
    ) -> None:
        self.unconfirmed.setdefault(payer, {}).update(items)
        until = given_up + self.link.history_s
        self._unconfirmed_until[payer] = max(until, self._unconfirmed_until.get(payer, until))
        for s, (jid, _, _) in items.items():
            self.state[jid] = {
                "state": "unconfirmed",
                "pay": "voucher",
                "seq": s,
                "reason": reason,
                "paid_wei": 0,
                "refunded_wei": 0,
            }

    def _covered(self, bid: int, payer: str, count: int) -> None:
        """Own batch ``bid`` settled ``count`` of ``payer``'s seqs: no batch can settle a lower seq any more. Results
        given up below its own were either in a batch read before (matched then) or in none: the vouchers are
        cumulative, so this batch pays for the seqs its count has beyond its results (they join it), and the
        rest are unpaid for good."""
        held, b = self.unconfirmed.get(payer), self.batches.get(bid)
        if held and b is not None and b.jobs:
            low = min(int(self.state.get(j, {}).get("seq", 0)) for j in b.jobs)
            below = sorted(s for s in held if s < low)
            extra = min(len(below), max(0, count - len(b.jobs)))
            items = [held.pop(s) for s in below[len(below) - extra :]]
            self._unpaid([held.pop(s)[0] for s in below[: len(below) - extra]])
            joined = [jid for jid, _, _ in items]
            if joined:
                b.jobs = joined + b.jobs
                vouchers = [v for _, _, v in items]
                b.paid.update(
                    paid_parts(vouchers, b.amount, b.top)
                    if b.top is not None
                    else {v.job_id: v.amount for v in vouchers}
                )
                for jid in joined:
                    self.state[jid].update({"state": "batched", "batch": bid})

                def op(j: Journal) -> None:
                    for jid in joined:
                        j.voucher_put(jid, "executor", batch=bid)

                self._writes.append(op)
        self._tidy(payer)

    def _unpaid(self, jobs: list[bytes]) -> None:
        """Given-up results no batch can settle any more: unpaid for good (their rows go)."""
        if not jobs:
            return
        now = time.time()
        for jid in jobs:
            self.state.setdefault(jid, {"pay": "voucher", "paid_wei": 0}).update({"state": "unpaid"})
            self.finals.mark(jid, now)
        self._writes.append(lambda j: j.voucher_forget(jobs, "executor"))

    def _expire(self) -> None:
        """Given-up results still unsettled ``history_s`` after they were given up are unpaid for good."""
        now = time.time()
        for payer, until in list(self._unconfirmed_until.items()):
            if until <= now:
                self._unpaid([jid for jid, _, _ in self.unconfirmed.pop(payer, {}).values()])
                self._tidy(payer)

    def _prune(self, now: float) -> None:
        """Forget the jobs final for longer than ``history_s`` (at most every ten minutes): their state, the payer's
        voucher, price and attestation and its journal row (but the row of the highest voucher to each executor,
        which numbers the next one after a restart), the executor's record of their seq (the chain's channel or
        their being unpaid covers it), and the payer's batches none of whose jobs is left."""
        if now < self._pruned_at + min(600.0, self.link.history_s):
            return
        self._pruned_at = now
        jobs = self.finals.due(now - self.link.history_s)
        if not jobs:
            return
        gone, superseded = [], []
        owed = [jid for jid in jobs if jid in self._owing]  # (given up: their rows go)
        if owed:
            self._write(lambda j: j.voucher_forget(owed, "executor"))
        for jid in jobs:
            for kept in (self.state, self.prices, self.attested, self._owing, self._counted):
                kept.pop(jid, None)
            self.queue.forget(jid)
            if jid not in self.book.issued:
                continue
            top = self.book.forget(jid)
            if top is None:
                gone.append(jid)
                continue
            old = self._kept.get(top)
            if old is not None and old != jid:
                superseded.append(old)
            self._kept[top] = jid
        for bid, b in list(self.batches.items()):
            if b.paying and not any(j in self.state for j in (*b.jobs, *b.paid)):
                del self.batches[bid]
        if gone or superseded:
            self._write(lambda j: j.voucher_forget(gone + superseded, "payer"))

    def _adopt(
        self,
        bid: int,
        payer: str,
        jobs: list[bytes],
        event: dict[str, Any],
        tree: ResultsTree,
        vouchers: list[Voucher],
        cumulative: int,
    ) -> None:
        """Record this executor's batch ``bid`` (journaled by the next :meth:`_flush`): ``jobs``, the results whose
        seqs it settled, from its ``BatchSettled`` ``event``; it was sent with the voucher of ``cumulative`` (the
        highest of ``vouchers``, those of its leaves), and pays each of them its part (a top-up pays jobs of an
        earlier batch)."""
        amount = int(event["amount"])
        top = cumulative - int(event.get("shortfall", 0))
        owing = [v for v, _ in self._owing.values() if to_checksum_address(v.client) == payer]
        vouchers = list({v.job_id: v for v in [*owing, *vouchers]}.values())
        paid = {j: w for j, w in paid_parts(vouchers, amount, top).items() if w or j in jobs}
        roots = dict(tree.results)
        self._owing.update(
            {
                v.job_id: (v, roots[v.job_id])
                for v in vouchers
                if v.job_id in jobs and paid[v.job_id] < v.amount
            }
        )
        release_at = int(event["releaseAt"])
        self.batches[bid] = _Batch(
            jobs, amount, release_at, tree, paid=paid, top=top, vouchers=list(vouchers)
        )
        for jid in jobs:
            self.state.setdefault(jid, {"pay": "voucher", "paid_wei": 0, "refunded_wei": 0}).update(
                {"state": "batched", "batch": bid}
            )

        def op(j: Journal) -> None:
            j.voucher_batch(bid, payer, amount, release_at, tree_to_bytes(tree), paid)
            for jid in jobs:
                j.voucher_put(jid, "executor", batch=bid)

        self._writes.append(op)

    def _flush(self, commit: bool = False) -> None:
        ops, self._writes = self._writes, []
        for op in ops:
            self._write(op)
        self._write(None, commit=commit)

    def poll_in(self) -> float | None:
        """Seconds until something here can move: a waiting batch comes of age, or one of this node's batches
        reaches its release time (then ``finalizeBatch`` can pay it). None: nothing waits. The runtime polls
        then rather than at its next regular poll (up to ``chain_poll_s`` later)."""
        mono, wall = time.monotonic(), time.time()
        times = []
        due = self.queue.next_due()
        if due is not None and due > mono:
            times.append(due - mono)
        times.extend(
            b.release_at - wall
            for b in self.batches.values()
            if b.tree is not None and not b.finalized and b.release_at > wall
        )
        audit = self.audits.next_due()
        if audit is not None:
            times.append(max(0.0, audit - mono))
        return min(times) if times else None

    async def _finalize_due(self) -> None:
        mine = [b for b, x in self.batches.items() if x.tree is not None and not x.finalized]
        if not mine:
            return
        # an idle development chain's clock lags the wall clock (it moves with blocks): judge by the later one,
        # and mine a block when the chain still says TooEarly (as ChainLink._finalize does)
        now = max(time.time(), await self.link._read(self.link.reader.chain.now))
        for bid in mine:
            batch = self.batches.get(bid)
            if batch is None or batch.release_at > now:
                continue
            try:
                await self.link._run(self.link.market.finalize_batch, bid)
            except ChainError as e:
                if "BatchNotPending" in f"{e.reason} {e}":
                    batch.finalized = True  # paid or voided: its event says which
                elif "TooEarly" in f"{e.reason} {e}" and self.link.chain.is_dev:
                    await self.link._run(self.link.chain.mine)  # an idle dev chain's clock moves with blocks
                else:
                    self.on_error(f"finalizeBatch {bid}: {e}"[:300])
                continue
            if batch.tree is not None:
                self._keep_tree(bid, batch.tree)
            batch.tree = None

    def _keep_tree(self, bid: int, tree: ResultsTree) -> None:
        """Serve the tree of batch ``bid``, just paid, ``tree_keep_s`` longer (journaled: also after a restart);
        the oldest go first past KEPT_TREE_BYTES. (Also from the poller thread: drain() writes the journal.)"""
        if self.tree_keep_s <= 0:
            return
        data, until = tree_to_bytes(tree), time.time() + self.tree_keep_s
        self._writes.append(lambda j: j.voucher_tree_keep(bid, until, data))
        self._paid_trees[bid] = (time.monotonic() + self.tree_keep_s, data)
        self._trim_trees()

    def _trim_trees(self) -> None:
        """Forget the kept trees whose time has passed, and the oldest past KEPT_TREE_BYTES (their rows too)."""
        kept, mono = self._paid_trees, time.monotonic()
        size, gone = sum(len(d) for _, d in kept.values()), []
        while kept:
            first = next(iter(kept))
            until, data = kept[first]
            if until > mono and size <= KEPT_TREE_BYTES:
                break
            del kept[first]
            size -= len(data)
            gone.append(first)
        if gone:
            self._writes.append(lambda j: j.voucher_trees_forget(gone))

    # ------------------------------------------------------------------ events

    def on_event(self, name: str, a: dict[str, Any]) -> None:
        """Called by the poller thread for each batch event; appends job updates to ``self.updates``."""
        bid = int(a["batchId"])
        me = self.link.market.account
        if name != "BatchSettled":
            self.audits.done(bid, paid=name == "BatchPaid")
        if name == "BatchSettled":
            client = to_checksum_address(a["client"])
            if self.link.account_of_index.get(int(a["node"])) == me:
                known = self.batches.get(bid)  # (paying: mapped as the payer of a job this node ran itself)
                if known is not None and not known.paying:
                    self._covered(bid, client, int(a["count"]))
                elif self._own_batch(bid, client, a):
                    self._settled_restored(client)  # (its events that matched nothing can go)
            if client == me:
                self._payer_batch(bid, a)
            return
        batch = self.batches.get(bid)
        if batch is None:
            return
        now = time.time()
        if name == "BatchPaid":
            if not batch.paying and batch.tree is not None:  # (finalized by another, or a receipt lost)
                self._keep_tree(bid, batch.tree)
            if batch.paying and bid in self.audits.pending:  # (its audit goes on: journaled)
                self._writes.append(self._keep_audit(bid, batch))
            for jid in batch.jobs:
                self.state.setdefault(jid, {}).update({"pay": "voucher", "batch": bid})
            # (also the jobs of an earlier batch it pays what that one, short of deposit, left owing)
            for jid in dict.fromkeys([*batch.jobs, *batch.paid]):
                st = self.state.get(jid)
                if st is None:
                    continue
                st["paid_wei"] = st.get("paid_wei", 0) + batch.paid.get(jid, 0)
                if (jid in batch.jobs or st.get("state") == "owed") and self._paid_up(jid, st, batch):
                    self.finals.mark(jid, now)
        elif name == "BatchVoided":
            if batch.paying:
                self.room += batch.amount  # the contract returned it to this payer's deposit: free again
            for jid in batch.jobs:
                self._owing.pop(jid, None)
                self.state.setdefault(jid, {}).update(
                    {
                        "state": "voided",
                        "pay": "voucher",
                        "batch": bid,
                        "reason": "batch voided by an equivocation proof",
                    }
                )
        for jid in batch.jobs:  # (one left owing too: what is kept of it goes history_s later, paid or not)
            self.finals.mark(jid, now)
        del self.batches[bid]  # paid or voided: nothing more can happen to it
        self._writes.append(self._batch_done(bid, batch, now))

    def _keep_audit(self, bid: int, batch: _Batch) -> Callable[[Journal], None]:
        """Journal the unfinished audit of ``batch`` on this node's deposit, paid, with its jobs' attestations
        (restored on :meth:`attach`; unless already journaled: a restarted payer reads the batch's events again)."""
        a = self.audits.pending[bid]
        jobs = dict.fromkeys([*batch.jobs, *batch.paid])
        attests = {
            j: (att.trace_root, att.signature) for j in jobs if (att := self.attested.get(j)) is not None
        }

        def op(j: Journal) -> None:
            if bid not in self._audits_kept:
                j.voucher_audit_put(bid, a.executor, a.node, a.root, a.release_at, attests)
                self._audits_kept.add(bid)

        return op

    def _batch_done(self, bid: int, batch: _Batch, now: float) -> Callable[[Journal], None]:
        """What the journal forgets of ``batch``, paid or voided: its rows, and those of the earlier jobs it paid
        in full; a job it left owing keeps its row, with what it was paid (restored ``owed``: :meth:`attach`)."""
        role = "payer" if batch.paying else "executor"
        owed: dict[bytes, tuple[int, float]] = {}  # job -> (paid so far, final since)
        done: list[bytes] = []
        for jid in dict.fromkeys([*batch.jobs, *batch.paid]):
            st = self.state.get(jid, {})
            if st.get("state") == "owed":
                owed[jid] = (int(st.get("paid_wei", 0)), self.finals.at.get(jid, now))
            elif jid in batch.jobs or st.get("state") == "settled":
                done.append(jid)

        def op(j: Journal) -> None:
            for jid, (paid, since) in owed.items():
                j.voucher_put(jid, role, paid=paid, given_up=since, batch=bid if batch.paying else None)
            j.voucher_batch_done(bid)  # (an executor's)
            j.voucher_forget(done, role)
            if not batch.paying:  # (this node paid for the jobs it ran itself too)
                j.voucher_forget([jid for jid in batch.jobs if jid not in owed], "payer")

        return op

    def _paid_up(self, job_id: bytes, st: dict[str, Any], batch: _Batch) -> bool:
        """A paid ``batch`` paid ``job_id`` (state ``st``) its part: True (``settled``, reported) once what was paid
        covers its voucher's amount (its leaves' at the executor, signed at the payer; unknown: covered), else
        ``owed`` the rest (a batch short of deposit: its payer's next batch of this executor, or a top-up, pays it)."""
        v = next((v for v in batch.vouchers if v.job_id == job_id), None) or self.book.issued.get(job_id)
        if v is not None and v.amount > st.get("paid_wei", 0):
            st.update(self._owed(v, st.get("paid_wei", 0), st.get("batch")))
            return False
        if st.pop("owed_wei", None) is not None:
            st.pop("reason", None)
        st["state"] = "settled"
        self._owing.pop(job_id, None)
        self.updates.append(ChainUpdate("job_settled", job_id))
        return True

    @staticmethod
    def _owed(v: Voucher, paid: int, batch: int | None) -> dict[str, Any]:
        """The state of a job ``paid`` wei of its voucher ``v`` so far (``batch``: the last that paid part of it)."""
        owed = v.amount - paid
        return {
            "state": "owed",
            "pay": "voucher",
            "seq": v.seq,
            "paid_wei": paid,
            "refunded_wei": 0,
            "owed_wei": owed,
            "reason": f"a batch short of deposit left {owed} wei owing: the payer's next batch or a top-up pays it",
            **({} if batch is None else {"batch": batch}),
        }

    def _own_batch(self, bid: int, payer: str, a: dict[str, Any]) -> bool:
        """A batch of this executor's that it does not know: sent before a restart, receipt not journaled, or a
        try taken for failed. Its leaves are the results whose tree has the batch's results root (:meth:`_leaves`);
        it settled the top ``count`` of them (the lower ones, sent again, an earlier try settled), which must be
        among those the chain settled unseen (:meth:`_resume`, :meth:`_settled_meanwhile`) or those given up
        (:meth:`_give_up`), or none: a top-up (:meth:`_top_up`). While such results may still turn up, an event
        that matches none is kept for them."""
        count = int(a["count"])
        if count == 0 and self._top_up(bid, payer, a):
            return True
        orphans, given_up = self.orphans.get(payer, {}), self.unconfirmed.get(payer, {})
        leaves = self._leaves(payer, bytes(a["resultsRoot"])) if orphans or given_up else None
        settled = sorted(leaves)[len(leaves) - count :] if leaves and 0 < count <= len(leaves) else []
        if not settled or any(s not in orphans and s not in given_up for s in settled):
            if payer in self._restored or payer in self._unsure:
                self._unmatched.setdefault(payer, {})[bid] = a
            return False
        got = Pending(0.0, {s: (orphans.pop(s) if s in orphans else given_up.pop(s)) for s in settled})
        # (the batch's tree: its leaves, also those settled before; sent with the voucher of the highest)
        sent, tree, _ = batch_of(Pending(0.0, leaves))
        vouchers = [v for _, _, v in leaves.values()]
        self._adopt(bid, payer, batch_of(got)[2], a, tree, vouchers, sent.cumulative)
        self._covered(bid, payer, count)
        return True

    def _top_up(self, bid: int, payer: str, a: dict[str, Any]) -> bool:
        """An own batch of count 0 this executor does not know: a top-up (the same seq again, after a short batch)
        whose receipt was lost. It settled no result of its own; its leaves, a try of unknown outcome or those of
        an own batch with its results root (the short one, sent again), get what it pays of what was left owing."""
        root = bytes(a["resultsRoot"])
        tried = self._tried.get(payer, {}).get(root)
        short = next((b for b in self.batches.values() if b.tree is not None and b.tree.root == root), None)
        if tried is not None:
            tree, vouchers = batch_of(Pending(0.0, tried))[1], [v for _, _, v in tried.values()]
        elif short is not None and short.tree is not None:  # (an executor's: a paying batch has no tree)
            tree, vouchers = short.tree, short.vouchers
        else:
            return False
        self._adopt(bid, payer, [], a, tree, vouchers, max((v.cumulative for v in vouchers), default=0))
        return True

    def _leaves(self, payer: str, root: bytes) -> dict[int, tuple[bytes, bytes, Voucher]] | None:
        """The results (seq -> item) of ``payer``'s own batch with results ``root``: one of its tries of unknown
        outcome, else the lowest orphans (a batch sent before a restart) or the lowest of a group of results
        given up together (restored after a restart)."""
        tried = self._tried.get(payer, {}).get(root)
        if tried is not None:
            return tried
        for held, starts in (
            (self.orphans.get(payer, {}), [min(self.orphans.get(payer) or [0])]),
            (self.unconfirmed.get(payer, {}), sorted(self._given_up_from.get(payer, ()))),
        ):
            for start in starts:
                run = prefix_run(held, root, start)
                if run is not None:
                    return {s: held[s] for s in run}
        return None

    def _payer_batch(self, bid: int, a: dict[str, Any]) -> None:
        """A batch settled on this node's deposit: it covers the next ``count`` seqs of its executor's channel.
        Counted also when this node is that executor (a job it runs itself), whose side already maps the batch
        (else the next batch it reads first, before its executor side knows it, would be mapped onto these
        seqs)."""
        executor = self.link.account_of_index.get(int(a["node"]))
        if executor is None:
            return
        first = self.payer_seq.get(executor, 0)
        last = first + int(a["count"])
        self.payer_seq[executor] = last
        if bid in self.batches:
            return
        jobs = self.book.jobs_between(executor, first, last)
        audit = (bytes(a["resultsRoot"]), int(a["node"]), int(a["count"]))
        amount = int(a["amount"])
        paid = self._paid_by(executor, first, last, jobs, amount, int(a.get("shortfall", 0)))
        # (read again after a restart: what it paid the owed jobs restored is counted already)
        if self._counted:
            jobs = [j for j in jobs if self._counted.get(j, 0) < bid]
            paid = {j: w for j, w in paid.items() if self._counted.get(j, 0) < bid}
        self._add_payer_batch(bid, jobs, amount, int(a["releaseAt"]), audit, paid)

    def _paid_by(
        self, executor: str, first: int, last: int, jobs: list[bytes], amount: int, shortfall: int
    ) -> dict[bytes, int]:
        """What a batch of ``amount`` on this node's deposit, settled with ``executor``'s voucher of seq ``last``,
        pays each job: exactly (paid_parts) while that voucher is held, also to the jobs below ``first`` whose
        vouchers a short batch left owing; else (forgotten) its voucher's amount to each job of seqs ``first`` <
        seq <= ``last`` still held (exact unless the batch was short). Never a share of what it paid for the jobs
        this node forgot."""
        issued = self.book.issued
        held = self.book.by_seq.get(to_checksum_address(executor), {})
        vouchers = [issued[j] for j in jobs if j in issued]
        sent = issued.get(held.get(last, b""))
        if sent is None:
            return {v.job_id: v.amount for v in vouchers}
        top = sent.cumulative - shortfall
        s = first
        while (v := issued.get(held.get(s, b""))) is not None and v.cumulative > top - amount:
            vouchers.append(v)  # (a top-up, or after a short batch)
            s -= 1
        return {j: w for j, w in paid_parts(vouchers, amount, top).items() if w or j in jobs}

    def _add_payer_batch(
        self,
        bid: int,
        jobs: list[bytes],
        amount: int,
        release_at: int,
        audit: tuple[bytes, int, int] | None,
        paid: dict[bytes, int] | None = None,
    ) -> None:
        """Map batch ``bid`` on this node's deposit onto its jobs, and audit it (audit.py) unless its executor is
        this node. ``paid``: what it pays each job (default: its voucher's amount to each of ``jobs``)."""
        if paid is None:
            paid = {j: v.amount for j in jobs if (v := self.book.issued.get(j)) is not None}
        self.batches[bid] = _Batch(jobs, amount, release_at, paying=True, audit=audit, paid=paid)
        for jid in jobs:
            self.state.setdefault(jid, {"pay": "voucher", "paid_wei": 0, "refunded_wei": 0}).update(
                {"state": "batched", "batch": bid}
            )
        if audit is None:
            return
        root, node, count = audit
        executor = self.link.account_of_index.get(node)
        if executor is not None and to_checksum_address(executor) != self.queue.me:
            self.audits.check(
                bid, to_checksum_address(executor), node, root, release_at, jobs, count, self.attested
            )

    async def audit(self) -> None:
        """Fetch, check and challenge the batches on this node's deposit whose root was not the one expected,
        as far as they are due (audit.py)."""
        self._forget_audits()
        if not self.audits.pending:
            return
        link = self.link

        async def fetch(node: int, bid: int) -> bytes | None:
            if self.fetcher is None:
                return None
            try:
                node_id = link.node_ids.get(node) or await link._read(link._node_id, node)
            except ChainError:
                return None
            return await self.fetcher(node_id, batch_tree_name(bid))

        async def chain_now() -> int:
            return int(await link._read(link.reader.chain.now))

        await self.audits.run(fetch, self.challenge, chain_now, self.attested)
        self._forget_audits()

    def _forget_audits(self) -> None:
        """The journaled audits of paid batches that ended (verified, blocked or given up) go from the journal."""
        ended = [bid for bid in self._audits_kept if bid not in self.audits.pending]
        if ended:
            self._audits_kept.difference_update(ended)
            self._write(lambda j: j.voucher_audits_forget(ended))

    def batch_tree(self, batch_id: int) -> bytes | None:
        """Executor: the leaves of ``batch_id`` (audit.py's format) while it is a pending batch of this node's, or
        one it finalized less than ``tree_keep_s`` ago (a payer's audit may come after the payment), else None
        (the runtime serves them under :func:`~.audit.batch_tree_name` to the payer's audit)."""
        b = self.batches.get(batch_id)
        if b is not None and not b.paying and b.tree is not None:
            return tree_to_bytes(b.tree)
        kept = self._paid_trees.get(batch_id)
        return kept[1] if kept is not None and kept[0] > time.monotonic() else None

    # ------------------------------------------------------------------ checkpoint (ChainLink's chain view)

    def steady(self) -> bool:
        """Whether what was restored after a restart is reconciled with the chain, and no settleBatch of unknown
        outcome waits for another try: until then the chain view's checkpoint stays where it was (a restarted
        executor may still need the events after it)."""
        return (
            self._resumed
            and not self._restored
            and not self._unmatched
            and not self._unsure
            and not any(self.orphans.values())
        )

    def view(self) -> dict[str, Any]:
        """What this mode derived from batch events that the journal does not hold: as payer, the last seq the
        chain settled per executor and the batches on its deposit not paid or voided yet."""
        return {
            "payer_seq": dict(self.payer_seq),
            "batches": {
                str(bid): [
                    [j.hex() for j in b.jobs],
                    str(b.amount),
                    b.release_at,
                    *([b.audit[0].hex(), b.audit[1], b.audit[2]] if b.audit is not None else []),
                    {j.hex(): str(w) for j, w in b.paid.items()},
                ]
                for bid, b in self.batches.items()
                if b.paying
            },
        }

    def parse_view(self, view: dict[str, Any]) -> Callable[[], None]:
        """Check :meth:`view`'s output (raises when it does not parse) and return what restores it."""
        seqs = {to_checksum_address(ex): int(seq) for ex, seq in view["payer_seq"].items()}
        batches = [
            (
                int(bid),
                [bytes.fromhex(j) for j in jobs],
                int(amount),
                int(release_at),
                # (root, node, count): audited again; absent from a checkpoint written before the audit
                (bytes.fromhex(rest[0]), int(rest[1]), int(rest[2])) if len(rest) >= 3 else None,
                # what it pays each job; absent from a checkpoint written before it (then: their vouchers' amounts)
                {bytes.fromhex(j): int(w) for j, w in rest[-1].items()}
                if rest and isinstance(rest[-1], dict)
                else None,
            )
            for bid, (jobs, amount, release_at, *rest) in view["batches"].items()
        ]

        def restore() -> None:
            self.payer_seq.update(seqs)
            for bid, jobs, amount, release_at, audit, paid in batches:
                if bid not in self.batches:
                    self._add_payer_batch(bid, jobs, amount, release_at, audit, paid)

        return restore

    def release(self, job_id: bytes) -> None:
        """Payer: a voucher job failed before any voucher was signed; its price returns to the deposit room."""
        self.ended(job_id)
        self.updates.append(ChainUpdate("job_refunded", job_id))

    def ended(self, job_id: bytes) -> None:
        """Payer: ``job_id`` ended here unpaid (refunded, failed, or forgotten unclosed: the agent calls this on
        those job events). Unless a voucher was signed for it, its price returns to the deposit room and its journal
        row goes. A signed one is final from now on (its batch may still come): it goes ``history_s`` later
        (:meth:`_prune`), unless this node is its executor too (that side says when it is final)."""
        if job_id not in self.prices or job_id in self.finals:
            return
        v = self.book.issued.get(job_id)
        if v is not None and to_checksum_address(v.executor) == self.queue.me:
            return
        now = time.time()
        self.finals.mark(job_id, now)
        if v is not None:
            self._write(lambda j: j.voucher_put(job_id, "payer", given_up=now))
            return
        price = self.prices.pop(job_id)
        self.room += price
        self.state.setdefault(job_id, {"pay": "voucher", "paid_wei": 0}).update(
            {"state": "refunded", "refunded_wei": price}
        )
        self._write(lambda j: j.voucher_forget([job_id], "payer"))

    async def challenge(self, batch_id: int, tree: ResultsTree, job_id: bytes, other: Attestation) -> str:
        """Void batch ``batch_id``: its leaf for ``job_id`` contradicts ``other``, an attestation its executor
        signed (carried by its gossip reveal). The batch's amount returns to the payer's deposit."""
        res = await self.link._run(self.link.market.challenge_batch, batch_id, tree, job_id, other)
        return res.tx_hash

    def drain(self) -> list[ChainUpdate]:
        """The job updates of the last poll (in the trio thread: the poller's journal writes are made here)."""
        self._flush()
        out, self.updates = self.updates, []
        return out

    def job(self, job_id: bytes) -> dict[str, Any] | None:
        st = self.state.get(job_id)
        return None if st is None else {"reason": "", "refunded_wei": 0, **st}
