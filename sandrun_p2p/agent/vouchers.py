"""Bookkeeping of the voucher payment mode (``spec.pay = "voucher"``, k = 1), both sides, without I/O.

* The payer (the job's origin, paying from its deposit): :class:`VoucherBook` numbers the vouchers it signs
  per executor (``seq`` + 1 and ``cumulative`` + the job's price per job; one voucher per job, signed once).
* The executor: :class:`BatchQueue` checks each voucher it fetched before it counts on it (signature of the
  payer, this executor, the job, a sequence number not used or settled before, the payer's deposit), keeps the
  (job_id, trace_root) results per payer, and says when a batch is due (``max_jobs`` results, or the oldest
  waiting ``max_age`` seconds). A batch settles with the payer's highest voucher (cumulative: it covers the
  others) and a results tree of its jobs in ``seq`` order.

Both are rebuilt after a restart from the agent's journal (``restore``; see voucherlink.py): the payer's book
numbers after the later of the chain's channel and the vouchers it signed, and the executor's queue takes its
held vouchers back.

Vouchers travel as canonical JSON (:func:`voucher_to_bytes`) over the direct fetch stream: the executor asks
the origin for ``voucher/<job id hex>/<executor node id hex>``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from eth_utils import to_checksum_address

from ..chain.crypto import ResultsTree, Voucher

VOUCHER_PREFIX = "voucher/"


class VoucherError(ValueError):
    """A voucher this executor refuses (the message says why); nothing was queued."""


def voucher_name(job_id: bytes, executor_node: bytes) -> str:
    """The fetch name under which a job's origin serves the voucher for ``executor_node``."""
    return f"{VOUCHER_PREFIX}{job_id.hex()}/{executor_node.hex()}"


def parse_voucher_name(name: str) -> tuple[bytes, bytes] | None:
    """(job id, executor node id) of a voucher fetch name, or None when ``name`` is not one."""
    if not name.startswith(VOUCHER_PREFIX):
        return None
    parts = name[len(VOUCHER_PREFIX) :].split("/")
    try:
        jid, node = (bytes.fromhex(p) for p in parts)
    except ValueError:
        return None
    return (jid, node) if len(jid) == 32 and len(node) == 32 else None


def voucher_to_bytes(v: Voucher) -> bytes:
    d = {
        "client": v.client,
        "executor": v.executor,
        "job_id": v.job_id.hex(),
        "seq": v.seq,
        "amount": str(v.amount),
        "cumulative": str(v.cumulative),
        "signature": v.signature.hex(),
    }
    return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()


def voucher_from_bytes(data: bytes) -> Voucher:
    try:
        d = json.loads(data)
        return Voucher(
            to_checksum_address(d["client"]),
            to_checksum_address(d["executor"]),
            bytes.fromhex(d["job_id"]),
            int(d["seq"]),
            int(d["amount"]),
            int(d["cumulative"]),
            bytes.fromhex(d["signature"]),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise VoucherError(f"malformed voucher: {e}") from None


# ----------------------------------------------------------------------------- payer side


@dataclass
class _Channel:
    seq: int
    cumulative: int


class VoucherBook:
    """The vouchers a payer signed: per executor the last (seq, cumulative), per job the voucher (indexed by
    executor and seq), until the job is forgotten (:meth:`forget`)."""

    def __init__(self) -> None:
        self.channels: dict[str, _Channel] = {}
        self.issued: dict[bytes, Voucher] = {}
        self.by_seq: dict[str, dict[int, bytes]] = {}  # executor -> seq -> job, of the vouchers in ``issued``
        # executor -> (seq, cumulative) of the highest voucher forgotten: numbering goes on after it
        self.floor: dict[str, tuple[int, int]] = {}

    def has_channel(self, executor: str) -> bool:
        return to_checksum_address(executor) in self.channels

    def executors(self) -> set[str]:
        """Every executor this book numbers vouchers for."""
        return set(self.by_seq) | set(self.channels) | set(self.floor)

    def open_channel(self, executor: str, settled_seq: int, settled_paid: int) -> None:
        """Start numbering after what the chain already settled or this book already signed (restored from the
        journal), whichever is later: a restarted payer must not reuse numbers. Where the two disagree on a seq
        the chain wins; at the same seq the higher cumulative (a batch short of deposit settled less than its
        voucher promised, and the next voucher still owes the rest)."""
        executor = to_checksum_address(executor)
        if executor in self.channels:
            return
        last = max((settled_seq, settled_paid), self.floor.get(executor, (0, 0)))
        for jid in list(self.by_seq.get(executor, {}).values()):
            v = self.issued[jid]
            last = max(last, (v.seq, v.cumulative))
        self.channels[executor] = _Channel(*last)

    def _add(self, v: Voucher) -> None:
        self.issued[v.job_id] = v
        self.by_seq.setdefault(to_checksum_address(v.executor), {})[v.seq] = v.job_id

    def restore(self, v: Voucher) -> None:
        """A voucher signed before a restart (from the journal): served again as is for its job."""
        self._add(v)

    def next_terms(self, executor: str, job_id: bytes, amount: int) -> tuple[int, int] | Voucher:
        """(seq, cumulative) of the voucher to sign for ``job_id``, or the voucher already signed for it."""
        done = self.issued.get(job_id)
        if done is not None:
            return done
        ch = self.channels[to_checksum_address(executor)]
        return ch.seq + 1, ch.cumulative + amount

    def record(self, v: Voucher) -> None:
        ch = self.channels[to_checksum_address(v.executor)]
        ch.seq, ch.cumulative = v.seq, v.cumulative
        self._add(v)

    def jobs_between(self, executor: str, first: int, last: int) -> list[bytes]:
        """The jobs of the vouchers to ``executor`` with ``first < seq <= last``, in seq order (a batch's range;
        the cost is that of the range or of the vouchers held for ``executor``, whichever is smaller)."""
        held = self.by_seq.get(to_checksum_address(executor), {})
        if last - first <= len(held):
            return [jid for s in range(first + 1, last + 1) if (jid := held.get(s)) is not None]
        return [jid for s, jid in sorted(list(held.items())) if first < s <= last]

    def forget(self, job_id: bytes) -> str | None:
        """Drop ``job_id``'s voucher. Its executor when it is the highest voucher this book knows for it (its journal
        row then keeps the numbering after a restart), else None."""
        v = self.issued.pop(job_id, None)
        if v is None:
            return None
        executor = to_checksum_address(v.executor)
        held = self.by_seq.get(executor, {})  # (kept when empty: issue() may add to it from a worker thread)
        held.pop(v.seq, None)
        ch = self.channels.get(executor)
        top = max([v.seq, *held, self.floor.get(executor, (0, 0))[0], ch.seq if ch else 0])
        self.floor[executor] = max(self.floor.get(executor, (0, 0)), (v.seq, v.cumulative))
        return executor if v.seq == top else None

    def outstanding(self, settled: dict[str, int]) -> int:
        """Wei promised by vouchers beyond what the chain settled (``settled``: executor -> cumulative paid)."""
        return sum(max(0, ch.cumulative - settled.get(ex, 0)) for ex, ch in self.channels.items())


# ----------------------------------------------------------------------------- executor side


@dataclass
class Pending:
    """Results of one payer waiting for a batch: seq -> (job id, trace root, voucher)."""

    since: float
    items: dict[int, tuple[bytes, bytes, Voucher]] = field(default_factory=dict)


class BatchQueue:
    """An executor's results paid by vouchers, per payer, until they are settled in a batch."""

    def __init__(
        self, me: str, chain_id: int, contract: str, max_jobs: int = 32, max_age: float = 2.0
    ) -> None:
        self.me = to_checksum_address(me)
        self.chain_id = chain_id
        self.contract = contract
        self.max_jobs = max_jobs
        self.max_age = max_age
        self.pending: dict[str, Pending] = {}
        self.used: dict[tuple[str, int], bytes] = {}  # (payer, seq) -> job: a seq pays for one job only
        self._used_by: dict[bytes, tuple[str, int]] = {}  # job -> its key in ``used`` (forget())

    def check(
        self,
        v: Voucher,
        payer: str,
        job_id: bytes,
        price: int,
        settled_seq: int,
        settled_paid: int,
        deposit: int,
    ) -> None:
        """Raise :class:`VoucherError` unless ``v`` pays this executor ``price`` for ``job_id`` from ``payer``
        (``settled_*``: the chain's channel; ``deposit``: the payer's balance, which must cover what it owes)."""
        payer = to_checksum_address(payer)
        if to_checksum_address(v.client) != payer:
            raise VoucherError(f"voucher is from {v.client}, the job's payer is {payer}")
        if not v.is_valid(self.chain_id, self.contract):
            raise VoucherError("voucher signature is not the payer's (bad signature)")
        if to_checksum_address(v.executor) != self.me:
            raise VoucherError(f"wrong executor: voucher names {v.executor}, not this node ({self.me})")
        if v.job_id != job_id:
            raise VoucherError(f"voucher is for job {v.job_id.hex()}, not {job_id.hex()}")
        if v.amount < price:
            raise VoucherError(f"voucher pays {v.amount} wei, the job's price is {price}")
        prior = self.used.get((payer, v.seq))
        if v.seq <= settled_seq or (prior is not None and prior != job_id):
            raise VoucherError(f"replayed seq: voucher seq {v.seq} already pays another job or was settled")
        owed = v.cumulative - settled_paid
        if owed > deposit:
            raise VoucherError(f"voucher over the deposit: {owed} wei owed, payer's deposit holds {deposit}")
        held = self.pending.get(payer)
        if held is not None:
            for s, (_, _, other) in held.items.items():
                if (s < v.seq and other.cumulative >= v.cumulative) or (
                    s > v.seq and other.cumulative <= v.cumulative
                ):
                    raise VoucherError(f"voucher seq {v.seq} is out of order with held seq {s}")

    def add(self, v: Voucher, payer: str, job_id: bytes, trace_root: bytes, now: float) -> None:
        payer = to_checksum_address(payer)
        p = self.pending.setdefault(payer, Pending(now))
        if not p.items:
            p.since = now
        p.items[v.seq] = (job_id, trace_root, v)
        self.mark_used(payer, v.seq, job_id)

    def mark_used(self, payer: str, seq: int, job_id: bytes) -> None:
        """Remember that ``payer``'s ``seq`` pays for ``job_id`` (no other job may take it)."""
        key = (to_checksum_address(payer), seq)
        self.used[key] = job_id
        self._used_by[job_id] = key

    def forget(self, job_id: bytes) -> None:
        """Drop what is remembered of ``job_id``'s seq (its job is final: its seq settled, or unpaid for good)."""
        key = self._used_by.pop(job_id, None)
        if key is not None and self.used.get(key) == job_id:
            del self.used[key]

    def due(self, now: float) -> list[str]:
        return [
            payer
            for payer, p in self.pending.items()
            if p.items and (len(p.items) >= self.max_jobs or now - p.since >= self.max_age)
        ]

    def next_due(self) -> float | None:
        starts = [p.since for p in self.pending.values() if p.items]
        return min(starts) + self.max_age if starts else None

    def take(self, payer: str) -> Pending:
        """Remove and return ``payer``'s waiting results (see :func:`batch_of`)."""
        return self.pending.pop(to_checksum_address(payer))

    def restore(
        self, v: Voucher, payer: str, job_id: bytes, trace_root: bytes, batch: int | None, now: float
    ) -> None:
        """A voucher held before a restart (from the journal): queued again (it has waited: due at once), or
        only remembered as used when a batch already settled it."""
        if batch is None:
            self.add(v, payer, job_id, trace_root, now - self.max_age)
        else:
            self.mark_used(payer, v.seq, job_id)

    def settled_by_chain(self, payer: str, settled_seq: int) -> Pending | None:
        """Remove and return ``payer``'s waiting results the chain already settled (seq <= ``settled_seq``): a
        batch sent before a restart whose receipt the journal missed. They must not be sent again (it would
        revert); :meth:`take_batch` gives them back when the batch's event names them."""
        payer = to_checksum_address(payer)
        p = self.pending.get(payer)
        if p is None:
            return None
        gone = {s: it for s, it in p.items.items() if s <= settled_seq}
        if not gone:
            return None
        for s in gone:
            del p.items[s]
        if not p.items:
            del self.pending[payer]
        return Pending(p.since, gone)

    def put_back(self, payer: str, p: Pending) -> None:
        """Return a batch that could not be settled (retried once it is due again)."""
        held = self.pending.setdefault(to_checksum_address(payer), Pending(p.since))
        held.items.update(p.items)
        held.since = min(held.since, p.since)


class Finals:
    """Jobs final here (paid, voided, refunded, unpaid for good, or ended unpaid), with when they became so (wall
    clock), in that order: what is kept of them goes once the node's retention (``history_s``) has passed."""

    def __init__(self) -> None:
        self.at: dict[bytes, float] = {}

    def mark(self, job_id: bytes, at: float) -> None:
        self.at.pop(job_id, None)  # (to the end: the order stays that of the times)
        self.at[job_id] = at

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.at

    def due(self, cutoff: float) -> list[bytes]:
        """Remove and return the jobs final before ``cutoff`` (the oldest first; stops at the first later one)."""
        out = []
        for jid, at in self.at.items():
            if at >= cutoff:
                break
            out.append(jid)
        for jid in out:
            del self.at[jid]
        return out


def batch_of(p: Pending) -> tuple[Voucher, ResultsTree, list[bytes]]:
    """The highest voucher (it covers the others), the results tree in seq order, and the jobs."""
    seqs = sorted(p.items)
    leaves = [(p.items[s][0], p.items[s][1]) for s in seqs]
    return p.items[seqs[-1]][2], ResultsTree(leaves), [jid for jid, _ in leaves]


def paid_parts(vouchers: Iterable[Voucher], amount: int, top: int) -> dict[bytes, int]:
    """What a batch pays each job of ``vouchers`` (wei, 0 for none): the part of the cumulative range its voucher
    added, ``(cumulative - amount, cumulative]``, that lies in the range the batch paid, ``(top - amount, top]``
    (``amount``: the batch's; ``top``: the cumulative of the voucher it settled with, less its shortfall). A batch
    pays every seq it covers in full unless its deposit was short; a top-up (the same seq again, after a short
    batch) pays the rest of the jobs the short one left owing."""
    low = top - amount
    return {v.job_id: max(0, min(top, v.cumulative) - max(low, v.cumulative - v.amount)) for v in vouchers}


def prefix_run(
    items: dict[int, tuple[bytes, bytes, Voucher]], results_root: bytes, start: int
) -> list[int] | None:
    """The seqs, ascending, of the shortest run of ``items`` (seq -> item) from ``start`` on whose results tree
    has ``results_root`` (a batch's leaves are every result waiting when it was sent, in seq order), or None."""
    seqs = sorted(s for s in items if s >= start)
    for n in range(1, len(seqs) + 1):
        if ResultsTree([(items[s][0], items[s][1]) for s in seqs[:n]]).root == results_root:
            return seqs[:n]
    return None
