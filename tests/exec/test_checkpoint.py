"""Checkpoint/restore: a counting job stopped midway resumes on another executor with the same trace root."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from exec_helpers import JOB_ID, make_job, manifest

from sandrun_p2p.exec import BundleError, Checkpoint, LocalExecutor
from sandrun_p2p.exec.checkpoint import chain

COUNTER = """
    import os, time
    ck = os.environ["SANDRUN_CHECKPOINT_DIR"]
    entries = sorted(e for e in os.listdir(ck) if not e.startswith("."))
    i = int(open(os.path.join(ck, entries[-1])).read()) if entries else 0
    total = 30
    while i < total:
        i += 1
        time.sleep(0.1)
        if i % 5 == 0:
            tmp = os.path.join(ck, ".tmp")
            with open(tmp, "w") as f:
                f.write(str(i))
            os.rename(tmp, os.path.join(ck, f"{i:06d}"))
    with open("result.txt", "w") as f:
        f.write(f"{sum(range(total + 1))}\\n")
    print("done", total)
"""


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
