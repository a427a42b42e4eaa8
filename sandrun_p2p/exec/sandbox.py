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
import ctypes
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ..protocol.jobspec import GpuRequirement, Manifest
from . import checkpoint as ckpt
from . import environment
from .bundles import safe_extract
from .capabilities import check_gpu, driver_lib_dirs, fitting_gpus, gpu_device_nodes, gpus
from .cgroups import CgroupHost, JobCgroup
from .errors import BundleError, ExecError
from .result import ExecResult
from .tracing import build_trace, collect_outputs, is_regular, walk_files

MiB = 1 << 20
RUNTIME_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
    "/etc/mime.types",
)
SANDBOX_UID = 65534
#: A root agent starts each job's sandbox as its own unprivileged host uid, JOB_UID_BASE + slot: a sandbox
#: escape is not host root, jobs cannot signal each other, and RLIMIT_NPROC caps a fork bomb per job where no
#: pids cgroup does (the kernel exempts uid 0 from RLIMIT_NPROC). Far above the uids of real accounts.
JOB_UID_BASE = 2_000_000_000
JOB_UID_SLOTS = 100_000
#: What a job's process runs first (``sh -c SPAWN_GATE sh CMD...``): wait for "go" on stdin (the agent has put it in
#: the job's cgroups and set its limits by then), then exec CMD with stdin from /dev/null; anything else: exit 125.
SPAWN_GATE = 'read -r go && [ "$go" = go ] && exec "$@" </dev/null; exit 125'

CheckpointSink = Callable[[ckpt.Checkpoint], Awaitable[None] | None]


def _as_uid(argv: list[str], uid: int) -> list[str]:
    """``argv`` run as host ``uid`` (group too, no supplementary groups) through util-linux's setpriv:
    bubblewrap then builds the sandbox without privileges, mapping SANDBOX_UID to ``uid``."""
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv]


def check_runtime(path: str | Path, forbidden: Sequence[Path] = ()) -> str:
    """An operator's job runtime (e.g. a Python environment with PyTorch, ``/opt/torch/.venv``): an existing
    absolute folder that jobs see read-only at the same path, its ``bin`` first on their PATH. It must not be
    ``/`` or hold the node's own files (its data and run folders, where its keys are): jobs never see those."""
    p = Path(path)
    if not p.is_absolute():
        raise ExecError("bad-runtime", f"job runtime {str(path)!r} must be an absolute path")
    real = p.resolve()
    if not real.is_dir():
        raise ExecError("bad-runtime", f"job runtime {str(path)!r} is not a folder")
    if real == Path("/"):
        raise ExecError("bad-runtime", "job runtime '/' would show jobs the whole host")
    for inside in (environment.WORKDIR, environment.CHECKPOINT_DIR, "/proc", "/dev"):
        if real == Path(inside) or Path(inside) in real.parents:
            raise ExecError(
                "bad-runtime",
                f"job runtime {str(path)!r} is under {inside}, which the sandbox gives the job itself",
            )
    for f in forbidden:
        fr = Path(f).resolve()
        if fr == real or real in fr.parents:
            raise ExecError("bad-runtime", f"job runtime {str(path)!r} holds the node's own files ({fr})")
    return str(real)


def _offered(detected: list[dict[str, Any]], indices: Sequence[int] | None) -> list[dict[str, Any]]:
    """The GPUs the operator offers (``indices`` as NVML and nvidia-smi number them; None: all of them)."""
    if indices is None:
        return detected
    missing = sorted(set(indices) - set(range(len(detected))))
    if missing:
        raise ExecError(
            "gpu-unavailable",
            f"no GPU with index {missing} on this node "
            f"(it has {len(detected)}: {', '.join(g['model'] for g in detected) or 'none'})",
        )
    return [g for i, g in enumerate(detected) if i in set(indices)]


def _chown_tree(root: Path, uid: int) -> None:
    """Give ``root`` and everything under it to ``uid`` (links themselves, never what they point to)."""
    os.chown(root, uid, uid)
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            os.chown(os.path.join(dirpath, n), uid, uid, follow_symlinks=False)


def _check_owned(path: Path) -> None:
    """Refuse a run folder that another user could have planted (a shared /tmp): not a link, ours."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise ExecError(
            "unsafe-host",
            f"{path} is not a folder owned by this user (uid {os.geteuid()}): "
            "another user may have made it; remove it or choose another work root",
        )


def _reachable_by_all(path: Path) -> bool:
    """Whether any uid can walk down to ``path`` (every folder above it is world-searchable)."""
    return all(os.stat(p).st_mode & 0o001 for p in path.resolve().parents)


def _run_area(work_root: Path) -> Path:
    """Where a root agent keeps job runs: ``work_root``, or, when folders above it are closed to other users
    (``/root/.sandrun-p2p``), a folder of its own in the system's temporary directory, so that each job can
    run as its own unprivileged uid (bubblewrap opens the job's folders as that uid)."""
    if os.geteuid() != 0 or _reachable_by_all(work_root):
        return work_root
    tag = hashlib.sha256(str(work_root.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"sandrun-p2p-runs-{tag}"


_MS_NOSUID, _MS_NODEV, _MNT_DETACH = 2, 4, 2
_libc: Any = None


def _mount_calls() -> Any:
    """libc, for the mount(2) and umount2(2) system calls (a ``mount`` process per job cost the agent a fork)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: libc's on Linux
    return _libc


def _tmpfs_mount(path: Path, size_bytes: int) -> bool:
    """Mount a size-capped tmpfs on ``path`` (needs CAP_SYS_ADMIN); False where not allowed."""
    rc = _mount_calls().mount(
        b"sandrun-job",
        os.fsencode(path),
        b"tmpfs",
        _MS_NOSUID | _MS_NODEV,
        f"size={size_bytes},mode=0755".encode(),
    )
    return rc == 0


def _umount(path: Path) -> None:
    """Detach ``path``'s mount (lazily, as ``umount -l``); nothing when it is not mounted."""
    _mount_calls().umount2(os.fsencode(path), _MNT_DETACH)


@dataclass
class _RunArea:
    """One run's directory, whether a tmpfs is mounted on its ``fs`` and its cgroups (what to remove after)."""

    root: Path
    counter: int
    mounted: bool = False
    cg: JobCgroup | None = None


def _remove_area(area: _RunArea) -> None:
    if area.cg is not None:
        area.cg.remove()
    if area.mounted:
        _umount(area.root / "fs")
    shutil.rmtree(area.root, ignore_errors=True)


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

    def __init__(
        self,
        *,
        work_root: Path | None = None,
        results_root: Path | None = None,
        allow_unsafe: bool = False,
        disk_mb: int = 1024,
        tmp_mb: int = 64,
        max_output_bytes: int = 64 * MiB,
        max_pids: int = 256,
        grace_s: float = 2.0,
        detect_gpus: bool = True,
        gpu_indices: Sequence[int] | None = None,
        runtimes: Sequence[str | Path] = (),
    ) -> None:
        configured = Path(work_root or Path(tempfile.gettempdir()) / "sandrun-p2p-exec")
        self.results_root = Path(results_root or configured / "results")
        self.bwrap = shutil.which("bwrap")
        self._configured_root = configured
        configured.mkdir(parents=True, exist_ok=True)  # (before _run_area looks at the folders above it)
        self.work_root = _run_area(configured) if self.bwrap else configured  # where job runs are made
        for root in {configured, self.work_root}:
            root.mkdir(parents=True, exist_ok=True)
            _check_owned(root)
        self.results_root.mkdir(parents=True, exist_ok=True)
        # searchable (not listable) by the jobs' own uids when the probe lets them run unprivileged
        os.chmod(self.work_root, 0o711 if os.geteuid() == 0 and self.bwrap else 0o700)
        # what a SIGKILLed earlier process left mounted (also in the configured folder, where runs used to be)
        self.swept = sum(sweep_stale_runs(r) for r in {configured, self.work_root})
        self.disk_mb, self.tmp_mb = disk_mb, tmp_mb
        self.max_output_bytes, self.max_pids, self.grace_s = max_output_bytes, max_pids, grace_s
        self.cgroups = CgroupHost.detect()
        self.gpus = _offered(gpus() if detect_gpus else [], gpu_indices)
        own = (configured, self.work_root, self.results_root)
        self.runtimes = [check_runtime(r, forbidden=own) for r in runtimes]
        self.gpu_lib_dirs = driver_lib_dirs() if self.gpus else []
        self._gpus_held: set[int] = set()  # indices into self.gpus leased to running jobs
        self._gpus_released: trio.Event | None = None
        self._counter = 0
        self.job_uids = False  # set by the probe: each job runs as its own unprivileged host uid
        self.enforced = self._probe()
        if not self.enforced["network"] and not allow_unsafe:
            raise ExecError(
                "unsafe-host",
                "no network isolation on this host (is bubblewrap installed and "
                "are namespaces allowed?); refusing to run jobs without --allow-unsafe",
            )
        self.unsafe = not self.enforced["network"]

    # ---------------------------------------------------------------- start-up detection
    def _probe(self) -> dict[str, Any]:
        """Run a probe in a real sandbox to see what the host enforces."""
        cg = self.cgroups.enforced()
        enforced: dict[str, Any] = {
            "network": False,
            "filesystem": False,
            "user_namespace": False,
            "memory": cg["memory"] or "rlimit-as",
            "pids": cg["pids"],
            "cpu": cg["cpu"],
            "timeout_tree_kill": cg["cgroup_kill"] or ("pidns" if self.bwrap else False),
            "disk": False,
            "output_size": "rlimit-fsize",
            "sandbox": "none",
        }
        with tempfile.TemporaryDirectory(dir=self.work_root) as td:
            d = Path(td)
            if _tmpfs_mount(d, MiB):
                enforced["disk"] = "tmpfs"
                _umount(d)
            if not self.bwrap:
                return enforced
            (d / "secret").write_text("host-only")
            code = (
                "import json,os,socket;print(json.dumps({'ifaces':[n for _,n in socket.if_nameindex()],"
                "'usr_w':os.access('/usr',os.W_OK),'uid':os.getuid(),"
                f"'secret':os.path.exists({str(d / 'secret')!r}),'host':socket.gethostname()}}))"
            )
            (d / "w").mkdir()
            (d / "c").mkdir()
            argv = self._bwrap_argv(d / "w", d / "c", Manifest(entrypoint="x"), ["python3", "-c", code])
            r = None
            if os.geteuid() == 0 and shutil.which("setpriv") and _reachable_by_all(self.work_root):
                os.chmod(d, 0o711)  # an unprivileged uid first, else the root-mapped sandbox
                r = subprocess.run(_as_uid(argv, JOB_UID_BASE), capture_output=True, timeout=30)
                self.job_uids = r.returncode == 0
            if not self.job_uids:
                os.chmod(self.work_root, 0o700)
                r = subprocess.run(argv, capture_output=True, timeout=30)
        if r.returncode != 0:
            enforced["probe_error"] = r.stderr.decode(errors="replace").strip()[-300:]
            return enforced
        if self.job_uids:
            enforced["host_uid"] = "per-job"
            enforced["pids"] = enforced["pids"] or "rlimit-nproc"
        info = json.loads(r.stdout)
        enforced["network"] = set(info["ifaces"]) <= {"lo"}
        enforced["filesystem"] = not info["usr_w"] and not info["secret"]
        enforced["user_namespace"] = info["uid"] == SANDBOX_UID
        enforced["sandbox"] = "bubblewrap"
        return enforced

    # ---------------------------------------------------------------- sandbox command line
    def _bwrap_argv(
        self, work: Path, ckdir: Path, manifest: Manifest, command: list[str], gpus: Sequence[int] = ()
    ) -> list[str]:
        a = [
            self.bwrap or "bwrap",
            "--unshare-all",
            "--unshare-user",
            "--uid",
            str(SANDBOX_UID),
            "--gid",
            str(SANDBOX_UID),
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--hostname",
            environment.HOSTNAME,
            "--ro-bind",
            "/usr",
            "/usr",
        ]
        for d in RUNTIME_DIRS:
            if os.path.islink(d):
                a += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                a += ["--ro-bind", d, d]
        for f in ETC_FILES:
            a += ["--ro-bind-try", f, f]
        a += [
            "--proc",
            "/proc",
            "--ro-bind",
            "/proc/sys",
            "/proc/sys",
            "--dev",
            "/dev",
            "--size",
            str(self.tmp_mb * MiB),
            "--tmpfs",
            "/tmp",
            "--bind",
            str(work),
            environment.WORKDIR,
            "--bind",
            str(ckdir),
            environment.CHECKPOINT_DIR,
        ]
        for r in self.runtimes:  # after /tmp's tmpfs, which would hide one there
            a += ["--ro-bind", r, r]
        if manifest.gpu.required:
            for dev in gpu_device_nodes([self.gpus[i] for i in gpus]):
                a += ["--dev-bind", str(dev), str(dev)]
            for p in (
                "/proc/driver/nvidia",
                "/sys/module/nvidia",
                "/sys/bus/pci",
                "/sys/devices",
                *self.gpu_lib_dirs,
            ):
                a += ["--ro-bind-try", p, p]
        a += ["--remount-ro", "/", "--chdir", environment.WORKDIR, "--clearenv"]
        for k, v in sorted(self._job_env(manifest).items()):
            a += ["--setenv", k, v]
        return a + ["--", *command]

    def _job_env(self, manifest: Manifest) -> dict[str, str]:
        """The job's environment; a GPU job also gets the driver's library folders, and the operator's job
        runtimes' ``bin`` folders come first on PATH (node plumbing, kept out of the environment digest: they
        differ between hosts, the results must not)."""
        env = environment.job_env(manifest)
        bins = [f"{r}/bin" for r in self.runtimes if os.path.isdir(f"{r}/bin")]
        if bins:
            env["PATH"] = ":".join([*bins, env["PATH"]])
        if manifest.gpu.required and self.gpu_lib_dirs:
            env["LD_LIBRARY_PATH"] = ":".join(self.gpu_lib_dirs)
        return env

    # ---------------------------------------------------------------- running a job
    async def run(
        self,
        job_dir: Path | bytes,
        manifest: Manifest,
        job_id: bytes,
        *,
        checkpoint_from: Path | ckpt.Checkpoint | bytes | None = None,
        stop: trio.Event | None = None,
        on_checkpoint: CheckpointSink | None = None,
    ) -> ExecResult:
        """Run one job to an outcome and return its trace.

        ``job_dir``: an unpacked directory (copied, never modified) or a tar/tar.gz bundle.
        ``stop``: when set, the job gets SIGTERM, ``grace_s`` to write a checkpoint, then SIGKILL
        (status ``killed``, with a final snapshot). Cancelling the call kills the job at once.
        ``on_checkpoint``: called with each periodic snapshot (``manifest.checkpoint_interval``).
        """
        check_gpu(manifest.gpu, self.gpus)
        gpus = await self._lease_gpus(manifest.gpu) if manifest.gpu.required else []
        try:
            return await self._run_leased(
                job_dir, manifest, job_id, checkpoint_from, stop, on_checkpoint, gpus
            )
        finally:
            self._release_gpus(gpus)

    async def _lease_gpus(self, req: GpuRequirement) -> list[int]:
        """``req.count`` GPUs that meet ``req`` and no other running job holds (waits until enough are free:
        each GPU job gets GPUs of its own; its timeout starts when it starts)."""
        fitting = fitting_gpus(req, self.gpus)
        while True:
            free = [i for i in fitting if i not in self._gpus_held]
            if len(free) >= req.count:
                self._gpus_held.update(free[: req.count])
                return free[: req.count]
            if self._gpus_released is None:
                self._gpus_released = trio.Event()
            await self._gpus_released.wait()

    def close(self) -> None:
        """Remove the run area when it is a temporary one of its own and no run is left in it."""
        if self.work_root != self._configured_root:
            with contextlib.suppress(OSError):
                self.work_root.rmdir()

    def gpu_status(self) -> list[dict[str, Any]]:
        """The offered GPUs and whether a running job holds each (for ``sandrun-p2p status``)."""
        return [
            {
                "index": g.get("index", i),
                "model": g["model"],
                "vram_mb": g["vram_mb"],
                "busy": i in self._gpus_held,
            }
            for i, g in enumerate(self.gpus)
        ]

    def _release_gpus(self, gpus: list[int]) -> None:
        if gpus:
            self._gpus_held.difference_update(gpus)
            if self._gpus_released is not None:
                self._gpus_released.set()
                self._gpus_released = None

    async def _run_leased(
        self,
        job_dir: Path | bytes,
        manifest: Manifest,
        job_id: bytes,
        checkpoint_from: Path | ckpt.Checkpoint | bytes | None,
        stop: trio.Event | None,
        on_checkpoint: CheckpointSink | None,
        gpus: list[int],
    ) -> ExecResult:
        self._counter += 1
        area = _RunArea(self.work_root / f"{job_id.hex()[:16]}-{os.getpid()}-{self._counter}", self._counter)
        try:
            # the file work of a run (unpacking, mounting, cgroups, removing it all) happens in a worker thread:
            # done in the loop, it held up every other task of the agent (gossip, fetches) for milliseconds
            work, ckdir, uid, limits = await trio.to_thread.run_sync(
                self._prepare_area, area, job_dir, manifest, checkpoint_from
            )
            return await self._execute(
                area.root, work, ckdir, manifest, job_id, area.cg, limits, stop, on_checkpoint, uid, gpus
            )
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_remove_area, area)

    def _prepare_area(
        self,
        area: _RunArea,
        job_dir: Path | bytes,
        manifest: Manifest,
        checkpoint_from: Path | ckpt.Checkpoint | bytes | None,
    ) -> tuple[Path, Path, int | None, dict[str, bool]]:
        """Make a run's directories (a tmpfs where enforced), unpack its code and checkpoint, make its cgroups;
        what was made is recorded in ``area`` for :func:`_remove_area`, also when this fails part-way."""
        if area.root.exists():
            shutil.rmtree(area.root)
        fs = area.root / "fs"
        fs.mkdir(parents=True)
        area.mounted = self.enforced["disk"] == "tmpfs" and _tmpfs_mount(fs, self.disk_mb * MiB)
        work, ckdir = fs / "work", fs / "checkpoint"
        work.mkdir()
        ckdir.mkdir()
        self._place_code(job_dir, work, manifest)
        if checkpoint_from is not None:
            ckpt.restore(checkpoint_from, ckdir)
        uid = JOB_UID_BASE + area.counter % JOB_UID_SLOTS if self.job_uids else None
        for d in (work, ckdir):
            os.chmod(d, 0o777)
            if uid is not None:  # the job's own files, as they were when its sandbox uid mapped to root
                _chown_tree(d, uid)
        area.cg = JobCgroup(self.cgroups, area.root.name) if (self.cgroups.v1 or self.cgroups.v2) else None
        limits = (
            area.cg.limit(memory_bytes=manifest.memory_mb * MiB, pids=self.max_pids, cpus=manifest.cpu)
            if area.cg
            else {}
        )
        return work, ckdir, uid, limits

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

    def _confine(
        self, pid: int, procs_files: list[str], memory_bytes: int, gpu: bool, uid: int | None
    ) -> None:
        """Put a spawned process (waiting at the gate) in the job's cgroups and set its limits."""
        for f in procs_files:
            with open(f, "w") as fh:
                fh.write(str(pid))
        fsize = self.max_output_bytes
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.prlimit(pid, resource.RLIMIT_CORE, (0, 0))
        if self.enforced["memory"] == "rlimit-as":
            # a GPU job gets a data-segment cap instead: the CUDA driver reserves far more address space than
            # it uses and fails to start under RLIMIT_AS
            cap = resource.RLIMIT_DATA if gpu else resource.RLIMIT_AS
            resource.prlimit(pid, cap, (memory_bytes, memory_bytes))
        if uid is not None:  # counted against the job's own uid once setpriv has switched to it
            resource.prlimit(pid, resource.RLIMIT_NPROC, (self.max_pids, self.max_pids))

    async def _spawn(
        self,
        argv: list[str],
        procs_files: list[str],
        memory_bytes: int,
        gpu: bool,
        uid: int | None,
        **options: Any,
    ) -> trio.Process:
        """Start ``argv`` in the job's cgroups and limits, as host ``uid`` when given. The process starts as a
        shell waiting on a pipe (its stdin) at ``SPAWN_GATE``; the agent confines it, then says go, and only then
        is ``argv`` exec'd (through setpriv for the uid). A ``preexec_fn`` would do the same in the child but makes
        Python fork the whole agent instead of vfork: ~50 ms of the agent's CPU per run (page tables, then a
        copy-on-write fault per page it touches)."""
        if uid is not None:
            argv = _as_uid(argv, uid)
        r, w = os.pipe()
        try:
            proc = await trio.lowlevel.open_process(
                ["/bin/sh", "-c", SPAWN_GATE, "sh", *argv], stdin=r, **options
            )
        except BaseException:
            os.close(w)
            raise
        finally:
            os.close(r)
        try:
            self._confine(proc.pid, procs_files, memory_bytes, gpu, uid)
            os.write(w, b"go\n")
        except BaseException:
            proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()
            raise
        finally:
            os.close(w)
        return proc

    async def _execute(
        self,
        run_root: Path,
        work: Path,
        ckdir: Path,
        manifest: Manifest,
        job_id: bytes,
        cg: JobCgroup | None,
        limits: dict[str, bool],
        stop: trio.Event | None,
        on_checkpoint: CheckpointSink | None,
        uid: int | None,
        gpus: Sequence[int],
    ) -> ExecResult:
        command = [manifest.interpreter, manifest.entrypoint, *manifest.args]
        out_path, err_path = run_root / "stdout", run_root / "stderr"
        started = time.monotonic()
        state = {"timed_out": False, "stopped": False}
        if self.unsafe:  # no sandbox at all (operator passed allow_unsafe on a host without bwrap)
            argv, cwd = command, str(work)
            env = {**self._job_env(manifest), "HOME": str(work), "SANDRUN_CHECKPOINT_DIR": str(ckdir)}
        else:
            argv, cwd, env = self._bwrap_argv(work, ckdir, manifest, command, gpus), None, {}
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = await self._spawn(
                argv,
                cg.procs_files() if cg else [],
                manifest.memory_mb * MiB,
                manifest.gpu.required,
                uid,
                stdout=out,
                stderr=err,
                cwd=cwd,
                env=env,
            )
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
        trace = build_trace(
            job_id,
            manifest,
            status=status,
            exit_code=exit_code,
            stdout=results / "stdout",
            stderr=results / "stderr",
            outputs=outputs,
            checkpoints=chain,
            usage=usage,
        )
        return ExecResult(
            trace,
            results / "outputs",
            results / "stdout",
            results / "stderr",
            usage,
            timed_out=state["timed_out"],
            oom_killed=oom,
            checkpoint=final,
        )

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

    async def _on_stop(
        self, stop: trio.Event, proc: trio.Process, cg: JobCgroup | None, state: dict[str, bool]
    ) -> None:
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
