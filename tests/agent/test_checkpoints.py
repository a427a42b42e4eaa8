"""Checkpoints in the agent: snapshots are published and kept by the origin; a node stopped with SIGTERM hands its
job over with its last checkpoint, and the fallback rank resumes from it to the same trace root as an
uninterrupted run (examples/checkpoint-counter)."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
import trio

from sandrun_p2p.agent.checkpoints import Notice, notice_body, notices, verify
from sandrun_p2p.exec import checkpoint as ckpt
from sandrun_p2p.exec.errors import BundleError
from sandrun_p2p.protocol import messages as m
from sandrun_p2p.protocol.identity import NodeKey
from sandrun_p2p.protocol.jobspec import Manifest

from .cluster import Cluster, bundle, running_cluster, wait_for
from .test_cluster import k1_job_off_node0

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "checkpoint-counter"
JID = b"\x42" * 32


def snapshot_of(tmp_path: Path, entries: list[int]) -> ckpt.Checkpoint:
    d = tmp_path / "ck"
    d.mkdir()
    for i in entries:
        (d / f"{i:06d}").write_text(str(i))
    return ckpt.snapshot(d)


def test_notices_are_the_claimants_checkpoints_highest_first(tmp_path: Path) -> None:
    a, b, outsider = (NodeKey.from_seed(bytes([i]) * 32) for i in (1, 2, 3))
    snap = snapshot_of(tmp_path, [5, 10])

    def raw(key: NodeKey, index: int, cid: str, seq: int) -> tuple[str, bytes]:
        body = {"job": JID, "index": index, "cid": cid, "link": snap.chain[-1]}
        return m.CHECKPOINT, m.encode(key, m.CHECKPOINT, body, seq, 0)

    msgs = [
        raw(a, 1, "c1", 1),
        (m.COMMIT, b"ignored"),
        raw(b, 2, "c2", 2),
        raw(outsider, 9, "c9", 3),
        raw(a, 1, "c1", 4),
    ]
    got = notices(msgs, {a.node_id, b.node_id})
    assert [(n.sender, n.index, n.cid) for n in got] == [(b.node_id, 2, "c2"), (a.node_id, 1, "c1")]


def test_a_checkpoint_must_hold_what_its_notice_names(tmp_path: Path) -> None:
    snap = snapshot_of(tmp_path, [5, 10])
    body = notice_body(JID, "cid", snap)
    assert body["index"] == 2 and body["link"] == snap.chain[-1]
    verify(snap.tar, Notice(b"", 2, "cid", snap.chain[-1]))
    with pytest.raises(BundleError):
        verify(snap.tar, Notice(b"", 3, "cid", snap.chain[-1]))  # claims more entries than it holds
    with pytest.raises(BundleError):
        verify(snap.tar, Notice(b"", 2, "cid", snap.chain[0]))  # another chain


# ---------------------------------------------------------------------- multi-process


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Cluster:
    with running_cluster(tmp_path_factory.mktemp("checkpoints"), 3) as c:
        yield c


def all_running(cluster: Cluster) -> None:
    """Restart the nodes an earlier test stopped, and wait for the mesh."""
    for n in cluster.nodes:
        if n.proc is None or n.proc.poll() is not None:
            n.start()
    cluster.wait_ready(90)
    cluster.wait_mesh(60)


def counter_job(cluster: Cluster, tag: bytes) -> tuple[dict, bytes, list[bytes]]:
    """The checkpoint-counter example as a k=1 job whose top rank is not node 0 (the origin we watch)."""
    code = bundle({"count.py": (EXAMPLE / "count.py").read_text()})
    manifest = json.loads((EXAMPLE / "job.json").read_text())
    return k1_job_off_node0(cluster, code, manifest, tag, 150)


def uninterrupted_root(code_files: dict[str, str], manifest: dict, job_id: bytes, tmp: Path) -> str:
    from sandrun_p2p.exec.sandbox import LocalExecutor

    async def run() -> bytes:
        ex = LocalExecutor(work_root=tmp / "exec")
        res = await ex.run(bundle(code_files), Manifest.from_dict(manifest), job_id)
        assert res.trace.status == "exited", res.trace
        return res.root

    return trio.run(run).hex()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigterm_hands_the_job_over_with_its_checkpoint(cluster: Cluster, tmp_path: Path) -> None:
    all_running(cluster)
    body, jid, order = counter_job(cluster, b"term")
    origin = cluster.nodes[0]
    top = next(n for n in cluster.nodes if n.node_id == order[0])
    r = origin.api.submit(**body)
    assert r["job_id"] == jid.hex()

    published = f"event=checkpoint-published job={jid.hex()[:16]}"
    # the top-ranked executor's own log: no gossip delay between its first checkpoint and the signal (the job
    # runs ~3 s and checkpoints from ~1 s)
    wait_for(
        lambda: published in (top.data_dir / "agent.log").read_text(),
        60,
        "a periodic checkpoint from the top-ranked executor",
    )
    # graceful: the job is stopped, its last checkpoint published, the claim released
    top.kill(signal.SIGTERM)
    assert "agent shutting down; checkpoint of" in (top.data_dir / "agent.log").read_text()

    def checkpoints_from_top() -> list[dict]:
        evs = origin.api.events(job=jid.hex())["events"]
        return [e for e in evs if e["state"] == "checkpoint" and e["node"] == top.node_id.hex()]

    wait_for(checkpoints_from_top, 30, "the origin to accept the top-ranked executor's checkpoints")

    j = origin.api.wait_job(jid.hex(), ("settled", "refunded", "failed"), 120)
    assert j["state"] == "settled", [(e["state"], e["node"][:12], e["detail"][:50]) for e in j["events"]]
    (payee,) = j["chain"]["paid"]
    assert payee != top.node_id.hex()
    assert any(e["state"] == "released" and e["node"] == top.node_id.hex() for e in j["events"])
    resumer = next(n for n in cluster.nodes if n.node_id.hex() == payee)
    resumed = re.search(
        rf"event=resume job={jid.hex()[:16]} from=\S+ index=(\d+)",
        (resumer.data_dir / "agent.log").read_text(),
    )
    assert resumed and int(resumed.group(1)) >= 1  # it started from a checkpoint, not from scratch
    # the resumed run's trace root is the one of a run never interrupted
    code = {"count.py": (EXAMPLE / "count.py").read_text()}
    assert j["accepted_root"] == uninterrupted_root(code, body["manifest"], jid, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkilled_executor_is_resumed_from_the_origins_copy(cluster: Cluster, tmp_path: Path) -> None:
    """SIGKILL: no goodbye, and the writer's store is gone; the origin kept the periodic checkpoints, so the
    fallback rank (after the dead node's claim lapses) still resumes from one."""
    all_running(cluster)
    body, jid, order = counter_job(cluster, b"kill")
    origin = cluster.nodes[0]
    top = next(n for n in cluster.nodes if n.node_id == order[0])
    r = origin.api.submit(**body)
    published = f"event=checkpoint-published job={jid.hex()[:16]}"
    wait_for(
        lambda: published in (top.data_dir / "agent.log").read_text(),
        60,
        "a periodic checkpoint from the top-ranked executor",
    )
    kept = f"event=checkpoint-kept job={jid.hex()[:16]}"
    wait_for(
        lambda: kept in (origin.data_dir / "agent.log").read_text(), 30, "the origin to keep a checkpoint"
    )
    top.kill(signal.SIGKILL)
    j = origin.api.wait_job(r["job_id"], ("settled", "refunded", "failed"), 120)
    assert j["state"] == "settled", [(e["state"], e["node"][:12], e["detail"][:50]) for e in j["events"]]
    (payee,) = j["chain"]["paid"]
    assert payee != top.node_id.hex()
    resumer = next(n for n in cluster.nodes if n.node_id.hex() == payee)
    resumed = re.search(
        rf"event=resume job={jid.hex()[:16]} from=\S+ index=(\d+)",
        (resumer.data_dir / "agent.log").read_text(),
    )
    assert resumed and int(resumed.group(1)) >= 1
    code = {"count.py": (EXAMPLE / "count.py").read_text()}
    assert j["accepted_root"] == uninterrupted_root(code, body["manifest"], jid, tmp_path)
