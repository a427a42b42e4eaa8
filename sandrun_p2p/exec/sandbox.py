"""The local executor: bubblewrap + cgroups + rlimits, a deterministic environment, a trace per run.

Inside the sandbox a job sees a read-only runtime (/usr and its /bin, /lib links, a few files of
/etc), its code at ``/work`` (the only writable place besides a size-capped ``/tmp`` and
``/checkpoint``), a private /proc and /dev, no network interface but a down loopback, hostname
``sandrun``, uid 65534 in a fresh user namespace with every capability dropped. Nothing else of the
host (the node's keys, config, journal, home) is mounted. The job directory is a host tmpfs of
``disk_mb`` when the host allows mounting (its pages count towards the job's memory cgroup).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from ..protocol.jobspec import Manifest
from . import checkpoint as ckpt
from . import environment
from .bundles import safe_extract
from .capabilities import check_gpu, gpus
from .cgroups import CgroupHost, JobCgroup
from .errors import BundleError, ExecError
from .result import ExecResult
from .tracing import build_trace, collect_outputs, is_regular, walk_files

MiB = 1 << 20
RUNTIME_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives",
             "/etc/localtime", "/etc/mime.types")
SANDBOX_UID = 65534
#: What a job's process runs first (``sh -c SPAWN_GATE sh CMD...``): wait for "go" on stdin (the agent has put it in
#: the job's cgroups and set its limits by then), then exec CMD with stdin from /dev/null; anything else: exit 125.
SPAWN_GATE = 'read -r go && [ "$go" = go ] && exec "$@" </dev/null; exit 125'

CheckpointSink = Callable[[ckpt.Checkpoint], Awaitable[None] | None]


def _tmpfs_mount(path: Path, size_bytes: int) -> bool:
    """Mount a size-capped tmpfs on ``path`` (needs CAP_SYS_ADMIN); False where not allowed."""
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0755,nosuid,nodev",
                        "sandrun-job", str(path)], capture_output=True)
    return r.returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


_RUN_NAME = re.compile(r"^[0-9a-f]{16}-(\d+)-\d+$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_runs(work_root: Path) -> int:
    """Remove the run directories (``<job>-<pid>-<n>``) of processes that no longer exist, unmounting their tmpfs:
    a SIGKILLed agent skips the executor's cleanup. Runs of live processes (another executor sharing the
    directory) are left alone. Returns how many were removed."""
    n = 0
    if not work_root.is_dir():
        return 0
    for run in work_root.iterdir():
        match = _RUN_NAME.match(run.name)
        if not match or not run.is_dir() or _alive(int(match.group(1))):
            continue
        fs = run / "fs"
        if fs.is_dir() and os.path.ismount(fs):
            _umount(fs)
        shutil.rmtree(run, ignore_errors=True)
        n += 1
    return n


def _descendants(root: int) -> list[int]:
    """Pids of every descendant of ``root`` (through /proc), for hosts without cgroups."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _ns_pid(pid: int) -> int:
    """The pid of a process inside its innermost pid namespace (0 when unknown)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    return 0


class LocalExecutor:
    """Runs jobs in a local bubblewrap sandbox. Create once per node; ``run`` may be called concurrently."""

    kind = "local"

    def __init__(self, *, work_root: Path | None = None, results_root: Path | None = None,
                 allow_unsafe: bool = False, disk_mb: int = 1024, tmp_mb: int = 64,
                 max_output_bytes: int = 64 * MiB, max_pids: int = 256, grace_s: float = 2.0,
                 detect_gpus: bool = True) -> None:
        self.work_root = Path(work_root or Path(tempfile.gettempdir()) / "sandrun-p2p-exec")
        self.results_root = Path(results_root or self.work_root / "results")
        self.work_root.mkdir(parents=True, exist_ok=True)
        self.results_root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.work_root, 0o700)
        self.swept = sweep_stale_runs(self.work_root)  # what a SIGKILLed earlier process left mounted
        self.disk_mb, self.tmp_mb = disk_mb, tmp_mb
        self.max_output_bytes, self.max_pids, self.grace_s = max_output_bytes, max_pids, grace_s
        self.bwrap = shutil.which("bwrap")
        self.cgroups = CgroupHost.detect()
        self.gpus = gpus() if detect_gpus else []
        self._counter = 0
        self.enforced = self._probe()
        if not self.enforced["network"] and not allow_unsafe:
            raise ExecError("unsafe-host", "no network isolation on this host (is bubblewrap installed and "
                            "are namespaces allowed?); refusing to run jobs without --allow-unsafe")
        self.unsafe = not self.enforced["network"]

    # ---------------------------------------------------------------- start-up detection
    def _probe(self) -> dict[str, Any]:
        """Run a probe in a real sandbox to see what the host enforces."""
        cg = self.cgroups.enforced()
        enforced: dict[str, Any] = {
            "network": False, "filesystem": False, "user_namespace": False,
            "memory": cg["memory"] or "rlimit-as", "pids": cg["pids"], "cpu": cg["cpu"],
            "timeout_tree_kill": cg["cgroup_kill"] or ("pidns" if self.bwrap else False),
            "disk": False, "output_size": "rlimit-fsize", "sandbox": "none",
        }
        with tempfile.TemporaryDirectory(dir=self.work_root) as td:
            d = Path(td)
            if _tmpfs_mount(d, MiB):
                enforced["disk"] = "tmpfs"
                _umount(d)
            if not self.bwrap:
                return enforced
            (d / "secret").write_text("host-only")
            code = ("import json,os,socket;print(json.dumps({'ifaces':[n for _,n in socket.if_nameindex()],"
                    "'usr_w':os.access('/usr',os.W_OK),'uid':os.getuid(),"
                    f"'secret':os.path.exists({str(d / 'secret')!r}),'host':socket.gethostname()}}))")
            work = d / "w"
            work.mkdir()
            argv = self._bwrap_argv(work, d / "c", Manifest(entrypoint="x"), ["python3", "-c", code])
            (d / "c").mkdir()
            r = subprocess.run(argv, capture_output=True, timeout=30)
        if r.returncode != 0:
            enforced["probe_error"] = r.stderr.decode(errors="replace").strip()[-300:]
            return enforced
        info = json.loads(r.stdout)
        enforced["network"] = set(info["ifaces"]) <= {"lo"}
        enforced["filesystem"] = not info["usr_w"] and not info["secret"]
        enforced["user_namespace"] = info["uid"] == SANDBOX_UID
        enforced["sandbox"] = "bubblewrap"
        return enforced

    # ---------------------------------------------------------------- sandbox command line
    def _bwrap_argv(self, work: Path, ckdir: Path, manifest: Manifest, command: list[str]) -> list[str]:
        a = [self.bwrap or "bwrap", "--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID),
             "--gid", str(SANDBOX_UID), "--disable-userns", "--die-with-parent", "--new-session",
             "--cap-drop", "ALL", "--hostname", environment.HOSTNAME, "--ro-bind", "/usr", "/usr"]
        for d in RUNTIME_DIRS:
            if os.path.islink(d):
                a += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                a += ["--ro-bind", d, d]
        for f in ETC_FILES:
            a += ["--ro-bind-try", f, f]
        a += ["--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys", "--dev", "/dev", "--size", str(self.tmp_mb * MiB), "--tmpfs", "/tmp",
              "--bind", str(work), environment.WORKDIR, "--bind", str(ckdir), environment.CHECKPOINT_DIR]
        if manifest.gpu.required:
            for dev in sorted(Path("/dev").glob("nvidia*")):
                a += ["--dev-bind", str(dev), str(dev)]
            for p in ("/proc/driver/nvidia", "/sys/module/nvidia", "/sys/bus/pci", "/sys/devices"):
                a += ["--ro-bind-try", p, p]
        a += ["--remount-ro", "/", "--chdir", environment.WORKDIR, "--clearenv"]
        for k, v in sorted(environment.job_env(manifest).items()):
            a += ["--setenv", k, v]
        return a + ["--", *command]

    # ---------------------------------------------------------------- running a job
    async def run(self, job_dir: Path | bytes, manifest: Manifest, job_id: bytes, *,
                  checkpoint_from: Path | ckpt.Checkpoint | bytes | None = None,
                  stop: trio.Event | None = None, on_checkpoint: CheckpointSink | None = None) -> ExecResult:
        """Run one job to an outcome and return its trace.

        ``job_dir``: an unpacked directory (copied, never modified) or a tar/tar.gz bundle.
        ``stop``: when set, the job gets SIGTERM, ``grace_s`` to write a checkpoint, then SIGKILL
        (status ``killed``, with a final snapshot). Cancelling the call kills the job at once.
        ``on_checkpoint``: called with each periodic snapshot (``manifest.checkpoint_interval``).
        """
        check_gpu(manifest.gpu, self.gpus)
        self._counter += 1
        name = f"{job_id.hex()[:16]}-{os.getpid()}-{self._counter}"
        run_root = self.work_root / name
        if run_root.exists():
            shutil.rmtree(run_root)
        fs = run_root / "fs"
        fs.mkdir(parents=True)
        mounted = self.enforced["disk"] == "tmpfs" and _tmpfs_mount(fs, self.disk_mb * MiB)
        cg: JobCgroup | None = None
        try:
            work, ckdir = fs / "work", fs / "checkpoint"
            work.mkdir()
            ckdir.mkdir()
            self._place_code(job_dir, work, manifest)
            if checkpoint_from is not None:
                ckpt.restore(checkpoint_from, ckdir)
            for d in (work, ckdir):
                os.chmod(d, 0o777)  # owned by host root; the sandbox uid maps to it but be explicit
            cg = JobCgroup(self.cgroups, name) if (self.cgroups.v1 or self.cgroups.v2) else None
            limits = cg.limit(memory_bytes=manifest.memory_mb * MiB, pids=self.max_pids,
                              cpus=manifest.cpu) if cg else {}
            return await self._execute(run_root, work, ckdir, manifest, job_id, cg, limits,
                                       stop, on_checkpoint)
        finally:
            with trio.CancelScope(shield=True):
                if cg is not None:
                    cg.remove()
                if mounted:
                    _umount(fs)
                shutil.rmtree(run_root, ignore_errors=True)

    def _place_code(self, job_dir: Path | bytes, work: Path, manifest: Manifest) -> None:
        epoch = environment.SOURCE_DATE_EPOCH
        if isinstance(job_dir, bytes | bytearray):
            safe_extract(bytes(job_dir), work, mtime=epoch)
        else:
            src = Path(job_dir)
            if not src.is_dir():
                raise BundleError(f"job directory {src} does not exist")
            shutil.copytree(src, work, symlinks=True, dirs_exist_ok=True)
            for rel in walk_files(work):
                os.utime(work / rel, (epoch, epoch), follow_symlinks=False)
        if not is_regular(work / manifest.entrypoint):
            raise BundleError(f"entrypoint '{manifest.entrypoint}' is not a regular file in the bundle")

    def _confine(self, pid: int, procs_files: list[str], memory_bytes: int) -> None:
        """Put a spawned process (waiting at the gate) in the job's cgroups and set its limits."""
        for f in procs_files:
            with open(f, "w") as fh:
                fh.write(str(pid))
        fsize = self.max_output_bytes
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.prlimit(pid, resource.RLIMIT_CORE, (0, 0))
        if self.enforced["memory"] == "rlimit-as":
            resource.prlimit(pid, resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    async def _spawn(self, argv: list[str], procs_files: list[str], memory_bytes: int,
                     **options: Any) -> trio.Process:
        """Start ``argv`` in the job's cgroups and limits. The process starts as a shell waiting on a pipe (its
        stdin) at ``SPAWN_GATE``; the agent confines it, then says go, and only then is ``argv`` exec'd. A
        ``preexec_fn`` would do the same in the child but makes Python fork the whole agent instead of vfork:
        ~50 ms of the agent's CPU per run (page tables, then a copy-on-write fault per page it touches)."""
        r, w = os.pipe()
        try:
            proc = await trio.lowlevel.open_process(["/bin/sh", "-c", SPAWN_GATE, "sh", *argv], stdin=r,
                                                    **options)
        except BaseException:
            os.close(w)
            raise
        finally:
            os.close(r)
        try:
            self._confine(proc.pid, procs_files, memory_bytes)
            os.write(w, b"go\n")
        except BaseException:
            proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()
            raise
        finally:
            os.close(w)
        return proc

    async def _execute(self, run_root: Path, work: Path, ckdir: Path, manifest: Manifest, job_id: bytes,
                       cg: JobCgroup | None, limits: dict[str, bool], stop: trio.Event | None,
                       on_checkpoint: CheckpointSink | None) -> ExecResult:
        command = [manifest.interpreter, manifest.entrypoint, *manifest.args]
        if self.unsafe:  # no sandbox at all (operator passed allow_unsafe on a host without bwrap)
            argv, cwd = command, str(work)
            env = {**environment.job_env(manifest), "HOME": str(work), "SANDRUN_CHECKPOINT_DIR": str(ckdir)}
        else:
            argv, cwd, env = self._bwrap_argv(work, ckdir, manifest, command), None, {}
        out_path, err_path = run_root / "stdout", run_root / "stderr"
        started = time.monotonic()
        state = {"timed_out": False, "stopped": False}
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = await self._spawn(argv, cg.procs_files() if cg else [], manifest.memory_mb * MiB,
                                     stdout=out, stderr=err, cwd=cwd, env=env)
        try:
            async with trio.open_nursery() as nursery:
                if manifest.checkpoint_interval and on_checkpoint is not None:
                    nursery.start_soon(self._snapshotter, ckdir, manifest.checkpoint_interval, on_checkpoint)
                if stop is not None:
                    nursery.start_soon(self._on_stop, stop, proc, cg, state)
                with trio.move_on_after(manifest.timeout) as scope:
                    await proc.wait()
                if scope.cancelled_caught:
                    state["timed_out"] = True
                    self._kill(proc, cg)
                    await proc.wait()
                nursery.cancel_scope.cancel()
        finally:  # cancelled or failed: nothing may survive
            with trio.CancelScope(shield=True):
                self._kill(proc, cg)
                await proc.wait()
        wall = time.monotonic() - started
        rc = proc.returncode
        exit_code = rc if rc >= 0 else 128 - rc
        oom = bool(cg and cg.oom_killed())
        if state["timed_out"]:
            status = "timeout"
        elif oom:
            status = "oom"
        elif state["stopped"]:
            status = "killed"
        else:
            status = "exited"
        usage: dict[str, Any] = {"wall_ms": int(wall * 1000), **(cg.usage() if cg else {})}
        for stream, p in (("stdout", out_path), ("stderr", err_path)):
            usage[f"{stream}_bytes"] = p.stat().st_size
            if p.stat().st_size >= self.max_output_bytes:
                usage[f"{stream}_capped"] = True
        results = self.results_root / run_root.name
        if results.exists():
            shutil.rmtree(results)
        (results / "outputs").mkdir(parents=True)
        outputs = collect_outputs(work, manifest, results / "outputs")
        shutil.move(out_path, results / "stdout")
        shutil.move(err_path, results / "stderr")
        chain = ckpt.chain(ckdir)
        final = ckpt.snapshot(ckdir) if chain else None
        trace = build_trace(job_id, manifest, status=status, exit_code=exit_code, stdout=results / "stdout",
                            stderr=results / "stderr", outputs=outputs, checkpoints=chain, usage=usage)
        return ExecResult(trace, results / "outputs", results / "stdout", results / "stderr", usage,
                          timed_out=state["timed_out"], oom_killed=oom, checkpoint=final)

    def _kill(self, proc: trio.Process, cg: JobCgroup | None) -> None:
        """Kill the whole tree: the job cgroup, then bwrap (its pid namespace dies with it)."""
        if cg is not None:
            cg.kill()
        elif proc.returncode is None:
            for pid in _descendants(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    async def _on_stop(self, stop: trio.Event, proc: trio.Process, cg: JobCgroup | None,
                       state: dict[str, bool]) -> None:
        await stop.wait()
        state["stopped"] = True
        pids = cg.pids() if cg is not None else _descendants(proc.pid)
        for pid in pids:  # SIGTERM the job's processes, not bwrap itself nor its pid-1 reaper
            if pid != proc.pid and _ns_pid(pid) != 1:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        with trio.move_on_after(self.grace_s):
            await proc.wait()
        self._kill(proc, cg)

    async def _snapshotter(self, ckdir: Path, interval: int, sink: CheckpointSink) -> None:
        last: tuple[bytes, ...] = ()
        while True:
            await trio.sleep(interval)
            snap = await trio.to_thread.run_sync(ckpt.snapshot, ckdir)
            if snap.chain and snap.chain != last:
                last = snap.chain
                r = sink(snap)
                if r is not None:
                    await r
