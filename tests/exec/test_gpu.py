"""GPU nodes for real: NVML detection, a CUDA job in the sandbox, no GPU for jobs that did not ask for one.

Skipped where NVML sees no NVIDIA GPU (CI has none). ``scripts/device_gpu_check.sh`` runs them on a GPU
machine; the README's "GPU nodes" section gives what was seen there.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import trio
from exec_helpers import JOB_ID, make_job, manifest

from sandrun_p2p.exec import LocalExecutor
from sandrun_p2p.exec.capabilities import capabilities, caps_from_exec, gpu_device_nodes, gpus
from sandrun_p2p.protocol.claiming import eligible, ineligibility
from sandrun_p2p.protocol.jobspec import Manifest

pytestmark = pytest.mark.skipif(not gpus(), reason="no NVIDIA GPU seen through NVML")

EXAMPLE = Path(__file__).parents[2] / "examples" / "gpu-cuda"
N, ROUNDS = 4096, 100  # small enough for the reference to be computed here in Python


def example_manifest(**kw: object) -> Manifest:
    d = json.loads((EXAMPLE / "job.json").read_text())
    d["env"] = {"N": str(N), "ROUNDS": str(ROUNDS)}
    d.update(kw)
    return Manifest.from_dict(d)


def reference_sha256(n: int, rounds: int) -> str:
    """The example kernel's result computed on the CPU: xorshift32 from seed i + 1, ``rounds`` steps."""
    out = []
    for i in range(n):
        x = i + 1
        for _ in range(rounds):
            x ^= (x << 13) & 0xFFFFFFFF
            x ^= x >> 17
            x ^= (x << 5) & 0xFFFFFFFF
        out.append(x)
    return hashlib.sha256(struct.pack(f"<{n}I", *out)).hexdigest()


@pytest.fixture(scope="module")
def gpu_executor(tmp_path_factory: pytest.TempPathFactory) -> LocalExecutor:
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    return LocalExecutor(work_root=tmp_path_factory.mktemp("gpu") / "runs", grace_s=2.0)


def test_nvml_sees_what_nvidia_smi_sees() -> None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        pytest.skip("nvidia-smi is not on PATH")
    rows = (
        subprocess.run(
            [smi, "--query-gpu=name,memory.total,compute_cap", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        .stdout.strip()
        .splitlines()
    )
    smi_gpus = [[c.strip() for c in r.split(",")] for r in rows]
    got = gpus()
    assert [g["model"] for g in got] == [r[0] for r in smi_gpus]
    for g, (_, mem, cc) in zip(got, smi_gpus, strict=True):
        assert abs(g["vram_mb"] - int(mem)) <= max(64, int(mem) // 100)  # NVML bytes vs nvidia-smi's MiB
        assert g["compute_capability"] == cc
        major, minor = g["cuda_version"].split(".")
        assert int(major) >= 11 and minor.isdigit()


async def test_cuda_job_runs_sandboxed_on_the_gpu_and_reproduces(gpu_executor: LocalExecutor) -> None:
    assert gpu_executor.enforced["network"] is True  # the GPU does not cost the job its network isolation
    m = example_manifest()
    a = await gpu_executor.run(EXAMPLE, m, JOB_ID)
    assert a.trace.exit_code == 0, a.stderr.read_text()
    out = json.loads((a.outputs_dir / "xorshift.json").read_text())
    assert out == {"n": N, "rounds": ROUNDS, "sha256": reference_sha256(N, ROUNDS), "first": out["first"]}
    b = await gpu_executor.run(EXAMPLE, m, JOB_ID)
    assert b.root == a.root  # a second run (another node with the same result) reaches the same trace root


async def test_job_that_did_not_ask_for_a_gpu_gets_none(gpu_executor: LocalExecutor, tmp_path: Path) -> None:
    a = await gpu_executor.run(EXAMPLE, example_manifest(gpu={"required": False}), JOB_ID)
    err = a.stderr.read_text()
    assert a.trace.exit_code == 3, err
    assert "cuInit failed" in err or "no NVIDIA driver library" in err
    probe = make_job(tmp_path, "import os\nprint(sorted(d for d in os.listdir('/dev') if 'nvidia' in d))\n")
    r = await gpu_executor.run(probe, manifest(), JOB_ID)
    assert r.stdout.read_text().strip() == "[]"


async def test_gpu_job_sees_the_card_the_advert_names(gpu_executor: LocalExecutor, tmp_path: Path) -> None:
    code = (
        "import ctypes\ncuda = ctypes.CDLL('libcuda.so.1')\nassert cuda.cuInit(0) == 0\n"
        "d = ctypes.c_int()\nassert cuda.cuDeviceGet(ctypes.byref(d), 0) == 0\n"
        "b = ctypes.create_string_buffer(256)\nassert cuda.cuDeviceGetName(b, 256, d) == 0\n"
        "print(b.value.decode())\n"
    )
    r = await gpu_executor.run(make_job(tmp_path, code), manifest(gpu={"required": True}), JOB_ID)
    assert r.trace.exit_code == 0, r.stderr.read_text()
    assert r.stdout.read_text().strip() == gpu_executor.gpus[0]["model"]


def test_advert_makes_this_node_eligible_for_gpu_jobs(gpu_executor: LocalExecutor) -> None:
    caps = caps_from_exec(capabilities(gpu_executor), {}, 0)
    assert len(caps.gpus) == len(gpu_executor.gpus) >= 1
    assert eligible(caps, example_manifest())
    too_big = example_manifest(gpu={"required": True, "min_vram_gb": caps.gpus[0].vram_mb // 1024 + 1})
    assert ineligibility(caps, too_big) == "0 fitting GPU(s) < 1"


async def test_gpu_job_gets_its_own_gpu_device_nodes_only(
    gpu_executor: LocalExecutor, tmp_path: Path
) -> None:
    probe = make_job(tmp_path, "import os\nprint(sorted(d for d in os.listdir('/dev') if 'nvidia' in d))\n")
    r = await gpu_executor.run(probe, manifest(gpu={"required": True}), JOB_ID)
    want = sorted(p.name for p in gpu_device_nodes([gpu_executor.gpus[0]]))
    assert "minor" in gpu_executor.gpus[0] and f"nvidia{gpu_executor.gpus[0]['minor']}" in want
    assert r.stdout.read_text().strip() == str(want)


async def test_two_gpu_jobs_on_a_one_gpu_node_take_turns(gpu_executor: LocalExecutor, tmp_path: Path) -> None:
    if len(gpu_executor.gpus) != 1:
        pytest.skip("the node has more than one GPU")
    code = "import time\nt = time.time()\ntime.sleep(1)\nprint(t, time.time())\n"
    spans: list[tuple[float, float]] = []

    async def one(i: int) -> None:
        d = tmp_path / str(i)
        d.mkdir()
        r = await gpu_executor.run(make_job(d, code), manifest(gpu={"required": True}), JOB_ID)
        a, b = r.stdout.read_text().split()
        spans.append((float(a), float(b)))

    async with trio.open_nursery() as nursery:
        for i in range(2):
            nursery.start_soon(one, i)
    first, second = sorted(spans)
    assert first[1] <= second[0]  # the second started only once the first had released the GPU
