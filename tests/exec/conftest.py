"""Shared fixtures for the executor tests: one sandboxed executor with small caps for hostile jobs."""

from __future__ import annotations

import shutil

import pytest

from sandrun_p2p.exec import LocalExecutor


@pytest.fixture(scope="session")
def executor(tmp_path_factory: pytest.TempPathFactory) -> LocalExecutor:
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (apt-get install -y bubblewrap)")
    root = tmp_path_factory.mktemp("exec")
    return LocalExecutor(
        work_root=root / "runs",
        disk_mb=32,
        tmp_mb=8,
        max_output_bytes=1 << 20,
        max_pids=64,
        grace_s=2.0,
        detect_gpus=False,
    )
