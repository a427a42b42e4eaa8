"""The sandrun backend against a stand-in server that behaves like the real one (see the notes)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import httpx
import pytest
import trio
from exec_helpers import JOB_ID, make_job, manifest
from sandrun_fixture import FakeSandrun

from sandrun_p2p.exec import BundleError, ExecError, LocalExecutor
from sandrun_p2p.exec.sandrun import SandrunExecutor

JOB = """
    import sys
    print("hello from", sys.argv[1:])
    with open("result.txt", "w") as f:
        f.write("42\\n")
"""


def _client(url: str, tmp_path: Path, **kw: object) -> SandrunExecutor:
    opts: dict = {
        "results_root": tmp_path / "res",
        "request_timeout": 2.0,
        "poll_interval": 0.02,
        "backoff": 0.02,
    }
    opts.update(kw)
    return SandrunExecutor(url, **opts)


async def test_run_recomputes_hashes_and_matches_local_root(executor: LocalExecutor, tmp_path: Path) -> None:
    job = make_job(tmp_path, JOB)
    m = manifest(outputs=["*.txt"], args=["x"])
    with FakeSandrun() as srv:
        srv.lie_about_hashes = True
        r = await _client(srv.url, tmp_path).run(job, m, JOB_ID)
    assert r.trace.status == "exited" and r.trace.exit_code == 0
    assert r.trace.outputs[0].path == "result.txt"
    assert r.trace.outputs[0].sha256 == hashlib.sha256(b"42\n").digest()
    assert r.stdout.read_text() == "hello from ['x']\n"
    local = await executor.run(job, m, JOB_ID)
    assert local.root == r.root


async def test_429_without_retry_after_and_blocking_status(tmp_path: Path) -> None:
    with FakeSandrun() as srv:
        srv.busy_submits = 2
        srv.block_status_s = 3.0
        r = await _client(srv.url, tmp_path, request_timeout=0.3).run(
            make_job(tmp_path, JOB), manifest(), JOB_ID
        )
        assert srv.submits == 3
    assert r.trace.exit_code == 0


async def test_auto_deleted_job_is_reported_lost(tmp_path: Path) -> None:
    with FakeSandrun() as srv:
        srv.delete_on_complete = True
        with pytest.raises(ExecError, match="no longer has job"):
            await _client(srv.url, tmp_path).run(make_job(tmp_path, JOB), manifest(outputs=["*.txt"]), JOB_ID)
        assert srv.submits == 2  # resubmitted once


async def test_reused_job_id_after_restart_is_not_confused(tmp_path: Path) -> None:
    a_dir = tmp_path / "a"
    a_dir.mkdir()
    b_dir = tmp_path / "b"
    b_dir.mkdir()
    a = make_job(a_dir, JOB)
    b = make_job(b_dir, "print('I am B')\n")
    with FakeSandrun() as srv:
        srv.run_gate = threading.Event()
        client = _client(srv.url, tmp_path, attempts=1)
        errors: list[Exception] = []

        async def run_a() -> None:
            try:
                await client.run(a, manifest(), JOB_ID)
            except ExecError as e:
                errors.append(e)

        async with trio.open_nursery() as n:
            n.start_soon(run_a)
            await trio.to_thread.run_sync(srv.started.wait, 10)
            srv.restart()
            srv.run_gate.set()
            rb = await client.run(b, manifest(), JOB_ID)
    assert rb.stdout.read_text() == "I am B\n"
    assert len(errors) == 1 and "sandrun-lost" in str(errors[0])


async def test_headers_are_matched_case_sensitively_by_the_fixture(tmp_path: Path) -> None:
    with FakeSandrun() as srv:
        async with httpx.AsyncClient() as c:
            r = await c.post(srv.url + "/submit", content=b"x", headers={"content-type": "text/plain"})
        assert r.status_code == 400
        assert (await _client(srv.url, tmp_path).health())["status"] == "healthy"


async def test_gpu_job_refused_and_missing_entrypoint(tmp_path: Path) -> None:
    client = _client("http://127.0.0.1:9", tmp_path)
    with pytest.raises(ExecError, match="GPU"):
        await client.run(make_job(tmp_path, JOB), manifest(gpu={"required": True}), JOB_ID)
    with pytest.raises(BundleError, match="entrypoint"):
        await client.run(make_job(tmp_path, JOB, name="x.py"), manifest(entrypoint="nope.py"), JOB_ID)
