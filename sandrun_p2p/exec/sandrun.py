"""Executor backed by a sandrun HTTP server (queelius/sandrun API, behaviour as observed in the notes).

Targets the documented API (POST /submit multipart ``files`` + ``manifest``, GET /status/{id},
/logs/{id}, /download/{id}/{path}, /health) and defends against what the server really does:
every hash is recomputed from downloaded bytes (its ``job_hash``, ``sha256`` and signatures are
never trusted), 429 comes without ``retry_after`` (own backoff), /status may block for the whole
run (short request timeouts, re-poll), job ids restart with the server (a reused id or a changed
``job_hash`` means our job is lost), jobs auto-delete (404 = lost, resubmitted up to ``attempts``),
/logs may be JSON or text, header names are sent in canonical case. The server ignores timeout,
memory and env limits, so the client enforces the timeout by abandoning the job.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import trio

from ..protocol.jobspec import Manifest
from . import environment
from .bundles import pack_dir, safe_extract
from .capabilities import check_gpu
from .errors import BundleError, ExecError
from .result import ExecResult
from .tracing import build_trace, collect_outputs, glob_regex, is_regular

MAX_DOWNLOAD_BYTES = 1 << 30
SENT_ENV_EXCLUDE = ("HOME", "SANDRUN_CHECKPOINT_DIR", "PATH")


class _Lost(Exception):
    """The server no longer has our job (deleted, restarted, id reused)."""


class SandrunExecutor:
    """Runs jobs on a remote sandrun server and rebuilds the trace from downloaded bytes."""

    kind = "sandrun"
    resumes_checkpoints = False  # the server has no checkpoint directory to restore into

    def __init__(
        self,
        url: str,
        *,
        results_root: Path | None = None,
        request_timeout: float = 10.0,
        poll_interval: float = 0.5,
        backoff: float = 1.0,
        attempts: int = 2,
        timeout_slack: float = 30.0,
        max_download_bytes: int = MAX_DOWNLOAD_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.results_root = Path(results_root or Path(tempfile.gettempdir()) / "sandrun-p2p-exec" / "results")
        self.results_root.mkdir(parents=True, exist_ok=True)
        self.request_timeout, self.poll_interval, self.backoff = request_timeout, poll_interval, backoff
        self.attempts, self.timeout_slack, self.max_download = attempts, timeout_slack, max_download_bytes
        self.transport = transport
        self.gpus: list[dict[str, Any]] = []
        self.work_root = self.results_root
        self.enforced: dict[str, Any] = {
            "sandbox": "sandrun-remote",
            "network": "remote-unverified",
            "filesystem": "remote-unverified",
            "memory": False,
            "pids": False,
            "disk": False,
            "timeout_tree_kill": False,
            "timeout": "client-abandons",
        }
        self._inflight: dict[str, int] = {}  # job id -> generation (bumped when the server reissues it)
        self._counter = 0

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url,
            timeout=self.request_timeout,
            transport=self.transport,
            headers={"User-Agent": "sandrun-p2p", "Accept": "application/json"},
        )

    async def health(self) -> dict[str, Any]:
        async with self._client() as c:
            r = await c.get("/health")
            r.raise_for_status()
            return dict(r.json())

    async def run(
        self,
        job_dir: Path | bytes,
        manifest: Manifest,
        job_id: bytes,
        *,
        checkpoint_from: Any = None,
        **_: Any,
    ) -> ExecResult:
        if checkpoint_from is not None:
            raise ExecError("unsupported", "the sandrun backend cannot resume from a checkpoint")
        check_gpu(manifest.gpu, self.gpus)  # the server ignores gpu requirements: never claim one
        bundle = self._bundle(job_dir, manifest)
        deadline = time.monotonic() + manifest.timeout + self.timeout_slack
        last: Exception | None = None
        async with self._client() as c:
            for _ in range(self.attempts):
                try:
                    return await self._attempt(c, bundle, manifest, job_id, deadline)
                except _Lost as e:
                    last = e
        raise ExecError("sandrun-lost", f"{last} (after {self.attempts} attempts)")

    def _bundle(self, job_dir: Path | bytes, manifest: Manifest) -> bytes:
        """Validate (safe extraction, entrypoint) and repack the code as a deterministic tar.gz."""
        with tempfile.TemporaryDirectory() as td:
            d = Path(td)
            if isinstance(job_dir, bytes | bytearray):
                safe_extract(bytes(job_dir), d)
            else:
                if not Path(job_dir).is_dir():
                    raise BundleError(f"job directory {job_dir} does not exist")
                d = Path(job_dir)
            if not is_regular(d / manifest.entrypoint):
                raise BundleError(f"entrypoint '{manifest.entrypoint}' is not a regular file in the bundle")
            return pack_dir(d, gzip=True)

    def _remote_manifest(self, m: Manifest) -> str:
        env = {k: v for k, v in environment.job_env(m).items() if k not in SENT_ENV_EXCLUDE}
        return json.dumps(
            {
                "entrypoint": m.entrypoint,
                "interpreter": m.interpreter,
                "args": list(m.args),
                "environment": env,
                "env": env,
                "outputs": list(m.outputs),
                "timeout": m.timeout,
                "memory_mb": m.memory_mb,
            }
        )

    async def _submit(self, c: httpx.AsyncClient, bundle: bytes, m: Manifest, deadline: float) -> str:
        delay = self.backoff
        while True:
            r = await c.post(
                "/submit",
                files={"files": ("job.tar.gz", bundle, "application/gzip")},
                data={"manifest": self._remote_manifest(m)},
            )
            if r.status_code == 429:
                wait = delay
                with contextlib.suppress(Exception):
                    wait = float(r.headers.get("Retry-After") or r.json().get("retry_after") or delay)
                if time.monotonic() + wait > deadline:
                    raise ExecError("sandrun-busy", f"server stayed busy: {_error(r)}")
                await trio.sleep(wait)
                delay = min(delay * 2, 30.0)
                continue
            if r.status_code != 200:
                raise ExecError("sandrun-rejected", f"submit answered {r.status_code}: {_error(r)}")
            jid = r.json().get("job_id")
            if not isinstance(jid, str) or not jid or "/" in jid:
                raise ExecError("sandrun-protocol", f"submit returned no usable job_id: {r.text[:200]}")
            return jid

    async def _attempt(
        self, c: httpx.AsyncClient, bundle: bytes, m: Manifest, job_id: bytes, deadline: float
    ) -> ExecResult:
        remote = await self._submit(c, bundle, m, deadline)
        gen = self._inflight.get(remote, 0) + 1  # a reused id invalidates whoever held it before
        self._inflight[remote] = gen
        try:
            status, timed_out = await self._wait(c, remote, gen, deadline)
            self._counter += 1
            results = self.results_root / f"{job_id.hex()[:16]}-sandrun-{self._counter}"
            if results.exists():
                shutil.rmtree(results)
            (results / "outputs").mkdir(parents=True)
            if timed_out:
                (results / "stdout").write_bytes(b"")
                (results / "stderr").write_bytes(b"")
            else:
                await self._fetch(c, remote, gen, status, m, results)
        finally:
            if self._inflight.get(remote) == gen:
                del self._inflight[remote]
        meta = status.get("execution_metadata") or {}
        exit_code = meta.get("exit_code")
        if timed_out:
            st, code = "timeout", 137
        elif isinstance(exit_code, int) and not isinstance(exit_code, bool):
            st, code = "exited", exit_code
        else:
            st, code = "error", -1
        usage = {
            k: meta[k] for k in ("cpu_seconds", "memory_peak_bytes") if isinstance(meta.get(k), int | float)
        }
        usage["remote_job_id"] = remote
        outputs = collect_outputs(results / "outputs", m)
        trace = build_trace(
            job_id,
            m,
            status=st,
            exit_code=code,
            stdout=results / "stdout",
            stderr=results / "stderr",
            outputs=outputs,
            usage=usage,
        )
        return ExecResult(
            trace, results / "outputs", results / "stdout", results / "stderr", usage, timed_out=timed_out
        )

    def _check_gen(self, remote: str, gen: int) -> None:
        if self._inflight.get(remote) != gen:
            raise _Lost(f"server reissued job id {remote} (it restarted); our job is gone")

    async def _get(self, c: httpx.AsyncClient, remote: str, gen: int, path: str) -> httpx.Response:
        r = await c.get(path)
        self._check_gen(remote, gen)
        if r.status_code == 404:
            raise _Lost(f"server no longer has job {remote} (auto-deleted or restarted)")
        if r.status_code != 200:
            raise ExecError("sandrun-protocol", f"GET {path} answered {r.status_code}: {_error(r)}")
        return r

    async def _wait(
        self, c: httpx.AsyncClient, remote: str, gen: int, deadline: float
    ) -> tuple[dict[str, Any], bool]:
        pinned: Any = None
        while True:
            if time.monotonic() > deadline:
                return {}, True
            try:
                r = await self._get(c, remote, gen, f"/status/{quote(remote)}")
            except httpx.TimeoutException:  # /status may block for the whole run
                continue
            try:
                st = r.json()
            except ValueError:
                raise ExecError("sandrun-protocol", "status is not JSON") from None
            h = st.get("job_hash")
            if pinned is None:
                pinned = h
            elif h != pinned:
                raise _Lost(f"job id {remote} now names another job (server restarted)")
            if st.get("status") in ("completed", "failed"):
                return st, False
            await trio.sleep(self.poll_interval)

    async def _fetch(
        self, c: httpx.AsyncClient, remote: str, gen: int, status: dict[str, Any], m: Manifest, results: Path
    ) -> None:
        r = await self._get(c, remote, gen, f"/logs/{quote(remote)}")
        stdout, stderr = r.content, b""
        with contextlib.suppress(ValueError, AttributeError):
            j = r.json()
            if isinstance(j, dict) and "stdout" in j:
                stdout = str(j.get("stdout") or "").encode()
                stderr = str(j.get("stderr") or "").encode()
        (results / "stdout").write_bytes(stdout)
        (results / "stderr").write_bytes(stderr)
        files = status.get("output_files") or {}
        names = (
            list(files) if isinstance(files, dict) else [f.get("path") for f in files if isinstance(f, dict)]
        )
        regs = [glob_regex(p) for p in m.outputs]
        total = 0
        for name in sorted(n for n in names if isinstance(n, str)):
            parts = name.split("/")
            if name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in name:
                continue  # never write outside the results dir
            if not any(rx.match(name) for rx in regs):
                continue
            dest = results / "outputs" / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            async with c.stream("GET", f"/download/{quote(remote)}/{quote(name)}") as resp:
                self._check_gen(remote, gen)
                if resp.status_code == 404:
                    raise _Lost(f"server deleted job {remote} while downloading {name}")
                if resp.status_code != 200:
                    raise ExecError("sandrun-protocol", f"download of {name} answered {resp.status_code}")
                with open(dest, "wb") as f:
                    async for chunk in resp.aiter_bytes():
                        total += len(chunk)
                        if total > self.max_download:
                            raise ExecError("sandrun-oversized", f"outputs exceed {self.max_download} bytes")
                        f.write(chunk)


def _error(r: httpx.Response) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        return str(r.json().get("error", r.text[:200]))
    return r.text[:200]
