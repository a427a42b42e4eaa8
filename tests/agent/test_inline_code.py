"""A job's small code block travels in its announcement: its executor runs it without a fetch, and an
announcement carrying any other block is refused with nothing kept (agent/inline.py)."""

from __future__ import annotations

import random
import time
import zlib
from pathlib import Path

import pytest

from sandrun_p2p.agent.inline import InlineBlocks, block_to_inline
from sandrun_p2p.protocol import messages as m
from sandrun_p2p.protocol.errors import ProtocolError
from sandrun_p2p.protocol.events import SubmitJob
from sandrun_p2p.protocol.identity import NodeKey
from sandrun_p2p.protocol.jobspec import JobSpec
from sandrun_p2p.protocol.node import CoreConfig, NodeCore
from sandrun_p2p.store.embedded import EmbeddedStore

from .test_journal_resume import make_agent

CODE = b"print('sum of squares', sum(i * i for i in range(1000)))\n"


def code_spec(cid: str, nonce: bytes = b"i", encrypted: bool = False) -> JobSpec:
    return JobSpec.from_dict(
        {
            "code_cid": cid,
            "manifest": {"entrypoint": "main.py"},
            "redundancy": 1,
            "deadline": int(time.time()) + 600,
            "nonce": nonce,
            "encrypted": encrypted,
        }
    )


def announcement(origin: NodeKey, spec: JobSpec, code: bytes) -> m.Message:
    body = {"spec": spec.to_dict(), "seed": b"\x01" * 32, "origin_ts": int(time.time() * 1000), "code": code}
    return m.decode(m.encode(origin, m.JOB, body, 1, int(time.time() * 1000)))


class CountingNet:
    """The network as the executor's store sees it: counts the fetches that reach it."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def fetch_any(self, cid: str, prefer: list[bytes] = ()) -> bytes | None:  # noqa: ARG002
        self.asked.append(cid)
        return None


async def test_an_executor_gets_inline_code_from_the_announcement_without_a_fetch(tmp_path: Path) -> None:
    origin_store = EmbeddedStore(tmp_path / "origin")
    cid = await origin_store.put_bytes(CODE)
    spec = code_spec(cid)
    block = await block_to_inline(origin_store, spec, 4096)
    assert block  # the origin inlines it

    agent = make_agent(tmp_path, NodeKey.generate())
    net = CountingNet()
    agent.net = net  # type: ignore[assignment]
    agent.store = EmbeddedStore(tmp_path / "exec-store", fetcher=agent._fetcher)  # type: ignore[assignment]
    agent._on_net_message(announcement(NodeKey.generate(), spec, block), time.time())
    assert spec.job_id in agent.core.jobs and len(agent.inline) == 1

    assert await agent.store.get(cid) == CODE  # checked against the CID like any peer's block
    assert net.asked == [] and len(agent.inline) == 0  # no fetch; the block is not held twice
    agent.journal.close()


@pytest.mark.parametrize(
    "case", ["other block", "encrypted", "not zlib", "inflates too far", "trailing bytes"]
)
async def test_an_announcement_with_inline_code_that_is_not_the_jobs_is_refused_and_nothing_is_kept(
    tmp_path: Path, case: str
) -> None:
    store = EmbeddedStore(tmp_path / "origin")
    cid = await store.put_bytes(CODE)
    block = await store.get_block(cid)
    spec, code = code_spec(cid), zlib.compress(block)
    if case == "other block":
        code = zlib.compress(block + b"#")
    elif case == "encrypted":
        spec = code_spec(cid, encrypted=True)
    elif case == "not zlib":
        code = block[:100]
    elif case == "inflates too far":  # 4 KiB that would inflate to 1 MiB
        code = zlib.compress(b"\0" * (1 << 20), 9)
        assert len(code) <= m.MAX_INLINE_CODE
    else:
        code += b"junk"
    agent = make_agent(tmp_path, NodeKey.generate())
    with pytest.raises(ProtocolError) as e:
        agent._on_net_message(announcement(NodeKey.generate(), spec, code), time.time())
    assert e.value.reason == "bad-field"
    assert spec.job_id not in agent.core.jobs and len(agent.inline) == 0
    assert agent.journal.messages(spec.job_id) == []
    agent.journal.close()


async def test_the_origin_inlines_only_a_small_unencrypted_block_compressed(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "origin")
    small = await store.put_bytes(CODE)
    packed = zlib.compress(await store.get_block(small), 6)
    assert await block_to_inline(store, code_spec(small), 4096) == packed
    assert await block_to_inline(store, code_spec(small), len(packed) - 1) == b""  # over the agent's limit
    assert await block_to_inline(store, code_spec(small), 0) == b""  # inlining turned off
    assert await block_to_inline(store, code_spec(small, encrypted=True), 4096) == b""
    noise = await store.put_bytes(random.Random(1).randbytes(m.MAX_INLINE_CODE + 100))  # does not compress
    assert await block_to_inline(store, code_spec(noise), 10**6) == b""  # over the protocol's cap
    missing = code_spec("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
    assert await block_to_inline(store, missing, 4096) == b""


def test_the_core_announces_the_inline_block_and_receivers_refuse_one_over_the_cap() -> None:
    key = NodeKey.generate()
    core = NodeCore(key.node_id, None, CoreConfig())
    spec = code_spec("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
    out = core.handle(SubmitJob(spec, b"\x01" * 32, b"block"), 0.0)
    assert [a.body.get("code") for a in out if getattr(a, "kind", "") == m.JOB] == [b"block"]
    without = core.handle(SubmitJob(code_spec(spec.code_cid, b"j"), b"\x01" * 32), 0.0)
    assert [("code" in a.body) for a in without if getattr(a, "kind", "") == m.JOB] == [False]
    with pytest.raises(ProtocolError):
        announcement(key, spec, b"x" * (m.MAX_INLINE_CODE + 1))


def test_held_blocks_are_bounded_and_taken_once() -> None:
    held = InlineBlocks(max_held=2)
    for i in range(3):
        held.keep(f"cid{i}", bytes([i]))
    assert len(held) == 2 and held.take("cid0") is None  # the oldest went
    assert held.take("cid2") == b"\x02" and held.take("cid2") is None
