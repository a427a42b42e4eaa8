"""Group commit of the agent's journal: writes of one loop turn share a transaction, and whatever leaves the node
(a publish, an execution start, a chain transaction) only leaves once what it depends on is durable. A second
connection to the file stands for the agent restarted after a SIGKILL: it sees exactly what was committed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from sandrun_p2p.agent.journal import Journal
from sandrun_p2p.net.topics import job_topic
from sandrun_p2p.protocol.events import SubmitTx
from sandrun_p2p.protocol.identity import NodeKey

from .test_journal_resume import make_agent

pytestmark = pytest.mark.timeout(30)

JID = b"\x07" * 32


def after_restart(path: Path) -> Journal:
    return Journal(path)  # a fresh connection: only committed writes are visible


def test_group_writes_are_visible_to_others_only_after_commit(tmp_path: Path) -> None:
    begun: list[int] = []
    j = Journal(tmp_path / "j.sqlite", group_commit=True, on_begin=lambda: begun.append(1))
    j.add_message(JID, "job", b"raw")
    j.event(JID, "announced", "", b"")
    assert j.dirty and begun == [1]  # one transaction for both writes
    assert j.messages(JID) == [("job", b"raw")]  # the writer reads its own writes
    assert after_restart(tmp_path / "j.sqlite").messages(JID) == []
    j.commit()
    assert not j.dirty
    assert after_restart(tmp_path / "j.sqlite").messages(JID) == [("job", b"raw")]
    j.event(JID, "settled", "", b"")
    j.close()  # closing commits
    assert after_restart(tmp_path / "j.sqlite").job(JID)["final"]


def test_sigkill_loses_only_the_open_group(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    code = textwrap.dedent(f"""
        import os, signal
        from sandrun_p2p.agent.journal import Journal
        j = Journal({str(path)!r}, group_commit=True)
        j.execution_started({JID!r})
        j.execution_done({JID!r}, b"r" * 32, b"s" * 32, "trace", "result", 5)
        j.commit()
        j.add_message({JID!r}, "claim", b"late")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ}, timeout=20)
    assert proc.returncode == -signal.SIGKILL
    j = after_restart(path)
    ex = j.execution(JID)
    assert ex is not None and ex.status == "done" and ex.trace_root == b"r" * 32
    assert j.messages(JID) == []
    j.close()


async def test_result_is_durable_before_its_commitment_is_published(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, NodeKey.generate())
    seen: list[str | None] = []

    class Net:
        async def publish_many(self, topic: str, items: list[bytes]) -> None:
            ex = after_restart(tmp_path / "journal.sqlite").execution(JID)
            seen.append(ex.status if ex else None)

    agent.net = Net()  # type: ignore[assignment]
    agent.journal.execution_started(JID)
    agent.journal.execution_done(JID, b"r" * 32, b"s" * 32, "trace", "result", 5)
    agent._pub_send.send_nowait((job_topic(0), b"commit"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent._publisher)
        with trio.fail_after(5):
            while not seen:
                await trio.sleep(0)
        nursery.cancel_scope.cancel()
    assert seen == ["done"]
    agent.journal.close()


async def test_running_is_durable_before_execution_and_chain_sends(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, NodeKey.generate())
    seen: dict[str, object] = {}

    class Store:
        fetcher = None

        async def get(self, cid: str) -> bytes:
            ex = after_restart(tmp_path / "journal.sqlite").execution(JID)
            seen["exec"] = ex.status if ex else None
            raise RuntimeError("stop here")

    class Chain:
        kind = "test"

        async def submit(self, node_id: bytes, tx: SubmitTx) -> str:
            seen["tx"] = after_restart(tmp_path / "journal.sqlite").txs(JID)
            return "ok"

    agent.store, agent.chain = Store(), Chain()  # type: ignore[assignment]
    agent.journal.execution_started(JID)
    with pytest.raises(RuntimeError):
        await agent._run_job(type("A", (), {"job_id": JID, "spec": type("S", (), {"code_cid": "c"})()})())
    agent.journal.tx(JID, "commit", "queued")
    await agent._send_tx(SubmitTx("commit", JID, {}))
    assert seen["exec"] == "running"
    assert [t["status"] for t in seen["tx"]] == ["queued"]  # type: ignore[union-attr]
    agent.journal.close()


async def test_committer_commits_each_turn(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, NodeKey.generate())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent._journal_committer)
        for i in range(3):
            agent.journal.event(JID, "announced", str(i), b"")
            with trio.fail_after(5):
                while agent.journal.dirty:
                    await trio.sleep(0)
            assert len(after_restart(tmp_path / "journal.sqlite").events(JID)) == i + 1
        nursery.cancel_scope.cancel()
    agent.journal.close()
