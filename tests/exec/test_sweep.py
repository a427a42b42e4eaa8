"""A SIGKILLed process leaves its run directory (and the job's tmpfs) behind: the next executor removes it,
and leaves alone the runs of processes still alive."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sandrun_p2p.exec import LocalExecutor
from sandrun_p2p.exec.sandbox import _tmpfs_mount, sweep_stale_runs


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_runs_of_dead_processes_are_unmounted_and_removed(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    root = tmp_path / "runs"
    stale = root / f"{'ab' * 8}-{dead_pid()}-1"
    live = root / f"{'cd' * 8}-{os.getpid()}-1"
    for run in (stale, live):
        (run / "fs").mkdir(parents=True)
    mounted = _tmpfs_mount(stale / "fs", 1 << 20)  # what a killed run leaves when the host has tmpfs
    (stale / "fs" / "out.txt").write_text("left behind")
    (root / "results").mkdir()
    (root / "notes").mkdir()  # not a run directory: never touched
    try:
        ex = LocalExecutor(work_root=root, detect_gpus=False)
        assert ex.swept == 1
        assert (
            not stale.exists() and live.is_dir() and (root / "results").is_dir() and (root / "notes").is_dir()
        )
        assert str(stale / "fs") not in Path("/proc/mounts").read_text()
        assert mounted == (executor.enforced["disk"] == "tmpfs")
        assert sweep_stale_runs(root) == 0 and sweep_stale_runs(tmp_path / "missing") == 0
    finally:
        if (stale / "fs").is_dir() and os.path.ismount(stale / "fs"):
            subprocess.run(["umount", "-l", str(stale / "fs")])
