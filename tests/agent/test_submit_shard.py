"""A job submitted through the control API lands in a job shard its origin serves: the origin reads only its
shards' topics, so a job elsewhere would never see its claims. Without a nonce the node picks one that fits;
a client's nonce that does not fit is refused with the reason. The testnet's shard layout keeps each shard's
nodes connected among themselves."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandrun_p2p.agent.config import AgentConfig
from sandrun_p2p.agent.control import ControlServer, HttpError
from sandrun_p2p.agent.runtime import Agent
from sandrun_p2p.agent.testnet import dial_plan, shard_groups
from sandrun_p2p.protocol.claiming import shard_of
from sandrun_p2p.protocol.identity import NodeKey

from .test_journal_resume import CAPS, NoChain, NoExecutor, NoStore

pytestmark = pytest.mark.timeout(30)
BITS = 3


def agent_serving(tmp_path: Path, shards: list[int]) -> Agent:
    cfg = AgentConfig(data_dir=tmp_path, mdns=False, core={"shard_bits": BITS}, shards=shards)
    return Agent(
        cfg,
        key=NodeKey.from_seed(b"\x05" * 32),
        executor=NoExecutor(),
        store=NoStore(),
        chain=NoChain(),
        exec_caps=CAPS,
    )


BODY = {"manifest": {"entrypoint": "main.py"}, "code_cid": "bafkreiexamplecode", "deadline_s": 600}


async def test_without_a_nonce_the_job_lands_in_a_served_shard(tmp_path: Path) -> None:
    agent = agent_serving(tmp_path, [5])
    try:
        server = ControlServer(agent)
        for _ in range(20):  # 1 in 8 random nonces fits: without the choice most would land elsewhere
            spec = await server._spec_of(dict(BODY))
            assert shard_of(spec.job_id, BITS) == 5
    finally:
        agent.journal.close()


async def test_a_nonce_outside_the_served_shards_is_refused(tmp_path: Path) -> None:
    agent = agent_serving(tmp_path, [5])
    try:
        server = ControlServer(agent)
        fits = misses = 0
        for i in range(40):
            body = {**BODY, "deadline": 2_000_000_000, "nonce": i.to_bytes(4, "big").hex()}
            try:
                spec = await server._spec_of(body)
            except HttpError as e:
                assert e.status == 400 and "does not serve" in str(e)
                misses += 1
            else:
                assert spec.nonce == i.to_bytes(4, "big") and shard_of(spec.job_id, BITS) == 5
                fits += 1
        assert fits and misses
    finally:
        agent.journal.close()


async def test_an_announced_job_outside_the_served_shards_is_refused(tmp_path: Path) -> None:
    """/v1/announce (the client escrowed the job itself and chose its nonce) checks the shard as well."""
    from sandrun_p2p.client.records import JobRecord
    from sandrun_p2p.protocol.jobspec import JobSpec, Manifest

    agent = agent_serving(tmp_path, [5])
    try:
        server = ControlServer(agent)
        for i in range(40):
            spec = JobSpec(
                "bafkreiexamplecode",
                Manifest(entrypoint="main.py"),
                deadline=2_000_000_000,
                nonce=i.to_bytes(4, "big"),
            )
            if shard_of(spec.job_id, BITS) != 5:
                break
        else:
            raise AssertionError("no nonce outside shard 5 among 40")
        with pytest.raises(HttpError) as e:
            await server.announce({"spec": JobRecord.spec_dict(spec)})
        assert e.value.status == 400 and "does not serve" in str(e.value)
        assert spec.job_id not in agent.core.jobs
    finally:
        agent.journal.close()


@pytest.mark.parametrize(("n", "bits"), [(10, 0), (10, 1), (10, 2), (3, 2), (7, 1), (16, 3)])
def test_testnet_shards_cover_every_shard_and_each_shard_is_connected(n: int, bits: int) -> None:
    groups = shard_groups(n, bits)
    assert len(groups) == n and all(groups)
    assert sorted({s for g in groups for s in g}) == list(range(2**bits))
    edges = {frozenset((i, j)) for i in range(n) for j in dial_plan(i, n, bits)}
    for shard in range(2**bits):
        members = {i for i in range(n) if shard in groups[i]}
        seen, todo = set(), [min(members)]
        while todo:  # walk the dial graph restricted to the shard's members
            a = todo.pop()
            seen.add(a)
            todo.extend(b for b in members - seen if frozenset((a, b)) in edges)
        assert seen == members, (shard, members, seen)
    # every pair is dialled from one side only
    assert all(i not in dial_plan(j, n, bits) for i in range(n) for j in dial_plan(i, n, bits))
