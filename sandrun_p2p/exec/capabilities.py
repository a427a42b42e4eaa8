"""What this node can offer: CPUs, memory, disk, GPUs (through NVML), and what its sandbox enforces."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path
from typing import Any

from ..protocol.claiming import Capabilities, Gpu
from ..protocol.jobspec import GpuRequirement, version_tuple
from .errors import ExecError


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or platform.machine()


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def mem_mb() -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 0


def disk_mb(path: Path) -> int:
    with contextlib.suppress(OSError):
        return shutil.disk_usage(path).free // (1 << 20)
    return 0


def gpus() -> list[dict[str, Any]]:
    """GPUs seen through NVML; no library, no driver or no GPU gives an empty list."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return []
    out: list[dict[str, Any]] = []
    try:
        cuda = pynvml.nvmlSystemGetCudaDriverVersion_v2()
        cuda_s = f"{cuda // 1000}.{(cuda % 1000) // 10}"
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
            g = {
                "index": i,  # NVML's (and nvidia-smi's) number for it
                "model": name.decode() if isinstance(name, bytes) else str(name),
                "vram_mb": int(pynvml.nvmlDeviceGetMemoryInfo(h).total) // (1 << 20),
                "compute_capability": f"{major}.{minor}",
                "cuda_version": cuda_s,
            }
            with contextlib.suppress(Exception):  # /dev/nvidia<minor> is this GPU's device node
                g["minor"] = int(pynvml.nvmlDeviceGetMinorNumber(h))
            out.append(g)
    except Exception:
        return out
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
    return out


def driver_lib_dirs() -> list[str]:
    """Folders holding the NVIDIA driver's user-space libraries (``libcuda``, ``libnvidia-ml``) on this host.

    Read from where NVML's library is mapped once loaded: driver installs differ (``/usr/lib/x86_64-linux-gnu``,
    ``/usr/local/nvidia/lib64`` in containers, ...) and a GPU job's sandbox must see the same ones.
    """
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no pynvml, no library, no driver
        return []
    dirs: list[str] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/maps").read_text().splitlines():
            path = line.split(maxsplit=5)[-1]
            if "/libnvidia-ml.so" in path or "/libcuda.so" in path:
                d = str(Path(path).parent)
                if d not in dirs:
                    dirs.append(d)
    with contextlib.suppress(Exception):
        pynvml.nvmlShutdown()
    return dirs


def fitting_gpus(req: GpuRequirement, available: list[dict[str, Any]]) -> list[int]:
    """Indices of the GPUs in ``available`` that meet ``req`` (memory, compute capability, CUDA version)."""
    return [
        i
        for i, g in enumerate(available)
        if g["vram_mb"] >= req.min_vram_gb * 1024
        and version_tuple(g["compute_capability"]) >= version_tuple(req.compute_capability)
        and version_tuple(g["cuda_version"]) >= version_tuple(req.cuda_version)
    ]


def gpu_device_nodes(leased: list[dict[str, Any]], dev: Path = Path("/dev")) -> list[Path]:
    """The device nodes a job holding the ``leased`` GPUs gets: the driver's shared nodes (``nvidiactl``,
    ``nvidia-uvm``, ...) and ``nvidia<minor>`` of its own GPUs only; all GPUs where a minor number is unknown."""
    minors = {g.get("minor") for g in leased}
    out = []
    for node in sorted(dev.glob("nvidia*")):
        m = re.fullmatch(r"nvidia(\d+)", node.name)
        if m is None or None in minors or int(m.group(1)) in minors:
            out.append(node)
    return out


def check_gpu(req: GpuRequirement, available: list[dict[str, Any]]) -> None:
    """Raise :class:`ExecError` unless ``available`` has ``req.count`` GPUs meeting ``req``."""
    if not req.required:
        return
    if len(fitting_gpus(req, available)) < req.count:
        have = ", ".join(f"{g['model']} ({g['vram_mb']} MB, cc {g['compute_capability']})" for g in available)
        raise ExecError(
            "gpu-unavailable",
            f"job needs {req.count} GPU(s) with >= {req.min_vram_gb} GB, compute capability "
            f">= {req.compute_capability or 'any'}, CUDA >= {req.cuda_version or 'any'}; "
            f"this node has {have or 'no GPU'}",
        )


def capabilities(executor: Any | None = None, *, work_root: Path | None = None) -> dict[str, Any]:
    """The plain dict the agent puts in its advert."""
    root = work_root or getattr(executor, "work_root", None) or Path("/tmp")
    gs = getattr(executor, "gpus", None)
    return {
        "cpus": cpu_count(),
        "cpu_model": cpu_model(),
        "mem_mb": mem_mb(),
        "disk_mb": disk_mb(Path(root)),
        "gpus": list(gs) if gs is not None else gpus(),
        "enforced": dict(getattr(executor, "enforced", {}) or {}),
        "executor": getattr(executor, "kind", "local"),
    }


#: Capability values short enough to list in an advert's "enforced" field.
_MAX_ENFORCED = 32


def caps_from_exec(d: dict[str, Any], overrides: dict[str, Any], max_jobs: int) -> Capabilities:
    """Turn exec's capability dict (plus operator overrides) into the advert's :class:`Capabilities`."""
    d = {**d, **overrides}
    gpus = tuple(
        Gpu(
            str(g.get("model", ""))[:64],
            int(g.get("vram_mb", 0)),
            str(g.get("compute_capability", g.get("cc", "")))[:8],
            str(g.get("cuda_version", g.get("cuda", "")))[:8],
        )
        for g in d.get("gpus", [])
    )
    enforced = d.get("enforced", {})
    if isinstance(enforced, dict):
        enforced = [k for k, v in sorted(enforced.items()) if v and k != "probe_error"]
    cpus = max(1, int(d.get("cpus", 1)))
    jobs = int(overrides.get("max_jobs", 0)) or max_jobs or cpus
    return Capabilities(
        cpus=cpus,
        mem_mb=int(d.get("mem_mb", 0)),
        disk_mb=int(d.get("disk_mb", 0)),
        gpus=gpus,
        enforced=frozenset(str(e)[:32] for e in list(enforced)[:_MAX_ENFORCED]),
        executor=str(d.get("executor", "local"))[:32],
        max_jobs=min(jobs, 4096),
    )
