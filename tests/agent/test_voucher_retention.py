"""A long-running node's voucher bookkeeping stays bounded: what it keeps of a voucher job that is final (paid,
voided, refunded, unpaid, or ended here unpaid) goes ``history_s`` after it became so, in memory and in the
journal, but for the payer's highest voucher to each executor (the numbering after a restart).

Each test runs with the voucher mode alone attached to the journal and with the whole ChainLink (its
checkpoint), as in test_voucher_restart.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from sandrun_p2p.agent.vouchers import voucher_from_bytes

from .test_voucher_restart import (  # noqa: F401 (chain_view: both modes)
    JournaledPair,
    SelfPair,
    chain_view,
    journaled_pair_owing,
)
from .test_vouchers import PRICE

pytestmark = pytest.mark.timeout(120)


def run(fn) -> None:
    trio.run(fn)


def sizes(p: JournaledPair) -> dict[str, int]:
    """How many entries each side keeps of its voucher jobs, in memory and in its journal."""
    pv, ev = p.payer.vouchers, p.executor.vouchers
    return {
        "payer state": len(pv.state),
        "payer vouchers": len(pv.book.issued),
        "payer prices": len(pv.prices),
        "payer batches": len(pv.batches),
        "payer rows": len(p.payer_journal.voucher_rows("payer")),
        "executor state": len(ev.state),
        "executor seqs": len(ev.queue.used),
        "executor batches": len(ev.batches),
        "executor rows": len(p.executor_journal.voucher_rows("executor")),
    }


def test_settled_voucher_jobs_are_forgotten_history_s_after_they_were_paid(tmp_path: Path) -> None:
    """Before, every entry stayed for good (the executor's paid batches too); now they stay for ``history_s``
    (reported meanwhile), then go. Numbering goes on after them, also across restarts of both sides."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=2)
        await p.start()
        jobs: list[bytes] = []
        for r in range(4):
            jobs += [(await p.job(2 * r + i))[0] for i in range(2)]
            await p.executor.poll()  # settleBatch
            await p.payer.poll()  # maps it onto its vouchers
            settled, earned = await p.paid_out()
            assert len(settled) == 2 and earned == 2 * PRICE
            await p.payer.poll()  # BatchPaid
        assert {(await p.payer.job(j))["state"] for j in jobs} == {"settled"}  # reported within history_s
        assert sizes(p)["payer state"] == sizes(p)["executor state"] == 8
        p.payer.history_s = p.executor.history_s = 0.0
        await p.payer.poll()
        await p.executor.poll()
        assert set(sizes(p).values()) == {0}, sizes(p)
        assert not any(p.payer.vouchers.book.by_seq.values())
        later, answer = await p.job(8)
        assert "seq 9" in answer
        for journal in (p.payer_journal, p.executor_journal):
            journal.commit()  # (the agent commits once a turn)
        await p.restart_payer()
        await p.restart_executor()
        await p.executor.poll()  # the result it held is settled (restored: due at once)
        more = [await p.job(i) for i in (9, 10)]
        assert ["seq 10" in more[0][1], "seq 11" in more[1][1]] == [True, True]
        await p.executor.poll()
        settled, earned = await p.paid_out()
        assert settled == {later, *(jid for jid, _ in more)} and earned == 3 * PRICE
        assert p.errors == []

    run(main)


def test_vouchers_never_settled_keep_only_the_row_that_numbers_the_next(tmp_path: Path) -> None:
    """The payer's jobs ended here unpaid (the protocol core forgot them unclosed): their executor has not settled
    their vouchers. Before, each kept its journal row for good; now, ``history_s`` later, only the row of the
    highest voucher to that executor stays (the chain's channel knows none of them). A restarted payer numbers its
    next voucher after it, and the restarted executor still settles every result it held (the cumulative
    voucher pays them all)."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=99)  # the executor holds its results (no batch yet)
        await p.start()
        jobs = [(await p.job(i))[0] for i in range(6)]
        for jid in jobs:
            p.payer.vouchers.ended(jid)  # as the agent does when the core forgets a job
        await p.payer.poll()
        assert sizes(p)["payer rows"] == 6  # within history_s: kept
        p.payer.history_s = 0.0
        await p.payer.poll()
        p.payer_journal.commit()
        rows = p.payer_journal.voucher_rows("payer")
        assert [voucher_from_bytes(r["voucher"]).seq for r in rows] == [6]
        assert sizes(p)["payer vouchers"] == sizes(p)["payer state"] == sizes(p)["payer prices"] == 0
        await p.restart_payer()
        nxt, answer = await p.job(6)
        assert "seq 7" in answer and p.errors == []
        await p.restart_executor()
        await p.executor.poll()  # its restored results are due at once: one batch of the seven
        settled, earned = await p.paid_out()
        assert settled == {*jobs, nxt} and earned == 7 * PRICE
        await p.payer.poll()
        p.payer_journal.commit()
        assert p.payer_journal.voucher_rows("payer") == []  # paid: the chain's channel numbers now
        assert p.errors == []

    run(main)


def test_a_kept_row_goes_once_a_later_voucher_numbers_after_it(tmp_path: Path) -> None:
    """The row kept for the numbering is dropped as soon as a higher voucher to that executor is journaled, and
    when a later job of that executor ends unpaid the row of the new highest replaces it: one row per executor."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=99)
        p.payer.history_s = 0.0
        await p.start()
        first, _ = await p.job(0)
        p.payer.vouchers.ended(first)
        await p.payer.poll()
        assert [r["job_id"] for r in p.payer_journal.voucher_rows("payer")] == [first]
        second, answer = await p.job(1)
        assert "seq 2" in answer
        assert [r["job_id"] for r in p.payer_journal.voucher_rows("payer")] == [second]
        p.payer.vouchers.ended(second)
        third, _ = await p.job(2)
        p.payer.vouchers.ended(third)
        await p.payer.poll()
        assert [r["job_id"] for r in p.payer_journal.voucher_rows("payer")] == [third]

    run(main)


def test_a_node_paying_itself_keeps_a_job_its_executor_side_still_holds(tmp_path: Path) -> None:
    """The core forgets a voucher job this node pays and runs itself while its result still waits for a batch:
    the executor side says when it is final (paid), not the payer side's ending."""

    async def main() -> None:
        p = SelfPair(tmp_path)
        p.payer.history_s = 0.0
        await p.start()
        first, _ = await p.job(0)
        p.payer.vouchers.ended(first)
        await p.payer.poll()
        assert p.payer.vouchers.job(first)["state"] == "batching" and p.payer.vouchers.queue.used
        second, _ = await p.job(1)
        await p.payer.poll()  # the batch of both
        settled, earned = await p.paid_out()
        assert settled == {first, second} and earned == 2 * PRICE
        await p.payer.poll()
        assert set(sizes(p).values()) == {0}, sizes(p)

    run(main)


def test_a_batch_paying_vouchers_the_payer_forgot_reports_each_job_its_own_price(tmp_path: Path) -> None:
    """The payer forgot the vouchers of two jobs that ended here unpaid (``history_s`` after they ended); the
    executor then settles them with a third in one batch (the cumulative voucher pays all three). The payer's
    status reports the job it still knows paid its own price. Before, it shared the batch's amount over the jobs it
    still knew: that job showed all three prices."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=3)
        await p.start()
        jobs = [(await p.job(i))[0] for i in range(3)]
        await p.executor.poll()  # a batch of three
        ended = [(await p.job(i))[0] for i in range(3, 5)]  # held for the next batch
        for jid in ended:
            p.payer.vouchers.ended(jid)
        settled, earned = await p.paid_out()
        assert settled == set(jobs) and earned == 3 * PRICE
        await p.payer.poll()
        assert [(await p.payer.job(j))["paid_wei"] for j in jobs] == [PRICE] * 3
        p.payer.history_s = 0.0
        await p.payer.poll()  # the ended jobs' vouchers are forgotten (and the settled jobs)
        assert not set(ended) & set(p.payer.vouchers.book.issued)
        p.payer.history_s = 3600.0
        last, _ = await p.job(5)
        await p.executor.poll()  # one batch of the three: seqs 4-6
        settled, earned = await p.paid_out()
        assert settled == {*ended, last} and earned == 3 * PRICE
        await p.payer.poll()
        info = await p.payer.job(last)
        assert info["state"] == "settled" and info["paid_wei"] == PRICE
        assert p.errors == []

    run(main)


def test_an_owed_job_is_given_up_history_s_after_its_batch_was_paid_short(tmp_path: Path) -> None:
    """A job a short batch left owing keeps its journal row on both sides (restored ``owed`` after a restart), but
    not for good: ``history_s`` after that batch was paid it is forgotten like a paid job (the executor's row
    goes; the payer keeps the row of its highest voucher, for the numbering), and it is no longer topped up."""

    async def main() -> None:
        p, jobs = await journaled_pair_owing(tmp_path)
        assert [r["job_id"] for r in p.executor_journal.voucher_rows("executor")] == [jobs[1]]
        assert [r["job_id"] for r in p.payer_journal.voucher_rows("payer")] == [jobs[1]]
        p.payer.history_s = p.executor.history_s = 0.0
        await p.payer.poll()
        await p.executor.poll()
        s = sizes(p)
        assert s["executor state"] == s["executor rows"] == s["payer state"] == 0, s
        p.payer.market.deposit(PRICE)
        p.executor.vouchers._top_up_at.clear()
        await p.executor.poll()
        assert p.payer.market._call("batchCount") == 1 and p.errors == []

    run(main)
