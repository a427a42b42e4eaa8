"""Hostile jobs: each is contained, the test process survives, and the trace records what happened."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path

import pytest
import trio
from exec_helpers import JOB_ID, make_job, manifest

from sandrun_p2p.exec import ExecError, LocalExecutor
from sandrun_p2p.exec.cgroups import CgroupHost
from sandrun_p2p.exec.sandbox import JOB_UID_BASE, _run_area


def _procs_with(marker: str) -> list[int]:
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{d}/cmdline").read_bytes():
                    found.append(int(d))
            except OSError:
                pass
    return found


async def test_host_files_and_keys_are_invisible(executor: LocalExecutor, tmp_path: Path) -> None:
    key = tmp_path / "node.key"
    key.write_text("SECRET-KEY-MATERIAL")
    job = make_job(
        tmp_path,
        f"""
        import os
        for p in [{str(key)!r}, "/root", "/etc/passwd", "/etc/shadow", "/home", {str(Path.cwd())!r}]:
            print(p, os.path.exists(p))
    """,
    )
    r = await executor.run(job, manifest(), JOB_ID)
    out = r.stdout.read_text()
    assert r.trace.status == "exited" and r.trace.exit_code == 0
    assert "SECRET" not in out
    assert out.count("False") == 6, out


async def test_cannot_connect_to_host_listener(executor: LocalExecutor, tmp_path: Path) -> None:
    accepted = []
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]

    async def accept() -> None:
        stream = await listener.accept()
        accepted.append(stream)

    job = make_job(
        tmp_path,
        f"""
        import socket
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=2)
            print("connected")
        except OSError as e:
            print("refused", e.errno)
        print(sorted(n for _, n in socket.if_nameindex()))
    """,
    )
    async with trio.open_nursery() as n:
        n.start_soon(accept)
        r = await executor.run(job, manifest(), JOB_ID)
        n.cancel_scope.cancel()
    await listener.aclose()
    out = r.stdout.read_text()
    assert "refused" in out and "connected" not in out
    assert "['lo']" in out
    assert accepted == []


async def _assert_fork_bomb_capped(executor: LocalExecutor, tmp_path: Path) -> None:
    job = make_job(
        tmp_path,
        """
        import os, time
        n = 0
        while True:
            try:
                pid = os.fork()
            except OSError:
                print("capped", n, flush=True)
                break
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            n += 1
    """,
    )
    t = time.monotonic()
    r = await executor.run(job, manifest(timeout=30), JOB_ID)
    out = r.stdout.read_text()
    assert out.startswith("capped"), (out, r.stderr.read_text())
    assert int(out.split()[1]) < executor.max_pids
    assert r.trace.status == "exited"
    assert time.monotonic() - t < 20  # children died with the job, no timeout needed


async def test_fork_bomb_is_capped(executor: LocalExecutor, tmp_path: Path) -> None:
    await _assert_fork_bomb_capped(executor, tmp_path)


@pytest.fixture
def cgroupless_executor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalExecutor:
    """A host with no cgroups at all (what a Firecracker GPU machine looked like): only rlimits are left."""
    if os.geteuid() != 0:
        pytest.skip("per-job host uids need a root agent")
    monkeypatch.setattr(CgroupHost, "detect", classmethod(lambda cls: cls()))
    ex = LocalExecutor(work_root=tmp_path / "runs", disk_mb=32, tmp_mb=8, max_pids=64, detect_gpus=False)
    if not ex.job_uids:
        pytest.skip(f"this host refuses unprivileged bubblewrap: {ex.enforced.get('probe_error', '')}")
    return ex


async def test_fork_bomb_is_capped_without_a_pids_cgroup(
    cgroupless_executor: LocalExecutor, tmp_path: Path
) -> None:
    assert cgroupless_executor.enforced["pids"] == "rlimit-nproc"
    assert cgroupless_executor.enforced["host_uid"] == "per-job"
    await _assert_fork_bomb_capped(cgroupless_executor, tmp_path)


async def test_job_runs_as_its_own_unprivileged_host_uid(
    cgroupless_executor: LocalExecutor, tmp_path: Path
) -> None:
    marker = f"whoami-{uuid.uuid4().hex}"
    job = make_job(
        tmp_path,
        f"""
        import os
        os.execvp("python3", ["python3", "-c", "import time; time.sleep(120)", {marker!r}])
    """,
    )
    uids: set[int] = set()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cgroupless_executor.run, job, manifest(timeout=60), JOB_ID)
        with trio.fail_after(15):
            while not uids:  # poll /proc until the job's process shows up, then read its host uid
                for pid in _procs_with(marker):
                    with contextlib.suppress(OSError):
                        status = Path(f"/proc/{pid}/status").read_text()
                        uids.add(int(next(x for x in status.splitlines() if x.startswith("Uid:")).split()[1]))
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert uids and min(uids) >= JOB_UID_BASE  # not root: an escape is not host root, RLIMIT_NPROC applies
    assert _procs_with(marker) == []


async def test_memory_hog_is_oom_killed(executor: LocalExecutor, tmp_path: Path) -> None:
    job = make_job(
        tmp_path,
        """
        chunks = []
        while True:
            chunks.append(bytearray(16 << 20))
    """,
    )
    r = await executor.run(job, manifest(memory_mb=64), JOB_ID)
    if executor.enforced["memory"] in ("cgroup-v1", "cgroup-v2"):
        assert r.oom_killed and r.trace.status == "oom"
        assert r.trace.exit_code == 137
    else:  # rlimit fallback: MemoryError inside the job
        assert r.trace.exit_code != 0


async def test_filling_the_disk_stops_at_the_cap(executor: LocalExecutor, tmp_path: Path) -> None:
    job = make_job(
        tmp_path,
        """
        import os
        total = 0
        try:
            for i in range(10_000):
                with open(f"fill{i}", "wb") as f:
                    f.write(b"x" * (512 << 10))
                total += 512 << 10
        except OSError as e:
            print("stopped", e.errno, total >> 20)
    """,
    )
    r = await executor.run(job, manifest(memory_mb=256), JOB_ID)
    out = r.stdout.read_text()
    assert executor.enforced["disk"] == "tmpfs"
    assert out.startswith("stopped 28"), out  # ENOSPC
    assert int(out.split()[2]) <= executor.disk_mb


async def test_infinite_loop_times_out(executor: LocalExecutor, tmp_path: Path) -> None:
    job = make_job(tmp_path, "while True:\n    pass\n")
    t = time.monotonic()
    r = await executor.run(job, manifest(timeout=1), JOB_ID)
    assert r.timed_out and r.trace.status == "timeout"
    assert time.monotonic() - t < 5


async def test_setsid_double_fork_escapee_is_killed(executor: LocalExecutor, tmp_path: Path) -> None:
    marker = f"escapee-{uuid.uuid4().hex}"
    job = make_job(
        tmp_path,
        f"""
        import os, subprocess, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execvp("python3", ["python3", "-c", "import time; time.sleep(120)", {marker!r}])
            os._exit(0)
        time.sleep(0.5)
        while True:
            pass
    """,
    )
    r = await executor.run(job, manifest(timeout=2), JOB_ID)
    assert r.trace.status == "timeout"
    assert _procs_with(marker) == []


async def test_writes_outside_the_job_dir_fail(executor: LocalExecutor, tmp_path: Path) -> None:
    target = tmp_path / "outside.txt"
    job = make_job(
        tmp_path,
        f"""
        for p in ["/usr/evil", "/etc/evil", "/evil", {str(target)!r}, "/proc/sys/kernel/hostname"]:
            try:
                open(p, "w").write("x")
                print("wrote", p)
            except OSError as e:
                print("denied", p, e.errno)
        open("/tmp/scratch", "w").write("private tmp is fine")
    """,
    )
    r = await executor.run(job, manifest(), JOB_ID)
    out = r.stdout.read_text()
    assert "wrote" not in out and out.count("denied") == 5, out
    assert not target.exists() and not Path("/evil").exists() and not Path("/usr/evil").exists()
    assert r.trace.exit_code == 0


async def test_huge_stdout_is_capped(executor: LocalExecutor, tmp_path: Path) -> None:
    job = make_job(
        tmp_path,
        """
        import sys
        block = "y" * (1 << 16)
        for _ in range(1 << 14):  # 1 GiB
            sys.stdout.write(block)
    """,
    )
    r = await executor.run(job, manifest(), JOB_ID)
    assert r.stdout.stat().st_size <= executor.max_output_bytes
    assert r.usage.get("stdout_capped") is True
    # Python ignores SIGXFSZ, so the write fails with EFBIG and the job exits with an error
    assert r.trace.exit_code != 0 and "File too large" in r.stderr.read_text()


async def test_cancelling_run_kills_the_job(executor: LocalExecutor, tmp_path: Path) -> None:
    marker = f"cancelled-{uuid.uuid4().hex}"
    job = make_job(
        tmp_path,
        f"""
        import os
        os.execvp("python3", ["python3", "-c", "import time; time.sleep(120)", {marker!r}])
    """,
    )
    with trio.move_on_after(1.0):
        await executor.run(job, manifest(timeout=60), JOB_ID)
    assert _procs_with(marker) == []


def test_a_run_folder_planted_by_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to plant a folder as another user")
    planted = tmp_path / "runs"
    planted.mkdir()
    os.chown(planted, 12345, 12345)  # e.g. made in a shared /tmp before the agent started
    with pytest.raises(ExecError, match="not a folder owned by this user"):
        LocalExecutor(work_root=planted, detect_gpus=False)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(ExecError, match="not a folder owned by this user"):
        LocalExecutor(work_root=link, detect_gpus=False)
    area = _run_area(tmp_path / "exec")  # the runs of a data dir others cannot reach go to a shared /tmp
    if area != tmp_path / "exec":
        area.mkdir()
        os.chown(area, 12345, 12345)
        try:
            with pytest.raises(ExecError, match="not a folder owned by this user"):
                LocalExecutor(work_root=tmp_path / "exec", detect_gpus=False)
        finally:
            area.rmdir()


def test_a_temporary_run_area_is_removed_on_close(tmp_path: Path) -> None:
    ex = LocalExecutor(work_root=tmp_path / "exec", detect_gpus=False)
    if ex.work_root == tmp_path / "exec":
        pytest.skip("the run area is the work root itself here")
    assert ex.work_root.is_dir()
    ex.close()
    assert not ex.work_root.exists() and (tmp_path / "exec").is_dir()  # results stay in the data dir
