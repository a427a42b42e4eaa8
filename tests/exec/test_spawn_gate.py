"""A job's process is confined (cgroups, rlimits) by the agent before its command runs, without a fork of the agent."""

from __future__ import annotations

import os
import resource
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio
from exec_helpers import JOB_ID, make_job, manifest

from sandrun_p2p.exec import LocalExecutor
from sandrun_p2p.exec.sandbox import JOB_UID_BASE


async def test_job_sees_its_limits_and_a_null_stdin(executor: LocalExecutor, tmp_path: Path) -> None:
    job = make_job(
        tmp_path,
        """
        import os, resource, sys
        print(resource.getrlimit(resource.RLIMIT_FSIZE)[0], resource.getrlimit(resource.RLIMIT_CORE)[0])
        print(repr(sys.stdin.read()), os.path.realpath("/proc/self/fd/0"))
    """,
    )
    r = await executor.run(job, manifest(), JOB_ID)
    assert r.trace.status == "exited" and r.trace.exit_code == 0, r.stderr.read_text()
    limits, stdin = r.stdout.read_text().splitlines()
    assert limits == f"{executor.max_output_bytes} 0"
    assert stdin == "'' /dev/null"


async def test_spawn_does_not_pass_a_preexec_hook(
    executor: LocalExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, Any]] = []
    real = trio.lowlevel.open_process

    async def spy(argv: list[str], **options: Any) -> trio.Process:
        seen.append(options)
        return await real(argv, **options)

    monkeypatch.setattr(trio.lowlevel, "open_process", spy)
    r = await executor.run(make_job(tmp_path, "print('ok')"), manifest(), JOB_ID)
    assert r.trace.exit_code == 0 and seen
    assert all(o.get("preexec_fn") is None for o in seen)  # Python then spawns with vfork


async def test_command_never_runs_when_confining_fails(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    ex = LocalExecutor.__new__(LocalExecutor)  # only what _spawn needs
    ex.max_output_bytes = 1 << 20
    ex.enforced = {"memory": "cgroup"}
    with pytest.raises(OSError):
        await ex._spawn(
            ["/bin/sh", "-c", f"touch {marker}"],
            [str(tmp_path / "missing" / "cgroup.procs")],
            1 << 26,
            False,
            None,
        )
    assert not marker.exists()  # the gated shell was killed and reaped before the error reached here


async def test_gated_process_gets_the_limits_before_its_command(tmp_path: Path) -> None:
    out = tmp_path / "limits"
    own_as = resource.getrlimit(resource.RLIMIT_AS)
    ex = LocalExecutor.__new__(LocalExecutor)
    ex.max_output_bytes = 12345
    ex.enforced = {"memory": "rlimit-as"}
    proc = await ex._spawn(
        ["/bin/sh", "-c", f"ulimit -c > {out}; ulimit -v >> {out}"], [], 1 << 30, False, None
    )
    await proc.wait()
    core, vmem = out.read_text().split()
    assert proc.returncode == 0 and core == "0" and int(vmem) == (1 << 30) // 1024
    assert resource.getrlimit(resource.RLIMIT_AS) == own_as  # only the job's process was limited


async def test_gpu_job_gets_a_data_cap_and_its_own_uid_with_a_process_cap(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and util-linux's setpriv")
    ex = LocalExecutor.__new__(LocalExecutor)
    ex.max_output_bytes, ex.max_pids = 12345, 64
    ex.enforced = {"memory": "rlimit-as"}
    with open(tmp_path / "out", "wb") as out:  # the job's uid cannot open files here; it inherits this one
        code = (
            "import os, resource as r; print(os.getuid(), *(r.getrlimit(x)[0] for x in "
            "(r.RLIMIT_DATA, r.RLIMIT_AS, r.RLIMIT_NPROC)))"
        )
        proc = await ex._spawn(
            ["/usr/bin/python3", "-c", code], [], 1 << 30, True, JOB_UID_BASE + 7, stdout=out
        )
        await proc.wait()
    uid, data, vmem, nproc = (int(x) for x in (tmp_path / "out").read_text().split())
    assert proc.returncode == 0 and uid == JOB_UID_BASE + 7
    assert data == 1 << 30 and vmem == resource.RLIM_INFINITY  # CUDA fails under an address-space cap
    assert nproc == 64
