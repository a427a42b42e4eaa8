"""The voucher payment mode through two ChainLinks (a payer origin and an executor) on one embedded chain.

What a user relies on: a voucher the executor cannot cash is refused at once with the reason (and nothing else
it holds is lost), results are settled in one batch per payer and paid the cumulative amount once the
challenge window passed, a batch that reverts is reported and retried rather than dropped, and a batch that
contradicts an attestation of its executor is voided.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import replace
from typing import Any

import pytest
import trio

from sandrun_p2p.agent.audit import parse_batch_tree_name
from sandrun_p2p.agent.chainlink import ChainLink
from sandrun_p2p.agent.vouchers import (
    VoucherBook,
    VoucherError,
    parse_voucher_name,
    voucher_from_bytes,
    voucher_to_bytes,
)
from sandrun_p2p.chain.crypto import ResultsTree, Voucher
from sandrun_p2p.protocol.events import SubmitTx
from sandrun_p2p.protocol.identity import NodeKey
from sandrun_p2p.protocol.jobspec import JobSpec, Manifest

pytestmark = pytest.mark.timeout(120)

PRICE = 10**15
PAYER_NODE = NodeKey.from_seed(b"\x01" * 32).node_id
EXEC_NODE = NodeKey.from_seed(b"\x02" * 32).node_id
#: A waiting batch's start that makes it due at once. Not 0.0: the queue's clock is time.monotonic(), which
#: counts from boot, so on a machine up for less than the batch age (3600 s in these pairs) 0.0 is not due.
LONG_AGO = -1e9


def h(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def spec(i: int, deadline: int) -> JobSpec:
    return JobSpec(
        code_cid="bafkqaaaaaaaa",
        manifest=Manifest("main.sh", "sh"),
        deadline=deadline,
        nonce=i.to_bytes(4, "big"),
        payment_wei=PRICE,
        pay="voucher",
    )


class Pair:
    """A payer (the jobs' origin) and an executor; the executor fetches vouchers by calling the payer."""

    def __init__(self, batch_jobs: int = 3) -> None:
        self.payer = ChainLink({"voucher_deposit_wei": 10 * PRICE})
        self.executor = ChainLink(
            {"account_index": 2, "voucher_batch_jobs": batch_jobs, "voucher_batch_age_s": 3600},
            shared=self.payer,
        )
        self.errors: list[str] = []
        self.executor.vouchers.on_error = self.errors.append
        self.executor.vouchers.fetcher = self._fetch
        self.forged: dict[bytes, bytes] = {}  # job -> the bytes the "origin" answers instead
        # job -> the root the executor attests in its gossip reveal (the payer keeps it when it serves the voucher)
        self.revealed: dict[bytes, bytes] = {}
        self.payer_errors: list[str] = []
        self.payer.vouchers.on_error = self.payer_errors.append
        self.payer.vouchers.fetcher = self._fetch_tree
        self.trees_asked: list[int] = []
        self.tree_answer: Any = None  # bytes the executor answers for its batch tree instead (None: its own)

    async def _fetch(self, origin: bytes, name: str) -> bytes | None:
        asked = parse_voucher_name(name)
        assert asked is not None and origin == PAYER_NODE and asked[1] == EXEC_NODE
        if asked[0] in self.forged:
            return self.forged[asked[0]]
        root = self.revealed.get(asked[0])
        att = None if root is None else self.executor.market.attest(asked[0], root)
        return await self.payer.vouchers.issue(asked[0], self.executor.market.account, att)

    async def _fetch_tree(self, node: bytes, name: str) -> bytes | None:
        """The payer's audit asks the executor for a batch's leaves (as the runtime serves them)."""
        bid = parse_batch_tree_name(name)
        assert bid is not None and node == EXEC_NODE
        self.trees_asked.append(bid)
        if self.tree_answer is not None:
            return self.tree_answer
        return self.executor.vouchers.batch_tree(bid)

    async def start(self) -> None:
        await self.payer.join(PAYER_NODE)
        await self.executor.join(EXEC_NODE)
        await self.payer.poll()
        await self.executor.poll()

    async def job(
        self, i: int, root: bytes | None = None, revealed: bytes | None = None
    ) -> tuple[bytes, str]:
        """Fund job ``i`` at the payer and hand its result to the executor; (job id, the executor's answer).
        ``revealed``: the root the executor attested on gossip, when not the one it queues for its batch."""
        s = spec(i, self.payer.chain.now() + 3000)
        await self.payer.fund_job(s, PAYER_NODE)
        self.revealed[s.job_id] = revealed or root or h(f"root{i}")
        args = {
            "root": root or h(f"root{i}"),
            "salt": h("salt"),
            "pay": "voucher",
            "origin": PAYER_NODE,
            "price": PRICE,
        }
        return s.job_id, await self.executor.submit(EXEC_NODE, SubmitTx("reveal", s.job_id, args))

    def earnings(self) -> int:
        return self.executor.market.node().earnings


def run(fn) -> None:
    trio.run(fn)


def test_batch_is_settled_then_paid_the_cumulative_amount() -> None:
    async def main() -> None:
        p = Pair(batch_jobs=3)
        await p.start()
        jobs = [(await p.job(i))[0] for i in range(3)]
        deposit_before = p.payer.market.deposit_of()[0]
        assert deposit_before == 10 * PRICE  # one deposit (a chunk of voucher_deposit_wei) for every job
        assert [p.executor.vouchers.state[j]["state"] for j in jobs] == ["batching"] * 3
        await p.executor.poll()  # three results: one settleBatch for all of them
        bids = {p.executor.vouchers.state[j]["batch"] for j in jobs}
        assert len(bids) == 1
        (bid,) = bids
        batch = p.payer.market.batch(bid)
        assert batch["amount"] == 3 * PRICE and batch["count"] == 3
        assert batch["results_root"] == ResultsTree([(j, h(f"root{i}")) for i, j in enumerate(jobs)]).root
        assert p.payer.market.deposit_of()[0] == deposit_before - 3 * PRICE
        await p.payer.poll()  # the payer maps the batch's seq range onto its vouchers
        assert {(await p.payer.job(j))["state"] for j in jobs} == {"batched"}
        before = p.earnings()
        p.payer.chain.advance(p.payer.market.params().challenge_window + 1)
        updates = await p.executor.poll()  # finalizeBatch once the challenge window passed
        assert sorted(u.job_id for u in updates if u.kind == "job_settled") == sorted(jobs)
        assert p.earnings() - before == 3 * PRICE
        settled = {u.job_id for u in await p.payer.poll() if u.kind == "job_settled"}
        assert settled == set(jobs)
        info = await p.payer.job(jobs[0])
        assert info["state"] == "settled" and info["paid_wei"] == PRICE
        assert p.errors == []

    run(main)


@pytest.mark.parametrize("case", ["bad signature", "wrong executor", "replayed seq", "over the deposit"])
def test_a_voucher_the_executor_cannot_cash_is_refused(case: str) -> None:
    async def main() -> None:
        p = Pair(batch_jobs=2)
        await p.start()
        first, _ = await p.job(0)  # a good voucher already held: it must survive the refusal
        s = spec(99, p.payer.chain.now() + 3000)
        await p.payer.fund_job(s, PAYER_NODE)
        me = p.executor.market.account
        if case == "bad signature":  # signed by the executor itself, claiming to come from the payer
            v = p.executor.market.sign_voucher(me, s.job_id, 2, PRICE, 2 * PRICE)
            forged = replace(v, client=p.payer.market.account)
        elif case == "wrong executor":
            forged = p.payer.market.sign_voucher(p.payer.market.account, s.job_id, 2, PRICE, 2 * PRICE)
        elif case == "replayed seq":  # the first job's seq again, for another job
            forged = p.payer.market.sign_voucher(me, s.job_id, 1, PRICE, 2 * PRICE)
        else:
            forged = p.payer.market.sign_voucher(me, s.job_id, 2, PRICE, 10**22)
        p.forged[s.job_id] = voucher_to_bytes(forged)
        args = {"root": h("r99"), "salt": h("salt"), "pay": "voucher", "origin": PAYER_NODE, "price": PRICE}
        with pytest.raises(VoucherError, match=case):
            await p.executor.submit(EXEC_NODE, SubmitTx("reveal", s.job_id, args))
        info = await p.executor.job(s.job_id)
        assert info["state"] == "unpaid" and case in info["reason"]
        # nothing lost: the good result is still queued and settles with the next one
        second, _ = await p.job(2)
        await p.executor.poll()
        bid = p.executor.vouchers.state[first]["batch"]
        assert p.executor.vouchers.state[second]["batch"] == bid
        assert (
            p.payer.market.batch(bid)["results_root"]
            == ResultsTree([(first, h("root0")), (second, h("root2"))]).root
        )

    run(main)


def deposit_emptied(p: Pair) -> None:
    """The payer withdraws its whole deposit (after the contract's delay)."""
    p.payer.market.request_deposit_withdrawal()
    p.payer.chain.advance(p.payer.market.params().deposit_delay + 1)
    p.payer.market.withdraw_deposit()


async def job_held_while_the_deposit_empties(p: Pair) -> bytes:
    """Run job 0, its result held by the executor while the payer withdraws its whole deposit; the job's id
    (its settleBatch will revert with NothingToPay)."""
    p.executor.vouchers.queue.max_jobs = 99
    jid, _ = await p.job(0)
    deposit_emptied(p)
    p.executor.vouchers.queue.max_jobs = 1
    return jid


def test_a_reverted_settle_batch_is_reported_and_retried_not_dropped() -> None:
    async def main() -> None:
        p = Pair(batch_jobs=1)
        await p.start()
        jid = await job_held_while_the_deposit_empties(p)
        await p.executor.poll()
        assert len(p.errors) == 1 and "NothingToPay" in p.errors[0] and "1/3" in p.errors[0]
        assert p.executor.vouchers.state[jid]["state"] == "batching"  # put back for a retry
        p.payer.market.deposit(2 * PRICE)  # the payer tops up: the retry goes through
        p.executor.vouchers.queue.pending[p.payer.market.account].since = LONG_AGO
        await p.executor.poll()
        assert len(p.errors) == 1
        assert p.executor.vouchers.state[jid]["state"] == "batched"

    run(main)


def test_a_batch_that_never_settles_leaves_its_jobs_unconfirmed_with_the_reason() -> None:
    """Given up after 3 tries, but not unpaid yet: a later batch of this payer may still pay them (see
    test_voucher_restart.py for what settles them and when they become unpaid)."""

    async def main() -> None:
        p = Pair(batch_jobs=1)
        await p.start()
        jid = await job_held_while_the_deposit_empties(p)
        for _ in range(3):
            for pend in p.executor.vouchers.queue.pending.values():
                pend.since = LONG_AGO
            await p.executor.poll()
        assert len(p.errors) == 3
        info = await p.executor.job(jid)
        assert info["state"] == "unconfirmed" and "NothingToPay" in info["reason"]

    run(main)


async def short_batch(p: Pair, deposit: int = PRICE) -> list[bytes]:
    """Two results whose batch is mined while the payer's deposit holds only ``deposit`` (less than their two
    prices: it pays the first in full, the second in part or not at all), and whose challenge window then passes
    (the next polls see it paid). Returns the two jobs."""
    p.executor.vouchers.queue.max_jobs = 99  # (held until the deposit is short)
    jobs = [(await p.job(i))[0] for i in range(2)]
    deposit_emptied(p)
    p.payer.market.deposit(deposit)
    p.executor.vouchers.queue.max_jobs = 2
    await p.executor.poll()  # mined short
    assert p.payer.market.batch(1)["amount"] == deposit and p.errors == []
    p.payer.chain.advance(p.payer.market.params().challenge_window + 1)
    return jobs


def test_a_job_a_short_batch_left_owing_is_settled_only_once_the_rest_is_paid() -> None:
    """A batch is mined with the payer's deposit one price short: once it is paid, its first job is settled but
    the second is shown ``owed`` (the rest of its price, with the reason) on both sides, and not reported settled
    to the core (the job list). The payer's next batch pays the rest with the next job's price: then the second is
    settled too, paid its price in full. Before, the second showed ``settled`` as soon as the short batch was
    paid, paid nothing; and the executor never counted what the next batch paid for it."""

    async def main() -> None:
        p = Pair(batch_jobs=2)
        await p.start()
        jobs = await short_batch(p)  # it pays the first job only
        for side in (p.executor, p.payer):
            settled = {u.job_id for u in await side.poll() if u.kind == "job_settled"}
            first, second = [await side.job(j) for j in jobs]
            assert settled == {jobs[0]} and first["state"] == "settled" and first["paid_wei"] == PRICE
            assert second["state"] == "owed" and second["paid_wei"] == 0 and second["owed_wei"] == PRICE
            assert "short" in second["reason"]
        p.payer.vouchers.room = 0  # (the payer's next job deposits a chunk again)
        third, _ = await p.job(2)
        p.executor.vouchers.queue.max_jobs = 1
        await p.executor.poll()  # its voucher's cumulative amount pays the second job's price too
        assert p.payer.market.batch(2)["amount"] == 2 * PRICE
        p.payer.chain.advance(p.payer.market.params().challenge_window + 1)
        for side in (p.executor, p.payer):
            settled = {u.job_id for u in await side.poll() if u.kind == "job_settled"}
            assert settled == {jobs[1], third}
            for jid in (*jobs, third):
                info = await side.job(jid)
                assert info["state"] == "settled" and info["paid_wei"] == PRICE and not info.get("owed_wei")
        assert p.earnings() == 3 * PRICE and p.errors == []

    run(main)


def test_an_owed_job_is_topped_up_once_the_payers_deposit_covers_it() -> None:
    """A short batch left the second job owing, and its payer sends no more jobs but adds to its deposit: the
    executor, checking that payer's deposit once per ``voucher_top_up_s`` (not on every poll), settles the owed
    voucher again (a top-up: count 0, the rest of the price), so both jobs end ``settled``, paid in full on both
    sides, and the executor earns both prices. Before, the owed part waited for that payer's next job, for ever."""

    async def main() -> None:
        p = Pair(batch_jobs=2)
        await p.start()
        jobs = await short_batch(p)
        for side in (p.executor, p.payer):
            await side.poll()  # the short batch is paid: the second job is owed
        assert (await p.executor.job(jobs[1]))["state"] == "owed"
        p.payer.market.deposit(PRICE)
        await p.executor.poll()  # checked right after the short batch: not again before the interval
        assert p.payer.market._call("batchCount") == 1
        topping = getattr(p.executor.vouchers, "_top_up_at", {})  # payer -> when its deposit is checked next
        for payer in topping:
            topping[payer] = 0.0  # (the interval passed)
        await p.executor.poll()  # the top-up
        top_up = p.payer.market.batch(2)
        assert (top_up["count"], top_up["amount"]) == (0, PRICE)
        p.payer.chain.advance(p.payer.market.params().challenge_window + 1)
        for side in (p.executor, p.payer):
            settled = {u.job_id for u in await side.poll() if u.kind == "job_settled"}
            assert settled == {jobs[1]}
            for jid in jobs:
                info = await side.job(jid)
                assert info["state"] == "settled" and info["paid_wei"] == PRICE and not info.get("owed_wei")
        assert p.earnings() == 2 * PRICE and p.errors == [] and p.payer_errors == []
        await p.executor.poll()  # nothing is owed any more: no other top-up
        assert p.payer.market._call("batchCount") == 2

    run(main)


def test_a_deposit_that_covers_part_of_what_is_owed_is_topped_up_in_parts() -> None:
    """The payer adds only a quarter of the owed price: the executor's check tops up that quarter (the job stays
    ``owed`` the rest, on both sides), and its next check, once the payer added the rest, settles the job in full."""

    async def main() -> None:
        p = Pair(batch_jobs=2)
        await p.start()
        jobs = await short_batch(p)
        quarter = PRICE // 4
        window = p.payer.market.params().challenge_window + 1
        for added, paid in ((quarter, quarter), (PRICE - quarter, PRICE)):
            p.payer.market.deposit(added)
            p.executor.vouchers._top_up_at.clear()  # (the interval passed)
            await p.executor.poll()  # a top-up of what the deposit holds
            p.payer.chain.advance(window)
            for side in (p.executor, p.payer):
                await side.poll()
                info = await side.job(jobs[1])
                assert info["paid_wei"] == paid and info["state"] == ("owed" if paid < PRICE else "settled")
        assert p.payer.market._call("batchCount") == 3 and p.earnings() == 2 * PRICE and p.errors == []

    run(main)


def test_an_equivocating_executors_batch_is_challenged_and_voided() -> None:
    async def main() -> None:
        p = Pair(batch_jobs=2)
        await p.start()
        # the executor revealed (and attested) one root on gossip but puts another in its batch
        jid, _ = await p.job(0, root=h("what it put in the batch"))
        gossip = p.executor.market.attest(jid, h("what it revealed on gossip"))
        await p.job(1)
        deposit_before = p.payer.market.deposit_of()[0]
        await p.executor.poll()
        bid = p.executor.vouchers.state[jid]["batch"]
        tree = p.executor.vouchers.batches[bid].tree  # the batch's leaves, as the executor serves them
        assert tree is not None
        await p.payer.vouchers.challenge(bid, tree, jid, gossip)
        assert p.payer.market.batch(bid)["state"] == 3  # voided
        assert p.payer.market.deposit_of()[0] == deposit_before
        await p.executor.poll()
        assert p.executor.vouchers.state[jid]["state"] == "voided"
        p.payer.chain.advance(p.payer.market.params().challenge_window + 1)
        assert not [u for u in await p.executor.poll() if u.kind == "job_settled"]

    run(main)


def test_a_voucher_job_is_only_for_k_1() -> None:
    with pytest.raises(Exception, match="redundancy 1 only"):
        JobSpec.from_dict({**spec(0, 10**10).to_dict(), "redundancy": 2, "quorum": 2})
    with pytest.raises(VoucherError):
        from sandrun_p2p.agent.vouchers import voucher_from_bytes

        voucher_from_bytes(b"{}")


def test_vouchers_signed_at_once_for_one_executor_get_distinct_seqs() -> None:
    """The payer's chain calls run in several worker threads at once (``max_inflight_txs``, 8 on an RPC
    chain): two executors' fetches arriving together must not both be numbered with the next seq (the executor
    would refuse one as replayed and the job would stay unpaid)."""

    async def main() -> None:
        p = Pair(batch_jobs=3)
        await p.start()
        p.payer._lock = trio.CapacityLimiter(8)  # as on an RPC chain
        specs = [spec(i, p.payer.chain.now() + 3000) for i in range(3)]
        for s in specs:
            await p.payer.fund_job(s, PAYER_NODE)
        executor = p.executor.market.account
        await p.payer.vouchers.issue(specs[0].job_id, executor)  # opens the channel (a chain read)
        real = p.payer.market.sign_voucher
        inside, second = [0], threading.Event()

        def sign(*args):
            inside[0] += 1
            if inside[0] == 1:
                second.wait(timeout=1.0)  # a second signer while this one holds its seq: the bug
            else:
                second.set()
            return real(*args)

        p.payer.market.sign_voucher = sign
        out: dict[bytes, bytes | None] = {}

        async def issue(jid: bytes) -> None:
            out[jid] = await p.payer.vouchers.issue(jid, executor)

        async with trio.open_nursery() as n:
            for s in specs[1:]:
                n.start_soon(issue, s.job_id)
        seqs = sorted(voucher_from_bytes(v).seq for v in out.values() if v)
        assert seqs == [2, 3]

    run(main)


def test_poll_in_says_when_a_batch_comes_of_age_or_can_be_paid() -> None:
    """The runtime polls when a waiting batch comes of age or an own batch reaches its release time, not up to
    a whole ``chain_poll_s`` later (a voucher job's settlement waits for both)."""

    async def main() -> None:
        p = Pair(batch_jobs=2)
        p.executor.vouchers.queue.max_age = 30.0
        await p.start()
        assert p.executor.poll_in() is None  # nothing waits
        await p.job(0)
        assert 29.0 < p.executor.poll_in() <= 30.0  # the batch comes of age in 30 s
        await p.job(1)
        await p.executor.poll()  # two results: settled at once
        (batch,) = p.executor.vouchers.batches.values()
        left = batch.release_at - time.time()
        wake = p.executor.poll_in()
        assert (wake is None) if left <= 0 else (abs(wake - left) < 1.0)

    run(main)


class NoScan(dict):
    """Vouchers that may be looked up by job but not listed."""

    def __iter__(self) -> Any:
        raise AssertionError("every voucher ever signed was scanned")

    keys = values = items = __iter__  # type: ignore[assignment]


def test_a_batch_is_mapped_without_a_scan_of_every_voucher_signed() -> None:
    """The payer maps each batch settled on its deposit onto its vouchers by executor and seq: before, every
    batch event scanned every voucher the node ever signed."""

    async def main() -> None:
        p = Pair(batch_jobs=2)
        await p.start()
        book = p.payer.vouchers.book
        jobs = [(await p.job(i))[0] for i in range(2)]
        book.issued = NoScan(book.issued)
        await p.executor.poll()
        await p.payer.poll()
        ((bid, batch),) = p.payer.vouchers.batches.items()
        assert batch.jobs == jobs and (await p.payer.job(jobs[0]))["batch"] == bid

    run(main)


def test_the_book_finds_a_range_of_seqs_and_keeps_numbering_after_what_it_forgot() -> None:
    """A batch's seq range costs the range (or the executor's vouchers); a voucher forgotten is out of the index,
    and only the highest of an executor says its row must stay for the numbering."""
    ex, other = "0x" + "22" * 20, "0x" + "33" * 20
    book = VoucherBook()
    book.open_channel(ex, 0, 0)
    book.open_channel(other, 0, 0)
    signed = {}
    for seq in range(1, 101):
        for who in (ex, other):
            v = Voucher("0x" + "11" * 20, who, bytes([seq]) + who.encode()[-31:], seq, 5, 5 * seq, b"")
            book.record(v)
            signed[(who, seq)] = v.job_id
    assert book.jobs_between(ex, 10, 13) == [signed[(ex, s)] for s in (11, 12, 13)]
    assert book.jobs_between(ex, 95, 10**9) == [signed[(ex, s)] for s in range(96, 101)]
    assert book.forget(signed[(ex, 12)]) is None  # not the highest: its row may go
    assert book.jobs_between(ex, 10, 13) == [signed[(ex, s)] for s in (11, 13)]
    assert book.forget(signed[(ex, 100)]) == ex  # the highest: its row numbers the next after a restart
    restarted = VoucherBook()  # only the highest voucher's row is left: numbering goes on after it
    restarted.restore(Voucher("0x" + "11" * 20, ex, signed[(ex, 100)], 100, 5, 500, b""))
    restarted.forget(signed[(ex, 100)])
    restarted.open_channel(ex, 3, 15)
    assert restarted.next_terms(ex, b"\x00" * 32, 5) == (101, 505)
