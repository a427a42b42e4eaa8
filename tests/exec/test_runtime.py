"""Operator job runtimes: folders jobs see read-only, their bin first on PATH, outside the environment digest."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from exec_helpers import JOB_ID, make_job, manifest

from sandrun_p2p.exec import ExecError, LocalExecutor
from sandrun_p2p.exec.sandbox import check_runtime

USES_RUNTIME = """
    import os, subprocess, sys
    print(subprocess.run(["rt-hello"], capture_output=True, text=True).stdout.strip())
    try:
        open(os.environ["RT"] + "/written", "w")
        print("runtime writable")
    except OSError:
        print("runtime read-only")
"""


def _runtime(root: Path) -> Path:
    rt = root / "rt"
    (rt / "bin").mkdir(parents=True)
    tool = rt / "bin" / "rt-hello"
    tool.write_text("#!/bin/sh\necho hello from the runtime\n")
    tool.chmod(0o755)
    return rt


def _executor(root: Path, runtimes: list[Path]) -> LocalExecutor:
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (apt-get install -y bubblewrap)")
    return LocalExecutor(work_root=root / "runs", detect_gpus=False, runtimes=runtimes)


async def test_a_job_finds_the_runtimes_tools_first_and_cannot_write_there(tmp_path: Path) -> None:
    rt = _runtime(tmp_path)
    ex = _executor(tmp_path, [rt])
    job = make_job(tmp_path, USES_RUNTIME)
    r = await ex.run(job, manifest(env={"RT": str(rt)}), JOB_ID)
    assert r.trace.exit_code == 0, r.stderr.read_text()
    assert r.stdout.read_text().splitlines() == ["hello from the runtime", "runtime read-only"]
    assert not (rt / "written").exists()


async def test_the_runtime_is_node_plumbing_not_part_of_the_results_digest(tmp_path: Path) -> None:
    """Nodes with and without a runtime reach the same trace root for a job that does not use it (PATH as
    the job is digested stays the fixed one)."""
    job = make_job(tmp_path, "import os\nprint('ok')\n")
    with_rt = await _executor(tmp_path / "a", [_runtime(tmp_path / "a")]).run(job, manifest(), JOB_ID)
    without = await _executor(tmp_path / "b", []).run(job, manifest(), JOB_ID)
    assert with_rt.trace.exit_code == 0 and with_rt.root == without.root


async def test_a_python_environment_as_runtime_gives_jobs_its_packages(tmp_path: Path) -> None:
    """What an operator with PyTorch in a virtualenv does: ``--job-runtime /opt/torch/.venv``."""
    venv = tmp_path / "venv"
    made = subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot make a virtualenv with /usr/bin/python3: {made.stderr.decode()[-200:]}")
    site = next(venv.glob("lib/python3*/site-packages"))
    (site / "rtpkg.py").write_text("WHO = 'a package of the runtime'\n")
    ex = _executor(tmp_path, [venv])
    job = make_job(tmp_path, "import sys, rtpkg\nprint(rtpkg.WHO, sys.prefix)\n")
    r = await ex.run(job, manifest(), JOB_ID)
    assert r.trace.exit_code == 0, r.stderr.read_text()
    assert r.stdout.read_text().strip() == f"a package of the runtime {venv.resolve()}"


def test_runtimes_that_would_expose_the_host_or_the_nodes_files_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "exec").mkdir(parents=True)
    for bad, why in [
        ("relative/dir", "absolute"),
        (str(tmp_path / "missing"), "not a folder"),
        ("/", "whole host"),
        ("/proc/self", "sandbox gives the job itself"),
        (str(data), "node's own files"),
        (str(tmp_path), "node's own files"),
    ]:
        with pytest.raises(ExecError, match=why):
            check_runtime(bad, forbidden=(data / "exec",))
    assert check_runtime(str(_runtime(tmp_path / "ok")), forbidden=(data / "exec",)).endswith("/ok/rt")
    with pytest.raises(ExecError, match="node's own files"):  # the executor checks against its own folders
        LocalExecutor(work_root=data / "exec", detect_gpus=False, runtimes=[data])
