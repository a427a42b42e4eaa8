"""The voucher payment mode across restarts: the payer and the executor keep their voucher state in the agent's
journal (SQLite), so nothing is lost or paid twice when either is restarted before a batch is paid.

A restart here is a crash: the journal's open (uncommitted) transaction is rolled back and its connection
closed, and a new ChainLink for the same account (on the same embedded chain) attaches the reopened journal,
as the agent does on start. Every test runs twice: with the voucher mode alone attached to the journal (the
event poller reads the chain's events from the deployment on again), and with the whole ChainLink attached, as
the agent does (it resumes from its chain checkpoint; its polls are committed as the agent commits each turn).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from sandrun_p2p.agent.audit import tree_from_bytes
from sandrun_p2p.agent.chainlink import ChainLink
from sandrun_p2p.agent.journal import Journal
from sandrun_p2p.agent.voucherlink import MAX_BATCH_TRIES
from sandrun_p2p.agent.vouchers import VoucherBook, batch_of, voucher_from_bytes, voucher_to_bytes
from sandrun_p2p.chain import ChainError
from sandrun_p2p.chain.crypto import ResultsTree, Voucher
from sandrun_p2p.protocol.events import SubmitTx

from .test_journal_resume import CAPS, NoExecutor, NoStore
from .test_vouchers import (
    EXEC_NODE,
    LONG_AGO,
    PAYER_NODE,
    PRICE,
    Pair,
    deposit_emptied,
    h,
    job_held_while_the_deposit_empties,
    short_batch,
    spec,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True, params=["replay", "checkpoint"])
def chain_view(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(JournaledPair, "checkpoints", request.param == "checkpoint")
    return request.param


def crash(j: Journal) -> None:
    """Lose what was not committed, as a SIGKILL would."""
    if j.db.in_transaction:
        j.db.execute("ROLLBACK")
    j.db.close()


def receipts_lost(market: Any, channel_down: bool = False) -> Callable[[], None]:
    """From now on ``market``'s settleBatch is mined but raises (its receipt lost); with ``channel_down`` the
    channel cannot be read either (the RPC went away). Returns what puts both back."""
    send, channel = market.settle_batch, market.channel

    def receipt_lost(v: Voucher, t: ResultsTree) -> None:
        send(v, t)
        raise ChainError("timeout", "no receipt")

    def unreachable(*a: object) -> None:
        raise ChainError("connection", "the RPC went away")

    market.settle_batch = receipt_lost
    if channel_down:
        market.channel = unreachable

    def restore() -> None:
        market.settle_batch, market.channel = send, channel

    return restore


def unmined(market: Any) -> tuple[list[tuple[Voucher, ResultsTree]], Callable[[], None]]:
    """From now on ``market``'s settleBatch raises (no receipt in time) without being mined yet (it waits in a
    mempool). Returns the tries sent, and what puts settleBatch back."""
    send = market.settle_batch
    sent: list[tuple[Voucher, ResultsTree]] = []

    def no_receipt(v: Voucher, t: ResultsTree) -> None:
        sent.append((v, t))
        raise ChainError("timeout", "no receipt")

    market.settle_batch = no_receipt

    def restore() -> None:
        market.settle_batch = send

    return sent, restore


async def journaled_pair_owing(tmp_path: Path) -> tuple[JournaledPair, list[bytes]]:
    """A journaled pair whose short batch (two jobs, a deposit for one) is paid: the second job is owed."""
    p = JournaledPair(tmp_path, batch_jobs=2)
    await p.start()
    jobs = await short_batch(p)
    for side in (p.executor, p.payer):
        await side.poll()
    return p, jobs


class JournaledPair(Pair):
    """:class:`Pair` whose payer and executor journal their voucher state (group commit, as in the agent);
    with ``checkpoints``, their chain view too."""

    checkpoints = False

    def __init__(self, data: Path, batch_jobs: int = 3) -> None:
        super().__init__(batch_jobs)
        self.data = data
        self.batch_jobs = batch_jobs
        self.payer_journal = self._journal("payer")
        self.executor_journal = self._journal("executor")
        self._attach(self.payer, self.payer_journal)
        self._attach(self.executor, self.executor_journal)

    def _journal(self, who: str) -> Journal:
        return Journal(self.data / f"{who}.sqlite", group_commit=True)

    def _attach(self, link: ChainLink, journal: Journal) -> None:
        """As the agent does on start; with checkpoints, each poll is committed (the agent commits once a turn),
        and the block ranges the poller asks for are kept in ``link.asked``."""
        if not self.checkpoints:
            link.vouchers.attach(journal)
            return
        link.attach(journal)
        poll, logs = link.poll, link.poller._logs
        link.asked = []  # type: ignore[attr-defined]

        async def polled():  # noqa: ANN202
            out = await poll()
            journal.commit()
            return out

        def counted(start: int, end: int | str) -> list:
            link.asked.append((start, end))  # type: ignore[attr-defined]
            return logs(start, end)

        link.poll = polled  # type: ignore[method-assign]
        link.poller._logs = counted  # type: ignore[method-assign]

    async def restart_payer(self) -> None:
        crash(self.payer_journal)
        self.payer = ChainLink({"voucher_deposit_wei": 10 * PRICE}, shared=self.payer)
        self.payer.vouchers.on_error = self.payer_errors.append
        self.payer.vouchers.fetcher = self._fetch_tree
        self.payer_journal = self._journal("payer")
        self._attach(self.payer, self.payer_journal)
        await self.payer.join(PAYER_NODE)
        await self.payer.poll()

    async def restart_executor(self) -> None:
        crash(self.executor_journal)
        self.executor = ChainLink(
            {"account_index": 2, "voucher_batch_jobs": self.batch_jobs, "voucher_batch_age_s": 3600},
            shared=self.payer,
        )
        self.executor.vouchers.on_error = self.errors.append
        self.executor.vouchers.fetcher = self._fetch
        self.executor_journal = self._journal("executor")
        self._attach(self.executor, self.executor_journal)
        await self.executor.join(EXEC_NODE)

    def held(self, job_id: bytes) -> bytes:
        """The voucher bytes the executor holds for ``job_id`` (waiting for a batch)."""
        for p in self.executor.vouchers.queue.pending.values():
            for jid, _, v in p.items.values():
                if jid == job_id:
                    return voucher_to_bytes(v)
        raise KeyError(job_id.hex())

    def pay_out(self) -> None:
        self.payer.chain.advance(self.payer.market.params().challenge_window + 1)

    async def paid_out(self) -> tuple[set[bytes], int]:
        """Let the challenge window pass and poll the executor: the jobs it now reports settled, the wei earned."""
        before = self.earnings()
        self.pay_out()
        settled = {u.job_id for u in await self.executor.poll() if u.kind == "job_settled"}
        return settled, self.earnings() - before

    async def give_up(self) -> None:
        """Poll the executor until its waiting batch has failed MAX_BATCH_TRIES times (each try due at once)."""
        for _ in range(MAX_BATCH_TRIES):
            for waiting in self.executor.vouchers.queue.pending.values():
                waiting.since = LONG_AGO
            await self.executor.poll()
        assert len(self.errors) == MAX_BATCH_TRIES and not self.executor.vouchers.queue.pending

    def executor_rows_gone(self) -> bool:
        j = self.executor_journal
        return j.voucher_rows("executor") == [] and j.voucher_batches() == []


def run(fn) -> None:
    trio.run(fn)


def test_a_restarted_payer_continues_its_numbering_and_serves_the_same_voucher(tmp_path: Path) -> None:
    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=2)
        await p.start()
        first, _ = await p.job(0)  # the payer signed seq 1; the executor holds it, no batch yet
        signed = p.held(first)
        await p.restart_payer()  # nothing settled on chain: the chain's channel still says seq 0
        # the same job is served the same voucher (not a new one with the next number)
        assert await p.payer.vouchers.issue(first, p.executor.market.account) == signed
        second, answer = await p.job(1)  # the next job gets the next seq, not seq 1 again
        assert "seq 2" in answer and p.errors == []
        assert voucher_from_bytes(p.held(second)).cumulative == 2 * PRICE
        await p.executor.poll()  # two results: one batch pays both
        bid = p.executor.vouchers.state[first]["batch"]
        assert p.executor.vouchers.state[second]["batch"] == bid
        batch = p.payer.market.batch(bid)
        assert batch["amount"] == 2 * PRICE and batch["count"] == 2
        assert batch["results_root"] == ResultsTree([(first, h("root0")), (second, h("root1"))]).root
        settled, earned = await p.paid_out()
        assert settled == {first, second} and earned == 2 * PRICE
        # the restarted payer maps the batch onto the vouchers it signed before and after its restart
        assert {u.job_id for u in await p.payer.poll() if u.kind == "job_settled"} == {first, second}
        assert p.payer_journal.voucher_rows("payer") == []  # paid: nothing left to keep
        assert p.errors == []

    run(main)


def test_a_restarted_executor_settles_and_finalizes_its_queued_vouchers(tmp_path: Path) -> None:
    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=3)
        await p.start()
        jobs = [(await p.job(i))[0] for i in range(2)]  # two results wait for a third (or an hour)
        await p.executor.poll()
        assert not p.executor.vouchers.batches
        await p.restart_executor()
        # the restarted agent may send a job's reveal again: the voucher it holds is not fetched twice
        args = {"root": h("root0"), "salt": h("salt"), "pay": "voucher", "origin": PAYER_NODE, "price": PRICE}
        assert "already held" in await p.executor.submit(EXEC_NODE, SubmitTx("reveal", jobs[0], args))
        await p.executor.poll()  # the restored results have waited already: settled at once
        bids = {p.executor.vouchers.state[j].get("batch") for j in jobs}
        assert len(bids) == 1 and None not in bids
        (bid,) = bids
        assert p.payer.market.batch(bid)["amount"] == 2 * PRICE
        settled, earned = await p.paid_out()
        assert settled == set(jobs) and earned == 2 * PRICE
        assert p.executor_rows_gone()
        assert p.errors == []

    run(main)


def test_a_restarted_executor_finalizes_its_settled_batch(tmp_path: Path) -> None:
    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=2)
        await p.start()
        jobs = [(await p.job(i))[0] for i in range(2)]
        await p.executor.poll()  # settleBatch: the challenge window runs
        (bid,) = p.executor.vouchers.batches
        await p.restart_executor()
        settled, earned = await p.paid_out()
        assert p.payer.market.batch(bid)["state"] == 2  # paid
        assert settled == set(jobs) and earned == 2 * PRICE
        assert p.errors == []

    run(main)


def test_a_batch_sent_before_a_restart_but_not_journaled_is_not_sent_again(tmp_path: Path) -> None:
    """The chain wins: the executor crashed after its settleBatch was mined, before the batch was journaled.
    Its restored results are already settled on chain; the replayed BatchSettled gives them their batch."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=2)
        await p.start()
        jobs = [(await p.job(i))[0] for i in range(2)]
        # the receipt of the next settleBatch never reaches the journal (nor does anything after it)
        p.executor.vouchers.journal = p.executor.journal = None
        await p.executor.poll()
        (bid,) = p.executor.vouchers.batches
        await p.restart_executor()
        await p.executor.poll()
        # not sent again (it would revert)
        assert p.executor.vouchers.batches.keys() == {bid} and p.errors == []
        assert p.payer.market._call("batchCount") == bid  # no second batch
        settled, earned = await p.paid_out()
        assert settled == set(jobs) and earned == 2 * PRICE
        assert p.errors == []

    run(main)


@pytest.mark.parametrize("chain_view", ["checkpoint"], indirect=True)  # (about the checkpoint only)
def test_restarts_resume_from_checkpoints_taken_while_a_batch_was_pending(
    tmp_path: Path, chain_view: str
) -> None:
    """Both sides restart after the batch was settled and its BatchSettled polled (and committed), before it is
    paid: each resumes from its checkpoint (no block before it is read again); the executor finalizes the batch
    it journaled, and the payer maps the batch's payment onto its jobs from its checkpoint (its BatchSettled,
    which maps seqs to jobs, is not read again)."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=2)
        await p.start()
        jobs = [(await p.job(i))[0] for i in range(2)]
        await p.executor.poll()  # settleBatch; its BatchSettled is read in the same poll
        await p.payer.poll()
        (bid,) = p.executor.vouchers.batches
        assert p.payer.vouchers.batches[bid].jobs == jobs
        saved = {"payer": p.payer.poller.position, "executor": p.executor.poller.position}
        p.payer.chain.mine(3)  # (blocks the restarted sides read)
        await p.restart_payer()
        await p.restart_executor()
        assert p.payer.vouchers.batches[bid].jobs == jobs  # from the payer's checkpoint
        assert {p.payer.vouchers.state[j]["state"] for j in jobs} == {"batched"}
        settled, earned = await p.paid_out()
        assert settled == set(jobs) and earned == 2 * PRICE
        assert {u.job_id for u in await p.payer.poll() if u.kind == "job_settled"} == set(jobs)
        assert p.payer_journal.voucher_rows("payer") == [] and p.executor_rows_gone()
        assert bid not in p.payer.vouchers.batches  # paid: the payer forgets it (and so does its checkpoint)
        for who, link in (("payer", p.payer), ("executor", p.executor)):
            assert link.asked and min(start for start, _ in link.asked) >= saved[who], who
        assert p.errors == []

    run(main)


def test_a_batch_taken_for_failed_but_mined_is_found_after_a_restart(tmp_path: Path) -> None:
    """The executor's settleBatch raised (its receipt was lost, say) though the batch was mined, and the executor
    restarts before it gives the results up: they get that batch (its BatchSettled is read again: the chain
    checkpoint did not move past it meanwhile) and are paid once."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=2)
        await p.start()
        jobs = [(await p.job(i))[0] for i in range(2)]
        receipts_lost(p.executor.market, channel_down=True)
        # mined, but taken for a failed try (1 of 3; the channel could not be asked whether it was mined): the
        # results wait for the next; its BatchSettled is read by the same poll and matches nothing known
        await p.executor.poll()
        assert len(p.errors) == 1 and p.payer.market._call("batchCount") == 1
        await p.restart_executor()
        await p.executor.poll()
        assert p.payer.market._call("batchCount") == 1  # not sent again
        assert {p.executor.vouchers.state[j]["batch"] for j in jobs} == {1}
        settled, earned = await p.paid_out()
        assert settled == set(jobs) and earned == 2 * PRICE
        assert p.executor_rows_gone() and len(p.errors) == 1

    run(main)


def test_a_restarted_executor_whose_try_was_mined_without_a_receipt_reconciles(tmp_path: Path) -> None:
    """The executor restarts with two results queued; its first try is mined but raises (its receipt lost), and the
    channel says the chain settled them: they get that batch (its BatchSettled) and are paid once, and nothing is
    left waiting on the chain, so the chain checkpoint can move again. Before, the payer stayed "restored" for
    good (steady() never held: the checkpoint stayed before the batch, and every own batch event of that payer
    that matched nothing was kept)."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=3)
        await p.start()
        jobs = [(await p.job(i))[0] for i in range(2)]
        p.executor_journal.commit()
        await p.restart_executor()
        p.executor.vouchers.queue.max_jobs = 2
        restore = receipts_lost(p.executor.market)
        await p.executor.poll()  # mined, raises; the channel says both were settled
        restore()
        assert {p.executor.vouchers.state[j]["batch"] for j in jobs} == {1} and len(p.errors) == 0
        settled, earned = await p.paid_out()
        assert settled == set(jobs) and earned == 2 * PRICE
        assert p.executor_rows_gone() and p.executor.vouchers.steady()

    run(main)


def test_a_restarted_book_numbers_after_the_later_of_the_chain_and_its_vouchers() -> None:
    ex = "0x" + "22" * 20
    signed = Voucher("0x" + "11" * 20, ex, b"\x01" * 32, 3, 5, 15, b"")
    for chain, want in (((2, 10), (4, 20)), ((5, 25), (6, 30)), ((3, 12), (4, 20))):
        book = VoucherBook()
        book.restore(signed)
        book.open_channel(ex, *chain)
        assert book.next_terms(ex, b"\x02" * 32, 5) == want  # (3, 12): a batch short of deposit paid 12 of 15
        assert book.next_terms(ex, signed.job_id, 5) == signed


def agent_on(data_dir: Path, chain: object):
    """An agent (no network started) on a stand-in chain adaptor: what it hands the voucher mode."""
    from sandrun_p2p.agent.config import AgentConfig
    from sandrun_p2p.agent.runtime import Agent
    from sandrun_p2p.protocol.identity import NodeKey

    return Agent(
        AgentConfig(data_dir=data_dir, mdns=False),
        key=NodeKey.from_seed(b"\x05" * 32),
        executor=NoExecutor(),
        store=NoStore(),
        chain=chain,
        exec_caps=CAPS,
    )


def test_the_agent_hands_its_journal_to_the_voucher_mode(tmp_path: Path) -> None:
    class Vouchers:
        journal = None

        def attach(self, journal: Journal) -> None:
            self.journal = journal

    class Chain:
        kind = "none"
        vouchers = Vouchers()

    chain = Chain()
    agent = agent_on(tmp_path, chain)
    assert chain.vouchers.journal is agent.journal
    agent.journal.close()


def mined_late(p: JournaledPair, voucher: Voucher, tree: ResultsTree) -> None:
    """The settleBatch (``voucher``, ``tree``) the executor sent before it crashed is mined just before the next
    one the restarted executor sends (the same account: its lower nonce goes first)."""
    market = p.executor.market
    send = market.settle_batch
    old: list[tuple[Voucher, ResultsTree]] = [(voucher, tree)]

    def settle_batch(v: Voucher, t: ResultsTree):  # noqa: ANN202
        while old:
            send(*old.pop())
        return send(v, t)

    market.settle_batch = settle_batch  # type: ignore[method-assign]


def test_a_batch_mined_after_the_restart_is_not_counted_as_a_failed_try(tmp_path: Path) -> None:
    """The executor crashed while its settleBatch was unmined; it is mined after the restart, so the restarted
    executor's settleBatch of the same results reverts (VoucherSpent). The chain settled them: they get the
    first batch (its replayed BatchSettled), are paid once and reported settled, not retried nor "unpaid"."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=2)
        await p.start()
        jobs = [(await p.job(i))[0] for i in range(2)]
        payer = p.payer.market.account
        voucher, tree, _ = batch_of(p.executor.vouchers.queue.pending[payer])  # in flight at the crash
        await p.restart_executor()
        mined_late(p, voucher, tree)
        await p.executor.poll()
        assert p.errors == []
        assert p.payer.market._call("batchCount") == 1  # the batch sent before the crash, once
        assert {p.executor.vouchers.state[j]["state"] for j in jobs} == {"batched"}
        assert {p.executor.vouchers.state[j]["batch"] for j in jobs} == {1}
        settled, earned = await p.paid_out()
        assert settled == set(jobs) and earned == 2 * PRICE
        assert p.executor_rows_gone()
        assert p.errors == []

    run(main)


def test_results_queued_after_a_batch_in_flight_at_the_crash_are_settled_on_their_own(tmp_path: Path) -> None:
    """As above, but a third result was queued after the in-flight batch (of the first two) was sent: the
    restarted executor's batch of all three settles only the third (the chain's count says so). The first two
    get the first batch, the third the second; each is paid once."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=3)
        await p.start()
        jobs = [(await p.job(i))[0] for i in range(2)]
        payer = p.payer.market.account
        voucher, tree, _ = batch_of(p.executor.vouchers.queue.pending[payer])
        jobs.append((await p.job(2))[0])
        await p.restart_executor()
        mined_late(p, voucher, tree)
        await p.executor.poll()
        assert p.errors == []
        assert p.payer.market._call("batchCount") == 2
        assert [p.executor.vouchers.state[j]["batch"] for j in jobs] == [1, 1, 2]
        assert p.executor.vouchers.batches[2].jobs == [jobs[2]]
        settled, earned = await p.paid_out()
        assert settled == set(jobs) and earned == 3 * PRICE
        assert {p.executor.vouchers.state[j]["paid_wei"] for j in jobs} == {PRICE}
        assert p.executor_rows_gone()
        assert p.errors == []

    run(main)


def test_a_late_batch_whose_event_was_read_first_still_gets_its_results(tmp_path: Path) -> None:
    """The batch in flight at the crash is mined after the restarted executor consulted the chain, and its
    BatchSettled is read before the executor resends (and learns its results were settled): the event is kept
    until they are, then matched."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=3)
        await p.start()
        jobs = [(await p.job(i))[0] for i in range(2)]
        payer = p.payer.market.account
        voucher, tree, _ = batch_of(p.executor.vouchers.queue.pending[payer])
        old_market = p.executor.market
        await p.restart_executor()
        queue = p.executor.vouchers.queue
        await p.executor.vouchers._resume()  # the chain settled nothing yet
        queue.pending[payer].since = float("inf")  # not due at the next poll
        old_market.settle_batch(voucher, tree)  # mined now
        await p.executor.poll()  # reads its BatchSettled
        queue.pending[payer].since = LONG_AGO
        await p.executor.poll()  # resends: reverts, and the chain says why
        assert p.errors == [] and p.payer.market._call("batchCount") == 1
        assert {p.executor.vouchers.state[j]["batch"] for j in jobs} == {1}
        p.pay_out()
        settled = {u.job_id for u in await p.executor.poll() if u.kind == "job_settled"}
        assert settled == set(jobs) and p.errors == []

    run(main)


def test_a_restarted_payer_uses_the_deposit_it_has_left(tmp_path: Path) -> None:
    """The first voucher job deposits a chunk (10 prices here); after a restart the payer reads what the chunk
    still holds beyond its promises (a signed voucher, a job funded but not signed yet) and deposits nothing
    more until that runs out."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=5)
        await p.start()
        await p.job(0)  # signed: 1 price promised
        await p.payer.fund_job(spec(99, p.payer.chain.now() + 3000), PAYER_NODE)  # reserved, not signed
        p.payer_journal.commit()  # (the agent commits once a turn)
        assert p.payer.market.deposit_of()[0] == 10 * PRICE
        await p.restart_payer()
        for i in range(1, 9):  # 10 - 2 prices left: eight more jobs without a deposit
            await p.job(i)
        assert p.payer.market.deposit_of()[0] == 10 * PRICE and p.payer.vouchers.room == 0
        await p.job(9)  # the next one deposits a chunk
        assert p.payer.market.deposit_of()[0] == 20 * PRICE and p.payer.vouchers.room == 9 * PRICE
        assert p.errors == []

    run(main)


def test_a_job_that_ends_without_a_voucher_leaves_no_payer_row(tmp_path: Path) -> None:
    """A voucher job funded here whose executor never asked for its voucher (failed, or forgotten unclosed):
    its row goes and its price returns to the room; a job whose voucher was signed keeps its row (its batch
    may still come)."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=5)
        await p.start()
        signed, _ = await p.job(0)
        lonely = spec(99, p.payer.chain.now() + 3000)
        await p.payer.fund_job(lonely, PAYER_NODE)
        room = p.payer.vouchers.room
        rows = {r["job_id"] for r in p.payer_journal.voucher_rows("payer")}
        assert rows == {signed, lonely.job_id}
        p.payer.vouchers.ended(lonely.job_id)
        p.payer.vouchers.ended(signed)
        p.payer_journal.commit()
        assert [r["job_id"] for r in p.payer_journal.voucher_rows("payer")] == [signed]
        assert p.payer.vouchers.room == room + PRICE
        assert p.payer.vouchers.job(lonely.job_id)["state"] == "refunded"
        # nothing to sign
        assert await p.payer.vouchers.issue(lonely.job_id, p.executor.market.account) is None
        await p.restart_payer()
        assert p.payer.vouchers.job(lonely.job_id) is None

    run(main)


@pytest.mark.parametrize("state", ["failed", "forgotten"])
def test_the_agent_tells_the_voucher_mode_a_job_ended(tmp_path: Path, state: str) -> None:
    from sandrun_p2p.protocol.events import JobEvent

    told: list[bytes] = []

    class Vouchers:
        def attach(self, journal: Journal) -> None:
            pass

        def ended(self, job_id: bytes) -> None:
            told.append(job_id)

    class Chain:
        kind = "none"
        vouchers = Vouchers()

    chain = Chain()
    agent = agent_on(tmp_path, chain)
    try:
        agent._do(JobEvent(h("job"), "accepted"))
        agent._do(JobEvent(h("job"), state, "why"))
    finally:
        agent.journal.close()
    assert told == [h("job")]


def test_a_batch_taken_for_failed_but_mined_is_found_without_a_restart(tmp_path: Path) -> None:
    """The executor's settleBatch raised (its receipt was lost) though the batch was mined: before, the retries
    reverted (the seqs were spent) and after three the results were given up as unpaid while their batch waited
    on chain, never finalized. Now the failed try asks the channel, finds them settled, and the batch's
    BatchSettled (read by the same poll) gives them their batch: finalized and paid once, nothing sent again."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=2)
        await p.start()
        jobs = [(await p.job(i))[0] for i in range(2)]
        restore = receipts_lost(p.executor.market)
        await p.executor.poll()
        restore()
        assert p.payer.market._call("batchCount") == 1 and p.errors == []  # not taken for a failed try
        assert {p.executor.vouchers.state[j]["batch"] for j in jobs} == {1}
        for _ in range(3):
            await p.executor.poll()
        assert p.payer.market._call("batchCount") == 1  # not sent again
        settled, earned = await p.paid_out()
        assert settled == set(jobs) and earned == 2 * PRICE
        assert p.executor_rows_gone() and p.errors == []
        assert p.executor.vouchers.steady()  # nothing left waiting: the chain checkpoint moves on

    run(main)


def test_a_mined_try_first_taken_for_failed_is_found_at_the_next_try(tmp_path: Path) -> None:
    """As above, but the channel could not be asked at the failed try (the RPC was down): the try counts as
    failed, the batch's BatchSettled (read by the same poll, matching nothing yet) is kept, and the next try,
    reverted because its seqs are spent, finds them settled and matches them to that batch."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=2)
        await p.start()
        jobs = [(await p.job(i))[0] for i in range(2)]
        restore = receipts_lost(p.executor.market, channel_down=True)
        await p.executor.poll()
        assert len(p.errors) == 1 and not p.executor.vouchers.steady()
        restore()
        p.executor.vouchers.queue.pending[p.payer.market.account].since = LONG_AGO  # (the next try is due)
        await p.executor.poll()  # the next try reverts (spent seqs): the channel says they were settled
        assert p.payer.market._call("batchCount") == 1 and len(p.errors) == 1
        assert {p.executor.vouchers.state[j]["batch"] for j in jobs} == {1}
        settled, earned = await p.paid_out()
        assert settled == set(jobs) and earned == 2 * PRICE
        assert p.executor_rows_gone() and p.executor.vouchers.steady()

    run(main)


class SelfPair(JournaledPair):
    """One node that pays for the voucher jobs it runs itself (their origin and their executor): ``executor`` is
    the payer's own ChainLink (the executor fetches each voucher from itself)."""

    def __init__(self, data: Path, batch_jobs: int = 2) -> None:
        super().__init__(data, batch_jobs)
        self.executor, self.executor_journal = self.payer, self.payer_journal
        queue = self.payer.vouchers.queue
        queue.max_jobs, queue.max_age = batch_jobs, 3600.0
        self.payer.vouchers.on_error = self.errors.append

    async def start(self) -> None:
        await self.payer.join(PAYER_NODE)
        await self.payer.poll()

    async def job(self, i: int, root: bytes | None = None) -> tuple[bytes, str]:
        s = spec(i, self.payer.chain.now() + 3000)
        await self.payer.fund_job(s, PAYER_NODE)
        args = {"root": root or h(f"root{i}"), "salt": h("salt"), "pay": "voucher", "origin": PAYER_NODE}
        return s.job_id, await self.payer.submit(
            PAYER_NODE, SubmitTx("reveal", s.job_id, {**args, "price": PRICE})
        )


def test_a_node_paying_itself_maps_each_batch_onto_its_own_vouchers(tmp_path: Path) -> None:
    """A node that runs its own voucher jobs settles their batches as executor; as payer it must still count the
    seqs each of those batches settled (``payer_seq``). Before, it skipped every batch its executor side knew, so
    a later batch it read before its executor side matched it (a lost receipt) was mapped onto the vouchers of
    the first batch: those jobs, already paid, went back to "batched" in the wrong batch for good."""

    async def main() -> None:
        p = SelfPair(tmp_path)
        await p.start()
        me = p.payer.market.account
        first = [(await p.job(i))[0] for i in range(2)]
        await p.payer.poll()  # batch 1: seqs 1-2
        settled, earned = await p.paid_out()
        assert settled == set(first) and earned == 2 * PRICE
        later = [(await p.job(i))[0] for i in range(2, 4)]
        restore = receipts_lost(p.payer.market, channel_down=True)
        await p.payer.poll()  # batch 2 mined, taken for a failed try; its BatchSettled is read first
        restore()
        p.payer.vouchers.queue.pending[me].since = LONG_AGO  # (the next try is due)
        await p.payer.poll()  # reverts (spent seqs): the channel says batch 2 holds them
        state = p.payer.vouchers.state
        assert [(state[j]["state"], state[j]["batch"]) for j in first] == [("settled", 1)] * 2
        assert {state[j]["batch"] for j in later} == {2}
        assert p.payer.vouchers.payer_seq.get(me) == 4  # what the chain checkpoint keeps of it
        settled, earned = await p.paid_out()
        assert settled == set(later) and earned == 2 * PRICE
        assert {state[j]["state"] for j in first + later} == {"settled"}
        assert len(p.errors) == 1  # (the try whose receipt was lost)

    run(main)


@pytest.mark.parametrize("restart", [False, True], ids=["live", "restarted"])
def test_a_try_mined_after_its_results_were_given_up_still_pays_them(tmp_path: Path, restart: bool) -> None:
    """Each of the three tries raised (no receipt) and the channel said none was mined: the results are given up,
    but only as "unconfirmed" (journaled: a restart keeps them). The first try is mined later all the same: its
    BatchSettled gives them their batch, which is finalized and paid once. Before, they were "unpaid" for good
    and the batch sat on chain, never finalized by this executor."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=2)
        await p.start()
        jobs = [(await p.job(i))[0] for i in range(2)]
        tries, restore = unmined(p.executor.market)
        await p.give_up()
        restore()
        assert {p.executor.vouchers.job(j)["state"] for j in jobs} == {"unconfirmed"}
        assert "no receipt" in p.executor.vouchers.job(jobs[0])["reason"]
        assert p.executor.vouchers.steady()  # the chain checkpoint moves on meanwhile
        p.executor.market.settle_batch(*tries[0])  # mined late
        if restart:
            p.executor_journal.commit()  # (the agent commits once a turn)
            await p.restart_executor()
            assert {p.executor.vouchers.job(j)["state"] for j in jobs} == {"unconfirmed"}
            # a reveal sent again by the restarted agent does not queue them again
            args = {
                "root": h("root0"),
                "salt": h("salt"),
                "pay": "voucher",
                "origin": PAYER_NODE,
                "price": PRICE,
            }
            assert "already held" in await p.executor.submit(EXEC_NODE, SubmitTx("reveal", jobs[0], args))
            assert not p.executor.vouchers.queue.pending
        await p.executor.poll()  # reads its BatchSettled
        assert {p.executor.vouchers.state[j]["batch"] for j in jobs} == {1}
        settled, earned = await p.paid_out()
        assert settled == set(jobs) and earned == 2 * PRICE
        assert p.payer.market._call("batchCount") == 1
        assert p.executor_rows_gone() and p.executor.vouchers.steady()

    run(main)


def test_a_mined_try_given_up_before_the_channel_could_say_so_is_paid(tmp_path: Path) -> None:
    """The first try was mined (its receipt lost) and the channel could not be asked at any of the three tries:
    the results are given up, and the batch's BatchSettled, read after the first try and kept while the tries'
    outcome was unknown, gives them their batch at once."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=2)
        await p.start()
        jobs = [(await p.job(i))[0] for i in range(2)]
        restore = receipts_lost(p.executor.market, channel_down=True)
        await p.give_up()  # the later tries revert: their seqs are spent
        restore()
        assert p.payer.market._call("batchCount") == 1
        assert {
            (p.executor.vouchers.state[j]["state"], p.executor.vouchers.state[j]["batch"]) for j in jobs
        } == {("batched", 1)}
        settled, earned = await p.paid_out()
        assert settled == set(jobs) and earned == 2 * PRICE
        assert p.executor_rows_gone() and p.executor.vouchers.steady()

    run(main)


def test_results_given_up_are_unpaid_once_history_s_has_passed(tmp_path: Path) -> None:
    """Nothing settles the given-up results within ``history_s`` (0 here): they are unpaid for good (by the poll
    of the last try), their rows go and nothing waits for them; being final, they are forgotten ``history_s``
    later (the next poll)."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=2)
        p.executor.history_s = 0.0
        await p.start()
        jobs = [(await p.job(i))[0] for i in range(2)]
        _, restore = unmined(p.executor.market)
        await p.give_up()
        restore()
        assert {p.executor.vouchers.job(j)["state"] for j in jobs} == {"unpaid"}
        assert "no receipt" in p.executor.vouchers.job(jobs[0])["reason"]
        p.executor_journal.commit()
        assert p.executor_rows_gone() and p.executor.vouchers.steady()
        await p.executor.poll()
        assert [p.executor.vouchers.job(j) for j in jobs] == [None, None]
        assert not p.executor.vouchers.queue.used

    run(main)


def test_results_given_up_unmined_are_paid_by_the_payers_next_batch(tmp_path: Path) -> None:
    """Every try reverted (the payer had emptied its deposit): the results wait, unconfirmed. The payer's next
    voucher is cumulative, so the executor's next batch covers them too (its count says how many seqs): they are
    paid with it."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=1)
        await p.start()
        first = await job_held_while_the_deposit_empties(p)
        await p.give_up()
        info = p.executor.vouchers.job(first)
        assert info["state"] == "unconfirmed" and "NothingToPay" in info["reason"]
        p.payer.vouchers.room = 0  # (the payer's next job deposits a chunk again)
        second, _ = await p.job(1)
        await p.executor.poll()  # one result, one leaf: the batch's count covers both seqs
        bid = p.executor.vouchers.state[second]["batch"]
        assert p.payer.market.batch(bid)["count"] == 2 and p.payer.market.batch(bid)["amount"] == 2 * PRICE
        assert p.executor.vouchers.state[first]["batch"] == bid
        settled, earned = await p.paid_out()
        assert settled == {first, second} and earned == 2 * PRICE
        assert p.executor_rows_gone() and len(p.errors) == MAX_BATCH_TRIES

    run(main)


def test_a_journal_written_before_given_up_rows_opens_with_them(tmp_path: Path) -> None:
    import sqlite3

    db = sqlite3.connect(tmp_path / "old.sqlite")
    db.execute(
        "CREATE TABLE vouchers (job_id BLOB NOT NULL, role TEXT NOT NULL, price TEXT, voucher BLOB, root BLOB, "
        "batch INTEGER, PRIMARY KEY (job_id, role))"
    )
    db.execute(
        "INSERT INTO vouchers(job_id, role, voucher, root) VALUES (?, 'executor', ?, ?)",
        (h("j"), b"v", h("r")),
    )
    db.commit()
    db.close()
    j = Journal(tmp_path / "old.sqlite")
    assert [r["given_up"] for r in j.voucher_rows("executor")] == [None]
    j.voucher_put(h("j"), "executor", given_up=12.5)
    assert [r["given_up"] for r in j.voucher_rows("executor")] == [12.5]
    # (and with the later additions: what an owed job was paid, kept trees, unfinished audits of paid batches)
    assert [r["paid"] for r in j.voucher_rows("executor")] == [None]
    j.voucher_put(h("j"), "executor", paid=7)
    assert [r["paid"] for r in j.voucher_rows("executor")] == [7]
    assert j.voucher_trees() == [] and j.voucher_audits() == []
    j.close()


async def two_tries_mined_with_overlap(p: JournaledPair) -> list[bytes]:
    """Start ``p`` (batches of 2) and run three jobs whose two settleBatch tries are both mined though both
    raised (receipts lost, the channel unreadable): batch 1 settles results 1-2, batch 2 has leaves 1-3 and count
    1; a third try reverts (spent seqs) and the channel says all three were settled. The three job ids."""
    await p.start()
    jobs = [(await p.job(i))[0] for i in range(2)]
    restore = receipts_lost(p.executor.market, channel_down=True)
    await p.executor.poll()  # batch 1: results 1-2
    restore()
    jobs.append((await p.job(2))[0])
    restore = receipts_lost(p.executor.market, channel_down=True)
    p.executor.vouchers.queue.pending[p.payer.market.account].since = LONG_AGO
    await p.executor.poll()  # batch 2: leaves 1-3, count 1
    restore()
    p.executor.vouchers.queue.pending[p.payer.market.account].since = LONG_AGO
    await p.executor.poll()  # reverts (spent seqs): the channel says all three were settled
    return jobs


def test_tries_mined_with_overlapping_results_each_get_the_results_they_settled(tmp_path: Path) -> None:
    """Two tries are mined though both raised (receipts lost, the channel unreadable), and a result was queued
    between them: the second batch's leaves hold the first's results again, but its count settles only the new
    one. Each batch gets the results it settled (the top ``count`` of its leaves): all three are finalized and
    paid, and nothing is left waiting (before, the third result matched no batch and held the chain checkpoint
    for good)."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=2)
        jobs = await two_tries_mined_with_overlap(p)
        assert p.payer.market._call("batchCount") == 2 and len(p.errors) == 2
        assert [p.executor.vouchers.state[j]["batch"] for j in jobs] == [1, 1, 2]
        settled, earned = await p.paid_out()
        assert settled == set(jobs) and earned == 3 * PRICE
        assert p.executor_rows_gone() and p.executor.vouchers.steady()

    run(main)


def test_a_restarted_executor_serves_the_tree_its_batch_settled_even_with_repeated_leaves(
    tmp_path: Path,
) -> None:
    """The second of two tries mined with lost receipts repeats the first's results among its leaves; the
    executor restarts while that batch is pending. What it serves to the payer's audit must hash to the batch's
    on-chain results root (before, it rebuilt the tree from the batch's own rows only: another root, and the
    payer reported an honest executor and stopped signing it vouchers)."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=2)
        await two_tries_mined_with_overlap(p)
        root = p.payer.market.batch(2)["results_root"]
        assert tree_from_bytes(p.executor.vouchers.batch_tree(2)).root == root
        p.executor_journal.commit()  # (the agent commits once a loop turn)
        await p.restart_executor()
        served = p.executor.vouchers.batch_tree(2)
        assert served is not None and tree_from_bytes(served).root == root

    run(main)


async def short_batch_topped_up(
    p: JournaledPair, earlier: str, top_up_receipt_lost: bool = False
) -> list[bytes]:
    """Two results; their batch is mined with the payer's deposit one price short (it pays the first result in full,
    nothing of the second) but the executor does not know it (``earlier``: its receipt was lost, or it was in flight
    when the executor crashed). The payer tops its deposit up, and the executor's next try, the same voucher again,
    is mined as a top-up (the same seq: count 0) paying the price the first batch left owing; with
    ``top_up_receipt_lost``, that try raises too (its receipt lost). Returns the two jobs."""
    await p.start()
    p.executor.vouchers.queue.max_jobs = 99  # (held until the deposit is short)
    jobs = [(await p.job(i))[0] for i in range(2)]
    payer = p.payer.market.account
    deposit_emptied(p)
    p.payer.market.deposit(PRICE)
    p.executor.vouchers.queue.max_jobs = 2
    send = p.executor.market.settle_batch
    if earlier == "outcome unknown":
        restore = receipts_lost(p.executor.market, channel_down=True)
        await p.executor.poll()  # mined short, taken for a failed try
        restore()
        assert len(p.errors) == 1
        p.executor.vouchers.queue.pending[payer].since = LONG_AGO  # (the next try is due)
    else:
        in_flight = batch_of(p.executor.vouchers.queue.pending[payer])[:2]
        p.executor_journal.commit()
        await p.restart_executor()
        send = p.executor.market.settle_batch

    def top_up_first(v: Voucher, t: ResultsTree):  # noqa: ANN202
        if earlier != "outcome unknown":
            send(*in_flight)  # mined short just before the restarted executor's try
        p.payer.market.deposit(PRICE)
        res = send(v, t)
        if top_up_receipt_lost:
            raise ChainError("timeout", "no receipt")
        return res

    p.executor.market.settle_batch = top_up_first  # type: ignore[method-assign]
    await p.executor.poll()  # the top-up
    p.executor.market.settle_batch = send  # type: ignore[method-assign]
    first, top_up = p.payer.market.batch(1), p.payer.market.batch(2)
    assert (first["count"], first["amount"], top_up["count"], top_up["amount"]) == (2, PRICE, 0, PRICE)
    return jobs


@pytest.mark.parametrize("restart_before_paid", [False, True], ids=["live", "restarted-before-paid"])
@pytest.mark.parametrize("earlier", ["outcome unknown", "in flight at a restart"])
def test_a_top_up_of_a_short_batch_pays_the_jobs_it_left_owing(
    tmp_path: Path, earlier: str, restart_before_paid: bool
) -> None:
    """A short batch the executor did not know of, then its top-up (:func:`short_batch_topped_up`). Each job is
    reported paid its own price and the executor earns both prices, also when it restarts before the batches are
    paid; the job the short batch left owing is ``owed``, not settled, while only that batch is paid. Before, the
    top-up got no jobs: the two jobs each showed half of the first batch, and a restarted executor never
    finalized the top-up (it has no results of its own), so it was never paid."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=2)
        jobs = await short_batch_topped_up(p, earlier)
        if restart_before_paid:
            p.executor_journal.commit()  # (the agent commits once a turn)
            await p.restart_executor()
        before = p.earnings()
        p.pay_out()
        p.payer.market.finalize_batch(1)  # (anyone may) the short batch is paid before its top-up
        await p.payer.poll()
        assert [(await p.payer.job(j))["state"] for j in jobs] == ["settled", "owed"]
        settled = {u.job_id for u in await p.executor.poll() if u.kind == "job_settled"}
        assert settled == set(jobs) and p.earnings() - before == 2 * PRICE
        assert [p.executor.vouchers.job(j)["paid_wei"] for j in jobs] == [PRICE, PRICE]
        await p.payer.poll()
        assert [(await p.payer.job(j))["paid_wei"] for j in jobs] == [PRICE, PRICE]
        assert p.executor_rows_gone() and p.executor.vouchers.steady()

    run(main)


@pytest.mark.parametrize("restart_before_paid", [False, True], ids=["live", "restarted-before-paid"])
@pytest.mark.parametrize("earlier", ["outcome unknown", "in flight at a restart"])
def test_a_top_up_whose_receipt_was_lost_is_still_finalized(
    tmp_path: Path, earlier: str, restart_before_paid: bool
) -> None:
    """As above, but the top-up's receipt is lost too: the executor finds the top-up by its ``BatchSettled``
    (count 0, the results root of its try) and finalizes it, so it earns both prices and each job is paid in full,
    also when it restarts before the batches are paid. Before, an own batch of count 0 was never adopted: the
    executor finalized the short batch only, and the price the top-up took from the deposit stayed in the contract."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=2)
        jobs = await short_batch_topped_up(p, earlier, top_up_receipt_lost=True)
        if restart_before_paid:
            p.executor_journal.commit()  # (the agent commits once a turn)
            await p.restart_executor()
        await p.executor.poll()  # (reconciled with the chain after a restart)
        settled, earned = await p.paid_out()
        assert p.payer.market.batch(2)["state"] == 2  # paid
        assert settled == set(jobs) and earned == 2 * PRICE
        assert [p.executor.vouchers.job(j)["paid_wei"] for j in jobs] == [PRICE, PRICE]
        assert p.executor_rows_gone() and p.executor.vouchers.steady()

    run(main)


@pytest.mark.parametrize("restart_before_paid", [False, True], ids=["live", "restarted-before-paid"])
def test_an_automatic_top_up_whose_receipt_was_lost_is_still_finalized(
    tmp_path: Path, restart_before_paid: bool
) -> None:
    """A short batch left the second job owing and the payer adds to its deposit: the executor's own top-up
    (``voucher_top_up_s``) is mined but its receipt is lost. The executor finds it by its ``BatchSettled`` (count
    0, the owed results' root) and finalizes it, also when it restarts before it is paid, sends no second top-up
    for what the first paid (the deposit holds more again, the interval passed), and the owed job ends settled,
    its full price paid on both sides."""

    async def main() -> None:
        p, jobs = await journaled_pair_owing(tmp_path)
        assert p.executor.vouchers.job(jobs[1])["state"] == "owed"
        p.payer.market.deposit(PRICE)
        p.executor.vouchers._top_up_at.clear()  # (the interval passed)
        restore = receipts_lost(p.executor.market)
        await p.executor.poll()  # the top-up: mined, its receipt lost
        restore()
        top_up = p.payer.market.batch(2)
        assert (top_up["count"], top_up["amount"]) == (0, PRICE) and len(p.errors) == 1
        if restart_before_paid:
            p.executor_journal.commit()  # (the agent commits once a turn)
            await p.restart_executor()
        await p.executor.poll()  # its BatchSettled is read
        p.payer.market.deposit(PRICE)  # (the deposit holds more again)
        p.executor.vouchers._top_up_at.clear()  # (the interval passed)
        await p.executor.poll()
        assert p.payer.market._call("batchCount") == 2  # no second top-up
        settled, earned = await p.paid_out()
        assert p.payer.market.batch(2)["state"] == 2  # paid
        assert settled == {jobs[1]} and earned == PRICE
        await p.payer.poll()
        for info in (p.executor.vouchers.job(jobs[1]), await p.payer.job(jobs[1])):
            assert info is not None and info["state"] == "settled" and info["paid_wei"] == PRICE
        assert p.executor_rows_gone() and p.executor.vouchers.steady() and len(p.errors) == 1

    run(main)


def test_a_restarted_node_still_shows_an_owed_job_and_its_executor_tops_it_up(tmp_path: Path) -> None:
    """A short batch paid half of the second job's price; then both the executor and the payer restart (each
    journal committed). Each still shows that job ``owed`` (what was paid, what is owed); the payer adds to its
    deposit meanwhile, so the restarted executor's first poll tops the job up, and once that is paid the job is
    settled, its full price paid on both sides (not counted twice by a payer that reads the chain's events again),
    and the executor's rows are gone. Before, the short batch's rows were deleted when it was paid: after a restart
    the job was not shown, and the rest of its price was never claimed."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=2)
        await p.start()
        half = PRICE // 2
        jobs = await short_batch(p, deposit=PRICE + half)
        for side in (p.executor, p.payer):
            await side.poll()  # the short batch is paid: the second job owes half its price
        p.executor_journal.commit()
        p.payer_journal.commit()  # (the agent commits once a turn)
        await p.restart_executor()
        await p.restart_payer()
        for info in (p.executor.vouchers.job(jobs[1]), await p.payer.job(jobs[1])):
            assert info is not None and info["state"] == "owed"
            assert (info["paid_wei"], info["owed_wei"]) == (half, PRICE - half)
        p.payer.market.deposit(PRICE)
        await p.executor.poll()  # the top-up
        assert (p.payer.market.batch(2)["count"], p.payer.market.batch(2)["amount"]) == (0, PRICE - half)
        settled, earned = await p.paid_out()
        assert settled == {jobs[1]} and earned == PRICE - half
        assert {u.job_id for u in await p.payer.poll() if u.kind == "job_settled"} == {jobs[1]}
        for info in (p.executor.vouchers.job(jobs[1]), await p.payer.job(jobs[1])):
            assert info is not None and info["state"] == "settled" and info["paid_wei"] == PRICE
        assert p.executor_rows_gone() and p.executor.vouchers.steady() and p.errors == []

    run(main)


def test_a_batch_restored_from_a_journal_without_its_leaves_serves_the_tree_it_settled(
    tmp_path: Path,
) -> None:
    """A batch took in a given-up result its count covers (not among its leaves), and the executor restarts from a
    journal written before batches kept their leaves: it rebuilds the tree from the results it restored, checked
    against the batch's on-chain results root, so the payer's audit verifies it (and signs this executor vouchers
    still). Before, the tree held every result of the batch's rows: another root, and the payer blocked an honest
    executor."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=1)
        await p.start()
        first = await job_held_while_the_deposit_empties(p)
        await p.give_up()  # unconfirmed
        p.payer.vouchers.room = 0  # (the payer's next job deposits a chunk again)
        second, _ = await p.job(1)
        await p.executor.poll()  # leaves: the second result; its count covers the first
        bid = p.executor.vouchers.state[second]["batch"]
        assert p.executor.vouchers.batches[bid].jobs == [first, second]
        p.executor_journal.commit()
        p.executor_journal.db.execute(
            "UPDATE voucher_batches SET leaves=NULL, paid=NULL"
        )  # (an older journal)
        await p.restart_executor()
        await p.executor.poll()  # reconciled with the chain
        served = p.executor.vouchers.batch_tree(bid)
        assert (
            served is not None and tree_from_bytes(served).root == p.payer.market.batch(bid)["results_root"]
        )
        await p.payer.poll()  # its audit fetches the tree
        assert p.trees_asked == [bid] and bid in p.payer.vouchers.audits.verified
        assert not p.payer.vouchers.audits.blocked and p.payer_errors == []
        settled, earned = await p.paid_out()
        assert settled == {first, second} and earned == 2 * PRICE
        assert p.executor_rows_gone() and len(p.errors) == MAX_BATCH_TRIES

    run(main)
