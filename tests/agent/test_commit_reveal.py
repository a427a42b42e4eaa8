"""One transaction for a commit and its reveal: the agent pairs NodeCore's commit with the reveal it asks for in the
same step (this node's commitment completes the k), and ChainLink sends them as one ``commitReveal``; when the chain
refuses it (another commitment still missing, or this one already on chain after a restart) it sends the two."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from sandrun_p2p.agent.chainlink import ChainLink
from sandrun_p2p.agent.config import AgentConfig
from sandrun_p2p.agent.journal import Journal
from sandrun_p2p.agent.runtime import Agent
from sandrun_p2p.protocol import messages as m
from sandrun_p2p.protocol.events import SubmitTx
from sandrun_p2p.protocol.identity import NodeKey
from sandrun_p2p.protocol.jobspec import JobSpec
from sandrun_p2p.protocol.verification import commitment

pytestmark = pytest.mark.timeout(120)

ROOT, SALT, USAGE, PRICE = b"\xaa" * 32, b"\x5a" * 32, 1000, 10**15
CAPS = {"cpus": 2, "mem_mb": 4096, "disk_mb": 1000, "gpus": [], "enforced": {"network": True}}


# ------------------------------------------------------------------------------- the agent pairs the two


class PairingChain:
    """A chain port that takes ``commit_reveal`` (nothing is sent: the test reads the agent's queue)."""

    kind = "none"
    commit_reveal = True


class PlainChain:
    kind = "none"


class NoStore:
    fetcher = None


KEY = NodeKey.from_seed(b"\x01" * 32)


def journal_with_result(tmp_path: Path) -> bytes:
    """The journal a node killed after its k = 1 execution leaves: the job and its stored result; the job id."""
    origin = NodeKey.from_seed(b"\x02" * 32)
    spec = JobSpec.from_dict(
        {
            "code_cid": "bafkreiexamplecode",
            "manifest": {"entrypoint": "main.py"},
            "redundancy": 1,
            "deadline": int(time.time()) + 600,
            "nonce": b"pair",
        }
    )
    body = {"spec": spec.to_dict(), "seed": b"\x01" * 32, "origin_ts": int(time.time() * 1000)}
    j = Journal(tmp_path / "journal.sqlite")
    j.add_message(spec.job_id, m.JOB, m.encode(origin, m.JOB, body, 1, int(time.time() * 1000)))
    j.execution_started(spec.job_id)
    j.execution_done(spec.job_id, ROOT, SALT, "bafkreitrace", "bafyresult", USAGE)
    j.close()
    return spec.job_id


def restarted(tmp_path: Path, chain: Any) -> tuple[Agent, list[SubmitTx]]:
    """An agent started on that journal (replayed, not run): it and the transactions it queued."""
    cfg = AgentConfig(data_dir=tmp_path, mdns=False, core={"advert_interval": 5.0})
    agent = Agent(cfg, key=KEY, executor=None, store=NoStore(), chain=chain, exec_caps=CAPS)
    agent.replay_journal()
    out = []
    while True:
        try:
            out.append(agent._tx_recv.receive_nowait())
        except trio.WouldBlock:
            return agent, out


def queued_after_restart(tmp_path: Path, chain: Any) -> tuple[list[SubmitTx], list[str]]:
    jid = journal_with_result(tmp_path)
    agent, txs = restarted(tmp_path, chain)
    try:
        return txs, [t["kind"] for t in agent.journal.txs(jid)]
    finally:
        agent.journal.close()


def test_commit_and_reveal_of_one_step_become_one_transaction(tmp_path: Path) -> None:
    txs, journaled = queued_after_restart(tmp_path, PairingChain())
    assert [t.kind for t in txs] == ["commit_reveal", "settle"] and journaled == ["commit_reveal", "settle"]
    pair = txs[0].args
    assert pair["commit"] == {
        "commitment": commitment(txs[0].job_id, KEY.node_id, ROOT, SALT),
        "usage_wei": USAGE,
    }
    assert pair["reveal"] == {"root": ROOT, "salt": SALT, "usage_wei": USAGE}


def test_a_port_without_commit_reveal_gets_the_two(tmp_path: Path) -> None:
    txs, _ = queued_after_restart(tmp_path, PlainChain())
    assert [t.kind for t in txs] == ["commit", "reveal", "settle"]


# ------------------------------------------------------------------------- ChainLink on the embedded chain


def executor_link(k: int) -> tuple[ChainLink, NodeKey, bytes, list[str]]:
    """An executor's link with a funded job of redundancy ``k``; the methods of its transactions from now on."""
    link = ChainLink({})
    key = NodeKey.from_seed(b"\x07" * 32)
    jid = bytes([k]) * 32
    link.market.as_(link.chain.dev_signers()[4]).post_job(jid, k, k, link.chain.now() + 500, PRICE)
    return link, key, jid, count_sends(link)


def count_sends(link: ChainLink) -> list[str]:
    """The methods of the transactions ``link``'s account lands from now on (registration aside)."""
    sent: list[str] = []
    real_send = link.chain.send

    def send(signer: Any, tx: dict, **kw: Any) -> dict:
        receipt = real_send(signer, tx, **kw)  # (raises on a revert: only what landed counts)
        if signer.address == link.signer.address and kw.get("method") != "register":
            sent.append(kw.get("method", "?"))
        return receipt

    link.chain.send = send  # type: ignore[method-assign]
    return sent


def pair(key: NodeKey, jid: bytes) -> SubmitTx:
    c = {"commitment": commitment(jid, key.node_id, ROOT, SALT), "usage_wei": USAGE}
    return SubmitTx(
        "commit_reveal", jid, {"commit": c, "reveal": {"root": ROOT, "salt": SALT, "usage_wei": USAGE}}
    )


def test_k1_executor_sends_one_transaction_that_settles_and_pays() -> None:
    link, key, jid, sent = executor_link(1)

    async def main() -> None:
        await link.join(key.node_id)
        out = await link.submit(key.node_id, pair(key, jid))
        assert out.startswith("0x"), out
        assert sent == ["commitReveal"]
        info = link.market.job(jid)
        assert info.state_name == "settled" and info.escrow == PRICE - USAGE
        assert link.market.node().earnings == USAGE
        # the settle step that follows knows the job closed: no transaction, no read
        assert await link.submit(key.node_id, SubmitTx("settle", jid, {"reveals": {}})) == "already closed"
        await link.poll()
        assert (await link.job(jid))["paid"] == {key.node_id.hex(): USAGE}
        assert sent == ["commitReveal"]

    trio.run(main)


def test_not_the_kth_on_chain_falls_back_to_commit_then_reveal() -> None:
    """k = 2 and the other commitment is not on chain yet: NotLastCommitment, then commit and reveal. The other
    executor's commitment lands right after this one's commit (in the commit's own call: no waiting)."""
    link, key, jid, sent = executor_link(2)
    other = link.market.as_(link.chain.dev_signers()[2])
    other_key = NodeKey.from_seed(b"\x08" * 32)
    other.register(other_key.node_id, link.stake)
    real_commit = link.market.commit

    def commit_then_other(*a: Any) -> Any:
        r = real_commit(*a)
        other.commit(jid, commitment(jid, other_key.node_id, ROOT, SALT), USAGE)
        return r

    link.market.commit = commit_then_other  # type: ignore[method-assign]

    async def main() -> None:
        await link.join(key.node_id)
        out = await link.submit(key.node_id, pair(key, jid))
        assert out.startswith("commitReveal refused (NotLastCommitment): commit 0x") and ", reveal 0x" in out
        assert sent == ["commit", "reveal"]
        info = link.market.job(jid)
        assert (info.state_name, info.commits, info.revealed_mask) == ("open", 2, 0b01)

    trio.run(main)


def test_after_a_restart_a_commitment_on_chain_is_revealed_and_nothing_is_sent_twice() -> None:
    """Killed between its commit and its reveal (the two-transaction path), the restarted node's pair is refused
    (the position is taken): its commit is refused too, the reveal settles. Once settled, nothing is sent."""
    link, key, jid, sent = executor_link(1)

    async def main() -> None:
        await link.join(key.node_id)
        link.market.commit(jid, commitment(jid, key.node_id, ROOT, SALT), USAGE)
        sent.clear()
        link.positions.clear()  # (the restarted process knows nothing)
        out = await link.submit(key.node_id, pair(key, jid))
        assert out.startswith("commitReveal refused (CommitClosed): commit failed (CommitClosed), reveal 0x")
        assert sent == ["reveal"] and link.market.job(jid).state_name == "settled"
        # killed after the settling transaction: the pair again, nothing leaves
        out = await link.submit(key.node_id, pair(key, jid))
        closed = "reveal: job already closed on chain"
        assert out == f"commitReveal refused (JobNotOpen): commit failed (JobNotOpen), {closed}"
        assert sent == ["reveal"]
        assert link.market.node().earnings == USAGE

    trio.run(main)


def test_an_agent_killed_before_or_after_its_commit_reveal_settles_the_job_once(tmp_path: Path) -> None:
    """The agent on the embedded chain, from its journal: killed after its execution, the restarted node sends
    the stored result as one commitReveal (settled, paid); killed again after that, the next restart queues the
    pair again and the chain refuses it: nothing lands twice."""
    jid = journal_with_result(tmp_path)
    first = ChainLink({})
    first.market.as_(first.chain.dev_signers()[4]).post_job(jid, 1, 1, first.chain.now() + 500, PRICE)
    sent = count_sends(first)

    async def main() -> None:
        await first.join(KEY.node_id)
        for link in (first, ChainLink({}, shared=first)):  # (a new process: a new link, the same account)
            agent, txs = restarted(tmp_path, link)
            try:
                assert [t.kind for t in txs] == ["commit_reveal", "settle"]
                for tx in txs:
                    await agent._send_tx(tx)
                done = [t for t in agent.journal.txs(jid) if t["status"] != "queued"][-2:]
            finally:
                agent.journal.close()
            assert [(t["kind"], t["status"]) for t in done] == [("commit_reveal", "ok"), ("settle", "ok")]
            if link is first:
                assert done[0]["detail"].startswith("0x")
            else:
                assert done[0]["detail"].startswith("commitReveal refused (JobNotOpen)")
            assert sent == ["commitReveal"]
            assert first.market.job(jid).state_name == "settled"
            assert first.market.node().earnings == USAGE

    trio.run(main)


def k1_jobs(n: int, tag: int) -> tuple[ChainLink, NodeKey, list[bytes], Any]:
    """An executor's link, ``n`` funded k = 1 jobs and the client's market that posted them."""
    link = ChainLink({})
    poster = link.market.as_(link.chain.dev_signers()[4])
    jids = [bytes([tag + i]) * 32 for i in range(n)]
    for jid in jids:
        poster.post_job(jid, 1, 1, link.chain.now() + 500, PRICE)
    return link, NodeKey.from_seed(b"\x07" * 32), jids, poster


def test_the_commit_reveals_of_jobs_ready_together_go_in_one_transaction() -> None:
    """Four k = 1 jobs whose executions end in the same turn: one commitRevealMany settles all four (each job's
    own outcome in the answer); a fifth job alone after that gets a plain commitReveal."""
    link, key, jids, _ = k1_jobs(5, 0x40)
    sent = count_sends(link)
    outs: dict[bytes, str] = {}

    async def main() -> None:
        await link.join(key.node_id)

        async def one(jid: bytes) -> None:
            outs[jid] = await link.submit(key.node_id, pair(key, jid))

        async with trio.open_nursery() as nursery:
            for jid in jids[:4]:
                nursery.start_soon(one, jid)
        assert sent == ["commitRevealMany"]
        assert len({outs[j] for j in jids[:4]}) == 1 and outs[jids[0]].startswith("0x")  # one transaction
        assert all(link.market.job(j).state_name == "settled" for j in jids[:4])
        assert link.closed_here >= set(jids[:4])  # each job's settle step knows its job closed
        await one(jids[4])
        assert sent == ["commitRevealMany", "commitReveal"]
        assert link.market.node().earnings == 5 * USAGE

    trio.run(main)


def test_a_refused_batch_sends_each_job_alone() -> None:
    """One job of the batch was cancelled (JobNotOpen): the batch reverts in its estimate, then each job goes
    alone: the others settle, the cancelled one fails as it does alone; nothing lands twice."""
    link, key, jids, poster = k1_jobs(3, 0x50)
    poster.cancel_job(jids[1])
    sent = count_sends(link)
    outs: dict[bytes, str] = {}

    async def main() -> None:
        await link.join(key.node_id)

        async def one(jid: bytes) -> None:
            try:
                outs[jid] = await link.submit(key.node_id, pair(key, jid))
            except ValueError as e:  # (as when it is sent alone: no commitment of this node to reveal)
                outs[jid] = f"failed: {e}"

        async with trio.open_nursery() as nursery:
            for jid in jids:
                nursery.start_soon(one, jid)
        assert sorted(sent) == ["commitReveal", "commitReveal"]  # (the refused batch never landed)
        assert [link.market.job(j).state_name for j in jids] == ["settled", "failed", "settled"]
        assert outs[jids[0]].startswith("0x") and outs[jids[2]].startswith("0x")
        assert outs[jids[1]] == "failed: this node has no commitment on chain for the job"

    trio.run(main)


def test_a_sender_cancelled_before_its_batch_left_leaves_the_batch_to_the_others() -> None:
    """The task that took the batch is cancelled while it waits for a transaction slot: its job is not sent, and
    the jobs it had gathered go out in the next batch, sent by their own tasks."""
    link, key, jids, _ = k1_jobs(3, 0x60)
    sent = count_sends(link)
    outs: dict[bytes, str] = {}
    scopes: dict[bytes, trio.CancelScope] = {}
    task_of: dict[Any, bytes] = {}

    async def main() -> None:
        await link.join(key.node_id)

        async def one(jid: bytes) -> None:
            task_of[trio.lowlevel.current_task()] = jid
            with trio.CancelScope() as scopes[jid]:
                outs[jid] = await link.submit(key.node_id, pair(key, jid))

        await link._lock.acquire()  # every transaction slot taken
        async with trio.open_nursery() as nursery:
            for jid in jids:
                nursery.start_soon(one, jid)
            await trio.testing.wait_all_tasks_blocked()
            assert not link._cr_queue  # one task took all three into its batch ...
            leader = task_of[link._cr_lock.statistics().owner]
            scopes[leader].cancel()  # ... and is cancelled before a slot frees
            await trio.testing.wait_all_tasks_blocked()
            link._lock.release()
        others = [j for j in jids if j != leader]
        assert sent == ["commitRevealMany"] and set(outs) == set(others)
        assert link.market.job(leader).state_name == "open"
        assert all(link.market.job(j).state_name == "settled" for j in others)

    trio.run(main)


def test_a_sender_cancelled_while_queued_is_not_sent_later() -> None:
    """A job whose task is cancelled while it waits for the batch in flight leaves the queue: the next batch
    does not carry it."""
    link, key, jids, _ = k1_jobs(3, 0x70)
    sent = count_sends(link)
    scopes: dict[bytes, trio.CancelScope] = {}

    async def main() -> None:
        await link.join(key.node_id)

        async def one(jid: bytes) -> None:
            with trio.CancelScope() as scopes[jid]:
                await link.submit(key.node_id, pair(key, jid))

        await link._lock.acquire()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, jids[0])
            await trio.testing.wait_all_tasks_blocked()  # its batch (itself) waits for a slot
            for jid in jids[1:]:
                nursery.start_soon(one, jid)
            await trio.testing.wait_all_tasks_blocked()  # queued behind it
            scopes[jids[1]].cancel()
            await trio.testing.wait_all_tasks_blocked()
            link._lock.release()
        assert sent == ["commitReveal", "commitReveal"]  # jids[0] alone, then jids[2] alone
        assert [link.market.job(j).state_name for j in jids] == ["settled", "open", "settled"]

    trio.run(main)
