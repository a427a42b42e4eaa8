"""A restarted agent resumes following the chain from the checkpoint in its journal (chainlink.py "Restarts"):
it asks ``eth_getLogs`` for no block before it, yet knows the nodes, their stakes and the open jobs' seeds and
commitments as a full replay would, and settles a job committed before the restart. A checkpoint of another
deployment, one past the chain's head, or one that does not parse gives a log line and a full replay.

Everything runs in process on one embedded chain (deterministic node keys, no sleeps); a restart is a crash of
the agent: its journal's uncommitted transaction is lost, a new ChainLink and Agent open the same data dir.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio

from sandrun_p2p.agent.chainlink import ChainLink
from sandrun_p2p.agent.config import AgentConfig
from sandrun_p2p.agent.runtime import Agent
from sandrun_p2p.chain import Opening, deploy
from sandrun_p2p.protocol.claiming import widen_seed
from sandrun_p2p.protocol.events import SubmitTx
from sandrun_p2p.protocol.identity import NodeKey
from sandrun_p2p.protocol.verification import commitment

from .test_journal_resume import CAPS, NoExecutor, NoStore
from .test_voucher_restart import crash

pytestmark = pytest.mark.timeout(120)

OPEN, DONE = b"\x51" * 32, b"\x52" * 32  # a k = 2 job committed by two executors; a k = 1 job settled
ROOT, SALT = b"\xaa" * 32, b"\x5a" * 32
PRICE = 10**15
AGENT_KEY = NodeKey.from_seed(b"\x09" * 32)
EXEC_KEYS = [NodeKey.from_seed(bytes([i]) * 32) for i in (2, 3, 4)]


class World:
    """One embedded chain and deployment: three executors registered (the third unbonding), the two jobs."""

    def __init__(self) -> None:
        self.base = ChainLink({})
        signers = self.base.chain.dev_signers()
        self.execs = [self.base.market.as_(signers[i]) for i in (2, 3, 4)]
        for ex, key in zip(self.execs, EXEC_KEYS, strict=True):
            ex.register(key.node_id, self.base.stake)
        self.execs[2].request_unbond()
        client = self.base.market.as_(signers[5])
        deadline = self.base.chain.now() + 500
        client.post_job(OPEN, 2, 2, deadline, PRICE)
        for ex, key, usage in zip(self.execs[:2], EXEC_KEYS, (1000, 2000), strict=False):
            ex.commit(OPEN, commitment(OPEN, key.node_id, ROOT, SALT), usage)
        client.post_job(DONE, 1, 1, deadline, PRICE)
        self.execs[0].commit(DONE, commitment(DONE, EXEC_KEYS[0].node_id, ROOT, SALT), 500)
        self.execs[0].reveal(DONE, [Opening(0, ROOT, SALT, 500)])

    def link(self, **options: Any) -> ChainLink:
        """This agent's adaptor (account 1) on the shared chain, with the block ranges its poller asks for."""
        link = ChainLink({"account_index": 1, **options}, shared=self.base)
        asked: list[tuple[int, int | str]] = []
        logs = link.poller._logs

        def counted(start: int, end: int | str) -> list:
            asked.append((start, end))
            return logs(start, end)

        link.poller._logs = counted  # type: ignore[method-assign]
        link.asked = asked  # type: ignore[attr-defined]
        return link


def agent_on(data_dir: Path, link: ChainLink, **settings: Any) -> Agent:
    core = {"require_stake": True, "require_escrow": True}
    cfg = AgentConfig(data_dir=data_dir, mdns=False, core=core, **settings)
    return Agent(cfg, key=AGENT_KEY, executor=NoExecutor(), store=NoStore(), chain=link, exec_caps=CAPS)


async def polled(agent: Agent) -> list:
    """One turn of the agent's chain watcher: poll, feed NodeCore, commit (as the agent does once a turn)."""
    updates = await agent.chain.poll()
    for u in updates:
        agent.feed(u)
    agent.journal.commit()
    return updates


def view(link: ChainLink) -> dict[str, Any]:
    """What a ChainLink derived from the events (what a checkpoint must give back)."""
    return {
        "nodes": (link.node_ids, link.accounts, link.account_of_index, link.unbonding),
        "jobs": (link.seeds, link.deadlines, link.commits, link.closed, link.roots),
        "payer": (link.vouchers.payer_seq, {b: x.jobs for b, x in link.vouchers.batches.items()}),
    }


async def first_life(world: World, data_dir: Path) -> tuple[Agent, int]:
    """Start the agent, poll once, mine empty blocks and poll again (its checkpoint moves past them); crash."""
    agent = agent_on(data_dir, world.link())
    await agent.chain.join(agent.node_id)
    await polled(agent)
    world.base.chain.mine(40)
    for _ in range(16):  # the 16th poll reads the head: the checkpoint moves past the empty blocks
        await polled(agent)
    saved = agent.chain.poller.position
    assert saved == world.base.chain.block_number() + 1
    crash(agent.journal)
    return agent, saved


def test_a_restarted_agent_resumes_from_its_checkpoint_and_settles_a_job(tmp_path: Path) -> None:
    async def main() -> None:
        world = World()
        before, saved = await first_life(world, tmp_path)
        agent = agent_on(tmp_path, world.link())
        await agent.chain.join(agent.node_id)
        updates = await polled(agent)
        # no block before the checkpoint was asked for (here none at all: nothing was mined since)
        assert all(start >= saved for start, _ in agent.chain.asked)
        assert (
            min(start for start, _ in before.chain.asked) == world.base.deploy_block
        )  # (the first life did)
        # ... yet this agent knows what a full replay would have told it
        full = world.link()
        await full.poll()
        assert view(agent.chain) == view(full) == view(before.chain)
        staked = {k.node_id for k in EXEC_KEYS[:2]} | {agent.node_id}
        assert agent.core.staked == before.core.staked == staked  # the unbonding node is not eligible
        seed = widen_seed(OPEN, world.base.market.job_seed(OPEN))
        assert agent.core.funded[OPEN] == before.core.funded[OPEN] == seed
        assert {(u.kind, u.job_id) for u in updates if u.job_id == DONE} == {
            ("job_funded", DONE),
            ("job_settled", DONE),
        }
        assert (await agent.chain.job(DONE))["state"] == "settled"  # from the checkpoint, no read
        # the job committed before the restart settles: its commitments (usages) came from the checkpoint
        reveals = {k.node_id: (ROOT, SALT) for k in EXEC_KEYS[:2]}
        out = await agent.chain.submit(agent.node_id, SubmitTx("settle", OPEN, {"reveals": reveals}))
        assert out.startswith("0x"), out
        assert ("job_settled", OPEN) in {(u.kind, u.job_id) for u in await polled(agent)}
        assert (await agent.chain.job(OPEN))["paid_wei"] > 0
        agent.journal.close()

    trio.run(main)


def test_a_checkpoint_of_another_deployment_gives_a_full_replay(tmp_path: Path, caplog) -> None:
    async def main() -> None:
        world = World()
        await first_life(world, tmp_path)
        # a second deployment on the same chain, the same data dir (and journal)
        other = deploy(world.base.chain, world.base.chain.dev_signers()[0])
        link = ChainLink({"account_index": 1}, shared=world.base)
        link.deployment, link.deploy_block = other, other.deploy_block
        link.market = link.reader = other.market(world.base.chain, link.signer)
        link.poller.market, link.poller.position = link.market, other.deploy_block
        agent = agent_on(tmp_path, link)
        with caplog.at_level(logging.INFO, logger="sandrun_p2p.agent"):
            await polled(agent)
        assert "event=chain-checkpoint-unused" in caplog.text and "another chain or deployment" in caplog.text
        assert link.node_ids == {} and link.seeds == {}  # nothing of the other deployment's view
        # the first checkpoint of this deployment replaced the other's rows
        key, position, _, nodes, jobs = agent.journal.chain_view()
        assert key.split(":")[1] == other.market(world.base.chain).address.lower()
        assert position == link.poller.position and nodes == [] and jobs == []
        agent.journal.close()

    trio.run(main)


@pytest.mark.parametrize(
    "damage",
    [
        "UPDATE chain_jobs SET commits='{not json'",
        "UPDATE chain_view SET extra='[]'",
        "UPDATE chain_jobs SET closed_at=NULL WHERE closed IS NOT NULL",
        "UPDATE chain_view SET position=position + 1000000",  # past the chain's head
        "DELETE FROM chain_nodes WHERE idx = 1",  # a row lost
        "DROP TABLE chain_jobs",  # (the journal makes it again, empty)
    ],
)
def test_an_unusable_checkpoint_gives_a_clear_line_and_a_full_replay(
    tmp_path: Path, caplog, damage: str
) -> None:
    async def main() -> None:
        world = World()
        before, _ = await first_life(world, tmp_path)
        db = sqlite3.connect(tmp_path / "journal.sqlite")
        db.execute(damage)
        db.commit()
        db.close()
        link = world.link()
        with caplog.at_level(logging.INFO, logger="sandrun_p2p.agent"):
            agent = agent_on(tmp_path, link)
            await agent.chain.join(agent.node_id)
            await polled(agent)
        assert min(start for start, _ in link.asked) == world.base.deploy_block  # a full replay
        assert "event=chain-checkpoint-unused" in caplog.text
        assert view(link) == view(before.chain)
        assert agent.core.staked == before.core.staked
        # and the replay's checkpoint is whole again: the next restart resumes from it
        crash(agent.journal)
        again = world.link()
        agent = agent_on(tmp_path, again)
        await polled(agent)
        assert all(start > world.base.deploy_block for start, _ in again.asked)
        assert view(again) == view(before.chain)
        agent.journal.close()

    trio.run(main)


def test_a_first_poll_that_fails_part_way_loses_nothing(tmp_path: Path) -> None:
    """An RPC error on a later page of the first poll after a restart: the pages read are read again and the
    updates from the checkpoint are handed over by the poll that succeeds."""

    async def main() -> None:
        world = World()
        before, saved = await first_life(world, tmp_path)
        world.execs[1].request_unbond()  # an event after the checkpoint, in the second page
        world.base.chain.mine(25)
        link = world.link()
        link.poller.page = 10
        logs, calls = link.poller._logs, []

        def flaky(start: int, end: int | str) -> list:
            calls.append(start)
            if len(calls) == 3:
                raise ConnectionError("the RPC went away")
            return logs(start, end)

        link.poller._logs = flaky  # type: ignore[method-assign]
        agent = agent_on(tmp_path, link)
        with pytest.raises(ConnectionError):
            await agent.chain.poll()
        assert link.poller.position == saved and agent.core.staked == set()
        await polled(agent)
        assert (
            calls[3] == saved - 1
        )  # read again from the checkpoint (EventPoller's short poll: one block back)
        assert agent.core.staked == before.core.staked - {EXEC_KEYS[1].node_id}
        agent.journal.close()

    trio.run(main)


def test_jobs_closed_longer_than_history_s_leave_the_view_and_its_checkpoint(tmp_path: Path) -> None:
    async def main() -> None:
        world = World()
        agent = agent_on(tmp_path, world.link(), history_s=0.0)  # (closed jobs go at the next poll)
        assert agent.chain.history_s == 0.0
        agent.chain.positions[DONE] = 0  # as if this node had committed to it and never revealed,
        agent.chain.closed_here.add(DONE)  # ... or its reveal had closed it and no settle step came
        await polled(agent)
        await polled(agent)
        assert DONE not in agent.chain.closed and DONE not in agent.chain.seeds
        assert DONE not in agent.chain.positions and DONE not in agent.chain.closed_here
        assert OPEN in agent.chain.seeds  # open, its deadline ahead
        _, _, _, _, jobs = agent.journal.chain_view()
        assert [bytes(row[0]) for row in jobs] == [OPEN]
        assert (await agent.chain.job(DONE))["state"] == "settled"  # (read from the chain now)
        crash(agent.journal)
        agent = agent_on(tmp_path, world.link(), history_s=0.0)
        updates = await polled(agent)
        assert {u.job_id for u in updates if u.job_id} == {OPEN}
        agent.journal.close()

    trio.run(main)


def test_a_node_that_cancels_its_unbonding_is_eligible_again_also_after_a_restart(tmp_path: Path) -> None:
    """``UnbondCancelled`` was not polled: a node that cancelled its unbonding stayed out of every NodeCore's
    stake table (after a full replay too)."""

    async def main() -> None:
        world = World()
        agent, _ = await first_life(world, tmp_path)
        assert EXEC_KEYS[2].node_id not in agent.core.staked
        agent = agent_on(tmp_path, world.link())
        await agent.chain.join(agent.node_id)
        await polled(agent)
        world.execs[2].cancel_unbond()
        await polled(agent)
        assert EXEC_KEYS[2].node_id in agent.core.staked and not agent.chain.unbonding
        crash(agent.journal)
        again = agent_on(tmp_path, world.link())  # from the checkpoint taken after the cancel
        await again.chain.join(again.node_id)
        await polled(again)
        full = world.link()  # and a full replay
        await full.poll()
        assert EXEC_KEYS[2].node_id in again.core.staked
        assert view(again.chain) == view(full)
        assert not again.chain.unbonding and not full.unbonding
        again.journal.close()

    trio.run(main)
