"""Checkpoint/restore: a counting job stopped midway resumes on another executor with the same trace root."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from exec_helpers import JOB_ID, make_job, manifest

from sandrun_p2p.exec import BundleError, Checkpoint, LocalExecutor
from sandrun_p2p.exec import checkpoint as ckpt
from sandrun_p2p.exec.checkpoint import chain

# The checkpointing example users submit is the job under test.
COUNTER = (Path(__file__).resolve().parents[2] / "examples" / "checkpoint-counter" / "count.py").read_text()


async def test_stopped_job_resumes_elsewhere_with_same_root(executor: LocalExecutor, tmp_path: Path) -> None:
    job = make_job(tmp_path, COUNTER)
    m = manifest(outputs=["result.txt"], checkpoint_interval=1, timeout=30)
    whole = await executor.run(job, m, JOB_ID)
    assert whole.trace.status == "exited" and len(whole.trace.checkpoints) == 6

    stop = trio.Event()
    seen: list[Checkpoint] = []

    def sink(cp: Checkpoint) -> None:
        seen.append(cp)
        stop.set()

    first = await executor.run(job, m, JOB_ID, stop=stop, on_checkpoint=sink)
    assert first.trace.status == "killed" and seen
    snap = first.checkpoint
    assert snap is not None and 1 <= len(snap.chain) < 6

    other = LocalExecutor(work_root=tmp_path / "node2", detect_gpus=False)
    resumed = await other.run(job, m, JOB_ID, checkpoint_from=snap)
    assert resumed.trace.status == "exited"
    assert resumed.trace.checkpoints[: len(snap.chain)] == snap.chain
    assert resumed.root == whole.root


async def test_tampered_checkpoint_is_refused(executor: LocalExecutor, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "000005").write_text("5")
    from sandrun_p2p.exec.checkpoint import snapshot

    good = snapshot(ck)
    (ck / "000005").write_text("999")
    forged = Checkpoint(snapshot(ck).tar, good.chain)
    with pytest.raises(BundleError, match="does not match its chain"):
        await executor.run(make_job(tmp_path, COUNTER), manifest(), JOB_ID, checkpoint_from=forged)


def test_chain_ignores_dot_files_and_orders_by_name(tmp_path: Path) -> None:
    (tmp_path / "000002").write_text("b")
    (tmp_path / "000001").write_text("a")
    c1 = chain(tmp_path)
    (tmp_path / ".tmp").write_text("partial")
    assert chain(tmp_path) == c1 and len(c1) == 2
    (tmp_path / "000003").write_text("c")
    assert chain(tmp_path)[:2] == c1


def test_snapshot_of_what_a_job_wrote_leaves_out_links_and_fifos(tmp_path: Path) -> None:
    """A checkpoint dir is job-written: links and FIFOs are left out (not refused, not followed), and a
    snapshot restores to the same chain, empty entry directories included."""
    import os

    from sandrun_p2p.exec.checkpoint import restore, snapshot

    ck = tmp_path / "ck"
    (ck / "000002" / "deep").mkdir(parents=True)
    (ck / "000001").write_text("a")
    (ck / "000002" / "deep" / "x").write_text("x")
    (ck / "000003").mkdir()  # an empty entry still counts in the chain
    (ck / "000002" / "link").symlink_to("/etc/passwd")
    (ck / "zzz-link").symlink_to(tmp_path)
    os.mkfifo(ck / "000002" / "fifo")
    snap = snapshot(ck)
    assert len(snap.chain) == 3 and snapshot(ck).tar == snap.tar
    dest = tmp_path / "restored"
    dest.mkdir()
    assert restore(snap, dest) == snap.chain
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == [
        "000001",
        "000002",
        "000002/deep",
        "000002/deep/x",
        "000003",
    ]


def test_snapshot_is_not_capped_but_restore_is(tmp_path: Path) -> None:
    from sandrun_p2p.exec.bundles import safe_extract
    from sandrun_p2p.exec.checkpoint import restore, snapshot

    ck = tmp_path / "ck"
    (ck / "000001").mkdir(parents=True)
    for i in range(20):
        (ck / "000001" / f"{i:03d}").write_text("x")
    snap = snapshot(ck)  # a job's checkpoint dir never makes the executor fail
    with pytest.raises(BundleError, match="more than 10"):
        safe_extract(snap.tar, tmp_path / "small", max_entries=10)
    (tmp_path / "r").mkdir()
    assert restore(snap, tmp_path / "r") == snap.chain


def test_snapshot_chain_is_that_of_the_packed_entries_while_the_job_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ck"
    root.mkdir()
    (root / "0001").write_text("one")
    real_pack = ckpt.pack_dir

    def pack_then_job_writes(*a: object, **kw: object) -> bytes:
        data = real_pack(*a, **kw)
        (root / "0002").write_text("two")  # the job adds an entry just after the tar was made
        return data

    monkeypatch.setattr(ckpt, "pack_dir", pack_then_job_writes)
    snap = ckpt.snapshot(root)
    assert len(snap.chain) == 1  # before: 2, a notice naming 2 entries for a tar holding 1 (peers skip it)
    dest = tmp_path / "restored"
    dest.mkdir()
    assert ckpt.restore(snap, dest) == snap.chain
