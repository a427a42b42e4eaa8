"""cgroup detection and per-job cgroups: memory, pids and cpu limits, OOM detection, whole-tree kill.

Works with cgroup v2 where controllers are delegated, cgroup v1 (memory, pids, freezer, cpu,
cpuacct), and the hybrid layout where v2 is mounted without controllers but ``cgroup.kill`` works.
Each job cgroup is created under the agent's own cgroup in a ``sandrun-p2p`` directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

V1_CONTROLLERS = ("memory", "pids", "freezer", "cpu", "cpuacct")
PARENT = "sandrun-p2p"


def _read(p: Path) -> str:
    try:
        return p.read_text()
    except OSError:
        return ""


def _write(p: Path, value: str) -> bool:
    try:
        p.write_text(value)
        return True
    except OSError:
        return False


def _mounts() -> tuple[dict[str, Path], Path | None]:
    """v1 controller -> mount point, and the cgroup2 mount point (if any), from /proc/self/mountinfo."""
    v1: dict[str, Path] = {}
    v2: Path | None = None
    for line in _read(Path("/proc/self/mountinfo")).splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        mnt, fstype, opts = Path(fields[4]), rfields[0], rfields[2].split(",")
        if fstype == "cgroup2" and v2 is None:
            v2 = mnt
        elif fstype == "cgroup":
            for c in V1_CONTROLLERS:
                if c in opts:
                    v1.setdefault(c, mnt)
    return v1, v2


def _own_paths() -> tuple[dict[str, str], str | None]:
    v1: dict[str, str] = {}
    v2: str | None = None
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, ctrls, path = parts
        if ctrls == "":
            v2 = path
        for c in ctrls.split(","):
            v1[c] = path
    return v1, v2


def _parent_dir(mount: Path, own: str | None) -> Path | None:
    """``<mount>/<own cgroup>/sandrun-p2p``, created if possible; None when not writable."""
    base = mount / (own or "/").lstrip("/")
    if not base.is_dir():
        base = mount  # cgroup namespace: our cgroup is the mount root
    parent = base / PARENT
    try:
        parent.mkdir(exist_ok=True)
        probe = parent / f"probe-{os.getpid()}"
        probe.mkdir(exist_ok=True)
        probe.rmdir()
    except OSError:
        return None
    return parent


@dataclass
class CgroupHost:
    """What this host lets the agent do with cgroups."""

    v1: dict[str, Path] = field(default_factory=dict)  # controller -> parent directory for job cgroups
    v2: Path | None = None  # parent directory in the cgroup2 hierarchy
    v2_controllers: frozenset[str] = frozenset()

    @classmethod
    def detect(cls) -> CgroupHost:
        mounts1, mount2 = _mounts()
        own1, own2 = _own_paths()
        host = cls()
        for c, mnt in mounts1.items():
            p = _parent_dir(mnt, own1.get(c))
            if p is not None:
                host.v1[c] = p
        if mount2 is not None:
            p = _parent_dir(mount2, own2)
            if p is not None and (p / "cgroup.procs").exists():
                host.v2 = p
                avail = set(_read(p / "cgroup.controllers").split())
                want = [c for c in ("memory", "pids", "cpu") if c in avail]
                if want:
                    _write(p / "cgroup.subtree_control", " ".join("+" + c for c in want))
                host.v2_controllers = frozenset(_read(p / "cgroup.subtree_control").split())
        return host

    @property
    def kill_method(self) -> str | None:
        if self.v2 is not None and (self.v2 / "cgroup.kill").exists():
            return "cgroup.kill"
        if "freezer" in self.v1:
            return "freezer"
        return None

    def enforced(self) -> dict[str, str | bool]:
        def which(c: str) -> str | bool:
            if c in self.v2_controllers:
                return "cgroup-v2"
            return "cgroup-v1" if c in self.v1 else False

        return {
            "memory": which("memory"),
            "pids": which("pids"),
            "cpu": which("cpu"),
            "cgroup_kill": self.kill_method or False,
        }


class JobCgroup:
    """The cgroups of one job (one directory per hierarchy)."""

    def __init__(self, host: CgroupHost, name: str) -> None:
        self.host = host
        self.dirs: dict[str, Path] = {}
        for c, parent in host.v1.items():
            d = parent / name
            with contextlib.suppress(FileExistsError):
                d.mkdir()
            self.dirs[c] = d
        if host.v2 is not None:
            d = host.v2 / name
            with contextlib.suppress(FileExistsError):
                d.mkdir()
            self.dirs["v2"] = d

    def _dir(self, controller: str) -> tuple[Path | None, bool]:
        if controller in self.host.v2_controllers and "v2" in self.dirs:
            return self.dirs["v2"], True
        return self.dirs.get(controller), False

    def limit(self, *, memory_bytes: int, pids: int, cpus: int) -> dict[str, bool]:
        """Apply limits; returns which were really set."""
        done = {"memory": False, "pids": False, "cpu": False}
        d, v2 = self._dir("memory")
        if d is not None:
            if v2:
                done["memory"] = _write(d / "memory.max", str(memory_bytes))
                _write(d / "memory.swap.max", "0")
            else:
                done["memory"] = _write(d / "memory.limit_in_bytes", str(memory_bytes))
                _write(d / "memory.memsw.limit_in_bytes", str(memory_bytes))
                _write(d / "memory.swappiness", "0")
        d, _ = self._dir("pids")
        if d is not None:
            done["pids"] = _write(d / "pids.max", str(pids))
        d, v2 = self._dir("cpu")
        if d is not None:
            if v2:
                done["cpu"] = _write(d / "cpu.max", f"{cpus * 100000} 100000")
            else:
                done["cpu"] = _write(d / "cpu.cfs_period_us", "100000") and _write(
                    d / "cpu.cfs_quota_us", str(cpus * 100000)
                )
        return done

    def procs_files(self) -> list[str]:
        """The cgroup.procs files a new process's pid is written into (before it runs the job)."""
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def pids(self) -> list[int]:
        out: set[int] = set()
        for d in self.dirs.values():
            out.update(int(x) for x in _read(d / "cgroup.procs").split())
        return sorted(out)

    def kill(self) -> None:
        """SIGKILL every process in the job's cgroups, forks in flight included."""
        v2 = self.dirs.get("v2")
        if v2 is not None and _write(v2 / "cgroup.kill", "1"):
            return
        frz = self.dirs.get("freezer")
        if frz is not None and _write(frz / "freezer.state", "FROZEN"):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _write(frz / "freezer.state", "THAWED")
            return
        for _ in range(100):  # no freezer: kill until empty (pids.max bounds the race)
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def oom_killed(self) -> bool:
        d, v2 = self._dir("memory")
        if d is None:
            return False
        text = _read(d / ("memory.events" if v2 else "memory.oom_control"))
        for line in text.splitlines():
            k, _, v = line.partition(" ")
            if k == "oom_kill" and v.strip().isdigit() and int(v) > 0:
                return True
        return False

    def usage(self) -> dict[str, int]:
        u: dict[str, int] = {}
        d, v2 = self._dir("memory")
        if d is not None:
            peak = _read(d / ("memory.peak" if v2 else "memory.max_usage_in_bytes")).strip()
            if peak.isdigit():
                u["memory_peak_bytes"] = int(peak)
        if "cpuacct" in self.dirs:
            ns = _read(self.dirs["cpuacct"] / "cpuacct.usage").strip()
            if ns.isdigit():
                u["cpu_ms"] = int(ns) // 1_000_000
        elif "v2" in self.dirs:
            for line in _read(self.dirs["v2"] / "cpu.stat").splitlines():
                if line.startswith("usage_usec "):
                    u["cpu_ms"] = int(line.split()[1]) // 1000
        return u

    def remove(self, wait_s: float = 2.0) -> None:
        """Remove the job's cgroups once empty (killing again if something is left)."""
        deadline = time.monotonic() + wait_s
        while self.pids() and time.monotonic() < deadline:
            self.kill()
            time.sleep(0.002)
        for d in self.dirs.values():
            with contextlib.suppress(OSError):
                d.rmdir()
