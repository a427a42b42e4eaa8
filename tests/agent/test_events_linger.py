"""``GET /v1/events`` with ``linger``: after the first new event the answer waits that long, so events that follow
closely come in the same answer (fewer round trips for a client following a busy node)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from sandrun_p2p.agent.control import ControlServer, HttpError
from sandrun_p2p.protocol.events import JobEvent
from sandrun_p2p.protocol.identity import NodeKey

from .test_journal_resume import make_agent

pytestmark = pytest.mark.timeout(30)
JOB = b"\x07" * 32


async def follow(server: ControlServer, q: dict[str, str]) -> dict[str, Any]:
    """Start a long poll, then record two events 0.1 s apart (trio's virtual clock) and return its answer."""
    out: dict[str, Any] = {}

    async def poll() -> None:
        out.update(await server.events(q))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await trio.sleep(0.5)
        server.agent._do(JobEvent(JOB, "announced"))
        await trio.sleep(0.1)
        server.agent._do(JobEvent(JOB, "claimed"))
    return out


@pytest.mark.parametrize(("linger", "states"), [("0.3", ["announced", "claimed"]), ("0", ["announced"])])
async def test_linger_gathers_the_events_that_follow(
    tmp_path: Path, autojump_clock: trio.abc.Clock, linger: str, states: list[str]
) -> None:
    agent = make_agent(tmp_path, NodeKey.generate())
    try:
        out = await follow(ControlServer(agent), {"since": "0", "wait": "5", "linger": linger})
        assert [e["state"] for e in out["events"]] == states
        assert out["last"] == out["events"][-1]["id"]
    finally:
        agent.journal.close()


async def test_bad_linger_is_refused(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, NodeKey.generate())
    try:
        with pytest.raises(HttpError, match="linger"):
            await ControlServer(agent).events({"since": "0", "linger": "soon"})
    finally:
        agent.journal.close()
