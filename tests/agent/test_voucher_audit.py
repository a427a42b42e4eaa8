"""The payer's audit of the voucher batches settled on its deposit (audit.py), through a payer and an executor
ChainLink on one embedded chain (:class:`Pair`): an honest batch costs nothing beyond the event, a batch whose
leaves contradict what its executor attested on gossip is voided on chain without anyone asking, and a batch
that cannot be verified is reported and its executor gets no new voucher.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from sandrun_p2p.agent import voucherlink
from sandrun_p2p.agent.audit import (
    MAX_TREE_LEAVES,
    AuditError,
    batch_tree_name,
    parse_batch_tree_name,
    tree_from_bytes,
    tree_to_bytes,
)
from sandrun_p2p.agent.journal import Journal
from sandrun_p2p.agent.runtime import Agent
from sandrun_p2p.agent.vouchers import VoucherError
from sandrun_p2p.chain import ChainError
from sandrun_p2p.chain.crypto import ResultsTree, Voucher

from .test_voucher_restart import JournaledPair
from .test_vouchers import Pair, h, spec

pytestmark = pytest.mark.timeout(120)

PENDING, PAID, VOIDED = 1, 2, 3


def run(fn: Any) -> None:
    trio.run(fn)


async def settled(p: Pair, n: int, tampered: int | None = None) -> tuple[list[bytes], int]:
    """``n`` jobs settled in one batch by the executor (job ``tampered`` with another root in the batch than the
    one it attested on gossip); the jobs and the batch id (the payer has not polled yet)."""
    jobs = []
    for i in range(n):
        other = h(f"in the batch {i}") if i == tampered else None
        jobs.append((await p.job(i, root=other, revealed=h(f"root{i}")))[0])
    await p.executor.poll()
    return jobs, p.executor.vouchers.state[jobs[0]]["batch"]


def test_an_honest_batch_is_verified_without_a_fetch() -> None:
    async def main() -> None:
        p = Pair(batch_jobs=3)
        await p.start()
        _, bid = await settled(p, 3)
        await p.payer.poll()
        assert bid in p.payer.vouchers.audits.verified and not p.payer.vouchers.audits.pending
        assert p.trees_asked == [] and p.payer_errors == []
        assert p.payer.market.batch(bid)["state"] == PENDING

    run(main)


@pytest.mark.parametrize("how", ["queued", "market API"])
def test_a_tampered_batch_is_challenged_automatically(how: str) -> None:
    """The executor attested one root on gossip and settles a batch whose leaf has another: the payer's poll
    that reads the batch fetches its leaves and challenges it; the batch is voided, the executor's stake slashed,
    the batch's amount back in the payer's deposit, and the executor gets no new voucher."""

    async def main() -> None:
        p = Pair(batch_jobs=3)
        await p.start()
        stake = p.executor.market.node().stake
        if how == "queued":  # the executor's own tree (the one it serves) has the other root
            jobs, bid = await settled(p, 3, tampered=1)
            deposit = p.payer.market.deposit_of()[0] + p.payer.market.batch(bid)["amount"]
        else:  # settled through the market directly with a tampered tree, which the executor then serves
            send = p.executor.market.settle_batch

            def tamper(v: Voucher, t: ResultsTree) -> Any:
                bad = ResultsTree([(j, h("tampered") if k == 1 else r) for k, (j, r) in enumerate(t.results)])
                p.tree_answer = tree_to_bytes(bad)
                return send(v, bad)

            p.executor.market.settle_batch = tamper
            jobs, bid = await settled(p, 3)
            deposit = p.payer.market.deposit_of()[0] + p.payer.market.batch(bid)["amount"]
        amount = p.payer.market.batch(bid)["amount"]
        await p.payer.poll()
        assert p.trees_asked == [bid]
        assert p.payer.market.batch(bid)["state"] == VOIDED
        assert p.payer.market.deposit_of()[0] == deposit
        assert p.executor.market.node().stake < stake
        assert p.payer.vouchers.audits.challenged == {bid: jobs[1]}
        assert any("challenged" in e for e in p.payer_errors)
        room = p.payer.vouchers.room
        updates = await p.payer.poll()  # reads BatchVoided
        assert (await p.payer.job(jobs[0]))["state"] == "voided"
        assert p.payer.vouchers.room == room + amount  # the amount is back in the deposit: free for new jobs
        assert not [u for u in updates if u.kind == "job_settled"]
        s = spec(9, p.payer.chain.now() + 3000)
        await p.payer.fund_job(s, b"")
        assert await p.payer.vouchers.issue(s.job_id, p.executor.market.account) is None

    run(main)


@pytest.mark.parametrize(
    "answer, why",
    [
        (None, "gave no batch tree"),
        (tree_to_bytes(ResultsTree([(h("x"), h("y"))])), "does not hash to the batch's results root"),
        (b"\x01" * 63, "malformed"),
        (b"\x01" * 64 * (MAX_TREE_LEAVES + 1), "too large"),
    ],
)
def test_a_batch_that_cannot_be_verified_is_reported_and_its_executor_gets_no_voucher(
    answer: bytes | None, why: str
) -> None:
    async def main() -> None:
        p = Pair(batch_jobs=2)
        await p.start()
        if answer is None:
            p.payer.vouchers.fetcher = None  # no way to reach the executor
        else:
            p.tree_answer = answer
        _, bid = await settled(p, 2, tampered=0)
        await p.payer.poll()
        assert p.payer.market.batch(bid)["state"] == PENDING  # nothing proven
        (err,) = p.payer_errors
        assert f"batch {bid}" in err and "could not be verified" in err and why in err
        executor = p.executor.market.account
        assert executor in p.payer.vouchers.audits.blocked
        # tried again later (backing off), reported once
        p.payer.vouchers.audits.pending[bid].next_try = 0.0
        await p.payer.poll()
        assert len(p.payer_errors) == 1
        # no new voucher for this executor: its job stays unpaid, with the reason
        p.executor.vouchers.fetch_timeout = 0.0
        with pytest.raises(VoucherError, match="gave no voucher"):
            await p.job(5)
        (jid,) = [j for j, st in p.payer.vouchers.state.items() if st["state"] == "open"]
        assert "could not be verified" in (await p.payer.job(jid))["reason"]

    run(main)


@pytest.mark.parametrize("tampered", [False, True])
def test_an_audit_whose_window_is_too_short_to_challenge_still_verifies(tampered: bool) -> None:
    """Under ``voucher_audit_margin_s`` left in the window (the testnet's window is 1 s): the payer still fetches
    the tree; an honest batch verifies (vouchers go on), one contradicting an attestation blocks its executor and
    is reported, not challenged. Before, the audit failed at once without a fetch and blocked the executor."""

    async def main() -> None:
        p = Pair(batch_jobs=2)
        await p.start()
        p.payer.vouchers.audits.margin = 10**9
        jobs, bid = await settled(p, 2, tampered=0 if tampered else None)
        if not tampered:
            del p.payer.vouchers.attested[jobs[0]]  # (not rebuilt: its audit fetches the tree)
        await p.payer.poll()
        assert p.trees_asked == [bid] and p.payer.market.batch(bid)["state"] == PENDING
        assert not p.payer.vouchers.audits.pending
        if not tampered:
            assert not p.payer.vouchers.audits.blocked and p.payer_errors == []
            assert "seq 3" in (await p.job(5))[1]
            return
        (err,) = p.payer_errors
        assert "not challenged" in err and "challenge window ends" in err
        assert p.executor.market.account in p.payer.vouchers.audits.blocked

    run(main)


@pytest.mark.parametrize("when", ["fetch after the payment", "read with its payment", "tried before"])
def test_a_batch_audited_after_its_executor_was_paid_still_verifies(when: str) -> None:
    """With a short challenge window (the testnet's is 1 s) the executor finalizes a batch, and is paid, before
    the payer's audit fetches its tree (or before the payer even reads the batch, or after a try that found no
    executor): the executor still serves the tree (``voucher_tree_keep_s``), the batch verifies and vouchers go
    on to that executor. Before, the executor forgot the tree once it finalized the batch and the payer dropped
    the audit of a paid batch: it could not verify the batch, and signed no new voucher to that executor."""

    async def main() -> None:
        p = Pair(batch_jobs=2)
        await p.start()
        jobs, bid = await settled(p, 2)
        del p.payer.vouchers.attested[jobs[0]]  # (not rebuilt: its audit fetches the tree)
        fetch = p.payer.vouchers.fetcher
        window = p.payer.market.params().challenge_window + 1

        async def late(node: bytes, name: str) -> bytes | None:
            p.payer.chain.advance(window)
            await p.executor.poll()  # finalized meanwhile
            assert p.payer.market.batch(bid)["state"] == PAID
            return await fetch(node, name)  # type: ignore[misc]

        if when == "fetch after the payment":
            p.payer.vouchers.fetcher = late
        elif when == "read with its payment":
            p.payer.chain.advance(window)
            await p.executor.poll()
        else:
            p.payer.vouchers.fetcher = None
            await p.payer.poll()
            assert p.executor.market.account in p.payer.vouchers.audits.blocked
            p.payer.chain.advance(window)
            await p.executor.poll()
            p.payer.vouchers.fetcher = fetch
            await p.payer.poll()  # reads BatchPaid: the audit goes on
            p.payer.vouchers.audits.pending[bid].next_try = 0.0
        await p.payer.poll()
        assert p.trees_asked == [bid] and p.payer.market.batch(bid)["state"] == PAID
        assert not p.payer.vouchers.audits.blocked and not p.payer.vouchers.audits.pending
        assert len(p.payer_errors) == (1 if when == "tried before" else 0)  # (its first try's report)
        await p.payer.poll()
        assert (await p.payer.job(jobs[0]))["state"] == "settled"
        assert "seq 3" in (await p.job(5))[1]

    run(main)


def test_a_tampered_batch_read_with_its_payment_blocks_its_executor() -> None:
    """A batch whose leaf contradicts an attestation, read by the payer only once it was paid (too late to
    challenge): the tree the executor still serves proves it, and its executor gets no new voucher. Before, the
    audit of a batch read with its BatchPaid was dropped, and the executor went on getting vouchers."""

    async def main() -> None:
        p = Pair(batch_jobs=2)
        await p.start()
        jobs, bid = await settled(p, 2, tampered=1)
        p.payer.chain.advance(p.payer.market.params().challenge_window + 1)
        await p.executor.poll()
        await p.payer.poll()
        assert p.trees_asked == [bid] and p.payer.market.batch(bid)["state"] == PAID
        (err,) = p.payer_errors
        assert f"batch {bid}" in err and "not challenged" in err
        assert "contradicts" in p.payer.vouchers.audits.blocked[p.executor.market.account]
        p.executor.vouchers.fetch_timeout = 0.0
        with pytest.raises(VoucherError, match="gave no voucher"):
            await p.job(5)

    run(main)


def test_a_batch_paid_long_ago_is_not_audited_after_a_restart() -> None:
    """A paid batch read again (a restart without a checkpoint) whose window closed more than
    ``voucher_tree_keep_s`` ago is not audited (its executor no longer serves its tree): nothing fetched, nobody
    blocked."""

    async def main() -> None:
        p = Pair(batch_jobs=2)
        await p.start()
        jobs, bid = await settled(p, 2)
        del p.payer.vouchers.attested[jobs[0]]
        p.payer.chain.advance(p.payer.market.params().challenge_window + 601)
        await p.executor.poll()
        await p.payer.poll()
        assert p.trees_asked == [] and not p.payer.vouchers.audits.pending
        assert not p.payer.vouchers.audits.blocked and p.payer_errors == []

    run(main)


def test_a_batch_verified_after_a_failed_fetch_unblocks_its_executor() -> None:
    """The payer lacks an attestation (its root cannot be rebuilt): it fetches the tree; the first try finds
    no executor, the next one verifies the batch, and vouchers go to that executor again."""

    async def main() -> None:
        p = Pair(batch_jobs=2)
        await p.start()
        jobs, bid = await settled(p, 2)
        del p.payer.vouchers.attested[jobs[0]]
        fetcher, p.payer.vouchers.fetcher = p.payer.vouchers.fetcher, None
        await p.payer.poll()
        assert p.executor.market.account in p.payer.vouchers.audits.blocked and len(p.payer_errors) == 1
        p.payer.vouchers.fetcher = fetcher
        p.payer.vouchers.audits.pending[bid].next_try = 0.0
        await p.payer.poll()
        assert p.trees_asked == [bid] and bid in p.payer.vouchers.audits.verified
        assert not p.payer.vouchers.audits.blocked and p.payer.market.batch(bid)["state"] == PENDING
        assert "seq 3" in (await p.job(5))[1]

    run(main)


def test_the_executor_serves_the_tree_of_its_pending_and_lately_paid_batches_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> None:
        p = Pair(batch_jobs=2)
        await p.start()
        jobs, bid = await settled(p, 2)
        served = p.executor.vouchers.batch_tree(bid)
        assert (
            served is not None and tree_from_bytes(served).root == p.payer.market.batch(bid)["results_root"]
        )
        assert [j for j, _ in tree_from_bytes(served).results] == jobs
        # the agent serves it under its fetch name (Agent._provide)
        agent = SimpleNamespace(vouchers=p.executor.vouchers)
        assert await Agent._provide(agent, batch_tree_name(bid)) == served  # type: ignore[arg-type]
        await p.payer.poll()
        assert p.payer.vouchers.batch_tree(bid) is None  # settled on its deposit, not by it
        assert p.executor.vouchers.batch_tree(bid + 1) is None
        p.payer.chain.advance(p.payer.market.params().challenge_window + 1)
        await p.executor.poll()  # paid: still served voucher_tree_keep_s (a payer's audit may come after it)
        assert p.payer.market.batch(bid)["state"] == PAID
        assert p.executor.vouchers.batch_tree(bid) == served
        later = time.monotonic() + p.executor.vouchers.tree_keep_s
        monkeypatch.setattr(voucherlink.time, "monotonic", lambda: later)
        assert p.executor.vouchers.batch_tree(bid) is None

    run(main)


def test_a_restarted_executor_still_serves_a_paid_batchs_tree_to_a_late_audit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The executor finalizes a batch (paid), restarts, and only then does the payer's audit fetch its tree: the
    restarted executor still serves it (journaled ``voucher_tree_keep_s``), the batch verifies and its executor
    is not blocked; restarted ``voucher_tree_keep_s`` later, it no longer serves it and its journal row is gone.
    Before, the kept trees were in memory only: the restarted executor served nothing and the payer blocked it."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=2)
        await p.start()
        jobs, bid = await settled(p, 2)
        del p.payer.vouchers.attested[jobs[0]]  # (not rebuilt: its audit fetches the tree)
        p.pay_out()
        await p.executor.poll()  # finalized
        await p.executor.poll()  # reads BatchPaid: the batch is done here
        assert p.payer.market.batch(bid)["state"] == PAID and not p.executor.vouchers.batches
        p.executor_journal.commit()  # (the agent commits once a loop turn)
        await p.restart_executor()
        await p.payer.poll()
        assert p.trees_asked == [bid] and not p.payer.vouchers.audits.pending
        assert not p.payer.vouchers.audits.blocked and p.payer_errors == []
        later = time.time() + p.executor.vouchers.tree_keep_s + 1
        monkeypatch.setattr(voucherlink.time, "time", lambda: later)
        await p.restart_executor()
        assert p.executor.vouchers.batch_tree(bid) is None
        await p.executor.poll()  # (its journal writes: drain())
        p.executor_journal.commit()
        assert p.executor_journal.voucher_trees() == []

    run(main)


@pytest.mark.parametrize("how", ["finalized by another", "receipt lost"])
def test_a_batch_paid_by_another_finalize_still_has_its_tree_served(how: str) -> None:
    """Someone else finalizes the executor's batch (its own finalizeBatch then fails with BatchNotPending), or the
    executor's own finalizeBatch is mined but its receipt lost (it reads the BatchPaid first): the executor still
    serves the paid batch's tree ``voucher_tree_keep_s`` to the payer's audit, which verifies it. Before, it
    dropped the tree and the payer blocked that honest executor."""

    async def main() -> None:
        p = Pair(batch_jobs=2)
        await p.start()
        jobs, bid = await settled(p, 2)
        del p.payer.vouchers.attested[jobs[0]]  # (not rebuilt: its audit fetches the tree)
        p.payer.chain.advance(p.payer.market.params().challenge_window + 1)
        send = p.executor.market.finalize_batch
        if how == "finalized by another":
            p.payer.market.finalize_batch(bid)
        else:

            def lost(batch_id: int) -> Any:
                send(batch_id)
                raise ChainError("timeout", "no receipt")

            p.executor.market.finalize_batch = lost  # type: ignore[method-assign]
        await p.executor.poll()  # reads BatchPaid
        p.executor.market.finalize_batch = send  # type: ignore[method-assign]
        assert p.payer.market.batch(bid)["state"] == PAID and not p.executor.vouchers.batches
        await p.payer.poll()
        assert p.trees_asked == [bid] and not p.payer.vouchers.audits.pending
        assert not p.payer.vouchers.audits.blocked and p.payer_errors == []

    run(main)


def test_a_batch_paid_while_its_executor_was_down_still_has_its_tree_served(tmp_path: Path) -> None:
    """The executor restarts after its batch was finalized by someone else while it was down: it reads the
    BatchPaid again and still serves the batch's tree to the payer's audit, which verifies it."""

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=2)
        await p.start()
        jobs, bid = await settled(p, 2)
        del p.payer.vouchers.attested[jobs[0]]  # (not rebuilt: its audit fetches the tree)
        p.executor_journal.commit()
        p.pay_out()
        p.payer.market.finalize_batch(bid)
        await p.restart_executor()
        await p.executor.poll()  # finds it paid, reads BatchPaid again
        assert not p.executor.vouchers.batches
        await p.payer.poll()
        assert p.trees_asked == [bid] and not p.payer.vouchers.audits.pending
        assert not p.payer.vouchers.audits.blocked and p.payer_errors == []

    run(main)


def test_the_paid_trees_an_executor_keeps_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trees of paid batches go ``voucher_tree_keep_s`` after their payment, the oldest first past
    KEPT_TREE_BYTES (from the journal too); none is kept with ``voucher_tree_keep_s = 0``."""
    monkeypatch.setattr(voucherlink, "KEPT_TREE_BYTES", 3 * 128)
    journal = Journal(tmp_path / "j.sqlite")
    writes = SimpleNamespace(append=lambda op: op(journal))  # (drain() writes them: here at once)
    link = SimpleNamespace(tree_keep_s=60.0, _paid_trees={}, _writes=writes)
    link._trim_trees = lambda: voucherlink.VoucherLink._trim_trees(link)  # type: ignore[arg-type]
    keep = voucherlink.VoucherLink._keep_tree
    trees = {bid: ResultsTree([(h(f"j{bid}"), h("a")), (h(f"k{bid}"), h("b"))]) for bid in range(5)}
    for bid in range(4):
        keep(link, bid, trees[bid])  # type: ignore[arg-type]
    assert list(link._paid_trees) == [1, 2, 3]
    assert link._paid_trees[3][1] == tree_to_bytes(trees[3])
    assert [(b, lv) for b, _, lv in journal.voucher_trees()] == [
        (b, link._paid_trees[b][1]) for b in (1, 2, 3)
    ]
    later = time.monotonic() + 61
    monkeypatch.setattr(voucherlink.time, "monotonic", lambda: later)
    keep(link, 4, trees[4])  # type: ignore[arg-type]
    assert list(link._paid_trees) == [4] and [b for b, _, _ in journal.voucher_trees()] == [4]
    link.tree_keep_s = 0.0
    link._paid_trees = {}
    keep(link, 0, trees[0])  # type: ignore[arg-type]
    assert link._paid_trees == {}


def test_batch_tree_names_and_answers_are_bounded() -> None:
    assert parse_batch_tree_name(batch_tree_name(12)) == 12
    for bad in ("vbatch/", "vbatch/-1", "vbatch/1/2", "vbatch/" + "9" * 21, "voucher/12", "vbatch/1a"):
        assert parse_batch_tree_name(bad) is None
    tree = ResultsTree([(h("a"), h("b")), (h("c"), h("d"))])
    assert tree_from_bytes(tree_to_bytes(tree)).root == tree.root
    for bad, why in ((b"", "malformed"), (b"\x00" * 65, "malformed"), (b"\x00" * 64 * 3, "too large")):
        with pytest.raises(AuditError, match=why):
            tree_from_bytes(bad, max_leaves=2)


@pytest.mark.parametrize("checkpoints", [False, True])
@pytest.mark.parametrize("when", ["before the batch is read", "audit in progress"])
def test_a_restarted_payer_audits_with_the_attestations_it_journaled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checkpoints: bool, when: str
) -> None:
    """The payer crashes after serving the vouchers (with the executor's attestations), before it read the
    tampered batch or while its audit could not fetch the tree yet: restarted (its batches from the events read
    again, or from its chain checkpoint), it still challenges the batch."""
    monkeypatch.setattr(JournaledPair, "checkpoints", checkpoints)

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=2)
        await p.start()
        jobs, bid = await settled(p, 2, tampered=1)
        if when == "audit in progress":
            p.payer.vouchers.fetcher = None
            await p.payer.poll()
            assert bid in p.payer.vouchers.audits.pending and len(p.payer_errors) == 1
        await p.restart_payer()  # (its first poll audits the batch)
        assert p.payer.market.batch(bid)["state"] == VOIDED
        assert p.payer.vouchers.audits.challenged == {bid: jobs[1]}

    run(main)


@pytest.mark.parametrize("tampered", [True, False], ids=["tampered", "honest"])
@pytest.mark.parametrize("checkpoints", [False, True])
def test_a_restarted_payer_goes_on_with_the_audit_of_a_paid_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checkpoints: bool, tampered: bool
) -> None:
    """The payer's audit of a batch could not fetch the tree before the batch was paid (its executor blocked
    meanwhile), and the payer crashes with the audit unfinished: restarted (the batch's events read again, or its
    chain checkpoint), it goes on with the audit (journaled with the jobs' attestations); the tree the executor
    still serves proves a tampered batch's contradiction and that executor stays blocked, or verifies an honest
    one. Before, the payer's rows of a paid batch's jobs (with their attestations) went with its payment, and a
    checkpoint held only the batches not paid yet: the restarted payer forgot the audit, or found nothing to
    contradict, and the tampering executor got vouchers again."""
    monkeypatch.setattr(JournaledPair, "checkpoints", checkpoints)

    async def main() -> None:
        p = JournaledPair(tmp_path, batch_jobs=2)
        await p.start()
        jobs, bid = await settled(p, 2, tampered=1 if tampered else None)
        if not tampered:
            del p.payer.vouchers.attested[jobs[0]]  # (not rebuilt: its audit fetches the tree)
        p.payer.vouchers.fetcher = None
        await p.payer.poll()  # the audit finds no executor: blocked
        executor = p.executor.market.account
        assert bid in p.payer.vouchers.audits.pending and executor in p.payer.vouchers.audits.blocked
        p.payer.chain.advance(p.payer.market.params().challenge_window + 1)
        await p.executor.poll()  # finalized
        await p.payer.poll()  # reads BatchPaid: the audit goes on (its next try not due yet)
        assert p.payer.market.batch(bid)["state"] == PAID and p.payer.vouchers.audits.pending[bid].paid
        p.payer_journal.commit()  # (the agent commits once a turn: the paid jobs' rows are gone)
        assert [row[0] for row in p.payer_journal.voucher_audits()] == [bid]
        await p.restart_payer()  # (its first poll audits the batch)
        # (without a checkpoint, the batch's events read again audit it once more)
        assert set(p.trees_asked) == {bid} and not p.payer.vouchers.audits.pending
        if tampered:
            assert "contradicts" in p.payer.vouchers.audits.blocked[executor]
        else:
            assert not p.payer.vouchers.audits.blocked
            assert "seq 3" in (await p.job(5))[1]  # vouchers go on to that executor
        assert p.payer_journal.voucher_audits() == []  # (ended: forgotten)

    run(main)


def test_a_verified_batch_nobody_finalizes_is_forgotten_once_its_challenge_window_closed() -> None:
    """Nobody finalizes the payer's verified batches (the executor went away): each is forgotten once its challenge
    window has closed on chain (nothing can void it any more), not before; a batch still challengeable stays,
    and so does an audit in progress. Before, every verified batch stayed until it was paid or voided."""

    async def main() -> None:
        p = Pair(batch_jobs=2)
        await p.start()
        _, first = await settled(p, 2)
        await p.payer.poll()
        p.payer.chain.advance(100)  # (the second batch's window closes 100 s after the first's)
        jobs, second = await settled(p, 2)
        del p.payer.vouchers.attested[jobs[0]]  # (not rebuilt: its audit fetches the tree)
        fetcher, p.payer.vouchers.fetcher = p.payer.vouchers.fetcher, None
        await p.payer.poll()
        audits = p.payer.vouchers.audits
        assert set(audits.verified) == {first} and second in audits.pending
        release = p.payer.market.batch(first)["release_at"]
        p.payer.chain.advance(release - 1 - p.payer.chain.now())
        await p.payer.poll()
        assert set(audits.verified) == {first}  # one second left to challenge it
        p.payer.chain.advance(1)
        await p.payer.poll()
        assert not audits.verified and second in audits.pending
        assert p.payer.market.batch(first)["state"] == PENDING  # not paid: forgotten for its window alone
        p.payer.vouchers.fetcher = fetcher
        audits.pending[second].next_try = 0.0
        await p.payer.poll()
        assert set(audits.verified) == {second}  # still challengeable: kept

    run(main)
