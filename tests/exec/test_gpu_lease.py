"""GPU allocation on a multi-GPU node, without a GPU: each GPU job gets GPUs of its own and only their devices."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from sandrun_p2p.exec import ExecError, LocalExecutor
from sandrun_p2p.exec.capabilities import capabilities, gpu_device_nodes
from sandrun_p2p.protocol.jobspec import GpuRequirement

A100 = {"model": "A100", "vram_mb": 40960, "compute_capability": "8.0", "cuda_version": "12.4"}
T4 = {"model": "T4", "vram_mb": 15360, "compute_capability": "7.5", "cuda_version": "12.4"}


@pytest.fixture
def node(tmp_path: Path) -> LocalExecutor:
    ex = LocalExecutor(work_root=tmp_path / "runs", detect_gpus=False, allow_unsafe=True)
    ex.gpus = [{**T4, "minor": 0}, {**A100, "minor": 1}, {**A100, "minor": 2}]
    return ex


async def test_concurrent_jobs_get_distinct_fitting_gpus_and_wait_for_a_free_one(node: LocalExecutor) -> None:
    big = GpuRequirement(required=True, min_vram_gb=32)
    first = await node._lease_gpus(big)
    second = await node._lease_gpus(big)
    assert sorted(first + second) == [1, 2]  # the two A100s, never the T4 that does not fit
    got: list[list[int]] = []

    async def third() -> None:
        got.append(await node._lease_gpus(big))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(third)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []  # both fitting GPUs are held: the third job waits
        node._release_gpus(first)
    assert got == [first]
    assert await node._lease_gpus(GpuRequirement(required=True)) == [0]  # any GPU: the T4 is still free


async def test_a_two_gpu_job_waits_until_two_are_free(node: LocalExecutor) -> None:
    one = await node._lease_gpus(GpuRequirement(required=True, min_vram_gb=32))
    got: list[list[int]] = []

    async def pair() -> None:
        got.append(await node._lease_gpus(GpuRequirement(required=True, min_vram_gb=32, count=2)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pair)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        node._release_gpus(one)
    assert got == [[1, 2]]


def test_a_job_gets_the_shared_driver_nodes_and_its_own_gpus_only(tmp_path: Path) -> None:
    for name in (
        "nvidia0",
        "nvidia1",
        "nvidia2",
        "nvidiactl",
        "nvidia-uvm",
        "nvidia-uvm-tools",
        "nvidia-caps",
    ):
        (tmp_path / name).touch()
    got = {p.name for p in gpu_device_nodes([{**A100, "minor": 1}], tmp_path)}
    assert got == {"nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-caps"}
    unknown = {p.name for p in gpu_device_nodes([A100], tmp_path)}  # no minor number: every GPU, as before
    assert {"nvidia0", "nvidia1", "nvidia2"} <= unknown


def test_operator_offers_some_gpus_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    detected = [{**T4, "minor": 0}, {**A100, "minor": 1}, {**A100, "minor": 2}]
    monkeypatch.setattr("sandrun_p2p.exec.sandbox.gpus", lambda: detected)
    ex = LocalExecutor(work_root=tmp_path / "a", gpu_indices=[0, 2])
    assert ex.gpus == [detected[0], detected[2]]
    assert capabilities(ex)["gpus"] == ex.gpus  # the advert offers what the executor will lease
    assert LocalExecutor(work_root=tmp_path / "b", gpu_indices=[]).gpus == []
    assert LocalExecutor(work_root=tmp_path / "c").gpus == detected
    with pytest.raises(ExecError, match=r"no GPU with index \[5\]"):
        LocalExecutor(work_root=tmp_path / "d", gpu_indices=[1, 5])


async def test_status_shows_which_gpus_are_busy(node: LocalExecutor) -> None:
    from sandrun_p2p.agent.cli_status import render_gpus

    held = await node._lease_gpus(GpuRequirement(required=True, min_vram_gb=32))
    st = node.gpu_status()
    assert [(g["model"], g["busy"]) for g in st] == [("T4", False), ("A100", True), ("A100", False)]
    assert render_gpus(st) == "0 T4 (15360 MB) free; 1 A100 (40960 MB) busy; 2 A100 (40960 MB) free"
    node._release_gpus(held)
    assert not any(g["busy"] for g in node.gpu_status())
