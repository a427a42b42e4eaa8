"""The agent's publisher sends what queued up meanwhile together, one ``publish_many`` per topic, in order."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from sandrun_p2p.agent.config import ConfigError, build
from sandrun_p2p.net.topics import ADVERT_TOPIC, job_topic
from sandrun_p2p.protocol.identity import NodeKey

from .test_journal_resume import make_agent

pytestmark = pytest.mark.timeout(30)


class RecordingNet:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[bytes]]] = []
        self.sent = trio.Event()

    async def publish_many(self, topic: str, items: list[bytes]) -> None:
        self.calls.append((topic, list(items)))
        self.sent.set()


async def test_queued_messages_leave_together_per_topic(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, NodeKey.generate())
    net = RecordingNet()
    agent.net = net  # type: ignore[assignment]
    jobs, adverts = job_topic(0), ADVERT_TOPIC
    for item in [(jobs, b"c1"), (adverts, b"a1"), (jobs, b"c2"), (jobs, b"c3")]:
        agent._pub_send.send_nowait(item)  # queued while the publisher was busy
    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent._publisher)
        with trio.fail_after(5):
            while sum(len(items) for _, items in net.calls) < 4:
                await net.sent.wait()
                net.sent = trio.Event()
        agent._pub_send.send_nowait((jobs, b"c4"))  # a later message goes out on its own
        with trio.fail_after(5):
            await net.sent.wait()
        nursery.cancel_scope.cancel()
    assert net.calls == [(jobs, [b"c1", b"c2", b"c3"]), (adverts, [b"a1"]), (jobs, [b"c4"])]
    agent.journal.close()


def test_batch_window_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="publish_batch_window_s"):
        build(tmp_path, {"publish_batch_window_s": 5}, {}).validate()
