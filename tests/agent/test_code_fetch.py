"""An executor asks the job's origin for the job's code first, not the origin of whichever job runs beside it."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from sandrun_p2p.protocol import messages as m
from sandrun_p2p.protocol.events import Received
from sandrun_p2p.protocol.identity import NodeKey

from .test_journal_resume import job_message, make_agent


async def test_code_is_fetched_from_its_jobs_origin_first(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, NodeKey.generate())
    origins = [NodeKey.generate(), NodeKey.generate()]
    jobs = []
    for origin, nonce in zip(origins, (b"x", b"y"), strict=True):
        jid, raw = job_message(origin, nonce)
        agent.feed(Received(m.decode(raw)))
        jobs.append(jid)
    # the first job runs; its origin is no help for the second's code
    agent._running[jobs[0]] = trio.CancelScope()
    asked: list[list[bytes]] = []

    class Net:
        async def fetch_any(self, cid: str, prefer: list[bytes] = ()) -> bytes | None:  # type: ignore[assignment]
            asked.append(list(prefer))
            return None

    class Store:
        fetcher = None

        async def get(self, cid: str) -> bytes:
            await agent._fetcher(cid)  # as the embedded store does for a missing block
            raise RuntimeError("stop here")

    agent.net, agent.store = Net(), Store()  # type: ignore[assignment]
    view = agent.core.jobs[jobs[1]]
    a = type("A", (), {"job_id": jobs[1], "spec": view.spec})()
    with pytest.raises(RuntimeError):
        await agent._run_job(a)
    assert asked and asked[0][0] == origins[1].node_id
    assert agent._code_origin == {}  # the hint is gone once the fetch ended
    agent.journal.close()
