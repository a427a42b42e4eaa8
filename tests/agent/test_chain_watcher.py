"""The agent's chain watcher polls when its chain adaptor says something is due (a voucher batch coming of age or
reaching its release time), not only every ``chain_poll_s``."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import trio

from sandrun_p2p.agent.config import AgentConfig
from sandrun_p2p.agent.runtime import Agent
from sandrun_p2p.protocol.events import JobEvent
from sandrun_p2p.protocol.identity import NodeKey

from .test_journal_resume import CAPS, NoExecutor, NoStore

pytestmark = pytest.mark.timeout(30)


class CountingChain:
    """A chain adaptor that only counts its polls."""

    kind = "none"

    def __init__(self) -> None:
        self.polls = 0

    async def poll(self) -> list:
        self.polls += 1
        return []


class SoonChain(CountingChain):
    """A chain adaptor that asks to be polled every 0.1 s."""

    def poll_in(self) -> float:
        return 0.1


async def test_the_chain_is_polled_when_it_asks(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    chain = SoonChain()
    cfg = AgentConfig(data_dir=tmp_path, mdns=False, chain_poll_s=5.0)
    agent = Agent(
        cfg, key=NodeKey.generate(), executor=NoExecutor(), store=NoStore(), chain=chain, exec_caps=CAPS
    )
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(agent._chain_watcher)
            await trio.sleep(1.05)
            nursery.cancel_scope.cancel()
        assert chain.polls >= 10  # every 0.1 s (virtual clock), not once per 5 s
    finally:
        agent.journal.close()


@pytest.mark.parametrize(
    ("origin_is_me", "pay", "polled_soon"),
    [(True, "escrow", True), (False, "escrow", False), (True, "voucher", False)],
)
async def test_an_accepted_job_of_this_node_has_its_settlement_looked_for_at_once(
    tmp_path: Path, autojump_clock: trio.abc.Clock, origin_is_me: bool, pay: str, polled_soon: bool
) -> None:
    """The client learns of the settlement right after the last reveal, not up to ``chain_poll_s`` later: the
    origin looks at once and then every 0.2 s until the job is settled; only for its own per-job escrow jobs (a
    voucher job settles with its batch)."""
    chain = CountingChain()
    cfg = AgentConfig(data_dir=tmp_path, mdns=False, chain_poll_s=5.0)
    key = NodeKey.generate()
    agent = Agent(cfg, key=key, executor=NoExecutor(), store=NoStore(), chain=chain, exec_caps=CAPS)
    job = b"\x07" * 32
    origin = key.node_id if origin_is_me else NodeKey.generate().node_id
    agent.core.jobs[job] = SimpleNamespace(origin=origin, spec=SimpleNamespace(pay=pay))  # type: ignore[assignment]
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(agent._chain_watcher)
            await trio.sleep(1.0)
            assert chain.polls == 1
            agent._do(JobEvent(job, "accepted", ""))
            await trio.sleep(0.1)
            assert chain.polls == (2 if polled_soon else 1)
            await trio.sleep(1.0)  # not settled yet (a busy chain mines later): looked for every 0.2 s
            assert chain.polls == (7 if polled_soon else 1)
            agent._do(JobEvent(job, "settled", ""))
            polls = chain.polls
            await trio.sleep(2.0)  # settled: back to every chain_poll_s
            assert chain.polls <= polls + 1
            nursery.cancel_scope.cancel()
    finally:
        agent.journal.close()
