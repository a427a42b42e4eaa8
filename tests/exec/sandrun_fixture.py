"""A stand-in sandrun server reproducing the documented API and the behaviour observed in the notes.

Jobs run with a stand-in executor (the host python in a temp dir). Knobs reproduce what the real
server did: 429 without retry_after, /status blocking while a job runs, ids ``job_<unix>_<n>`` that
restart with the server, auto-deletion, /logs as JSON, ``sha256`` (not ``sha256_hash``) in
output_files, a ``job_hash`` over manifest + entrypoint only, case-sensitive header names.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote


class FakeSandrun:
    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.counter = 0
        self.epoch = int(time.time())
        self.worker_id = "d29ya2VyLWtleQ=="
        self.lock = threading.Lock()
        self.busy_submits = 0  # answer this many submits with 429 first
        self.block_status_s = 0.0  # /status blocks up to this long while a job runs
        self.delete_on_complete = False
        self.lie_about_hashes = False
        self.run_gate: threading.Event | None = None  # jobs wait for it before finishing
        self.started = threading.Event()
        self.submits = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeSandrun:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.run_gate is not None:
            self.run_gate.set()
        self.server.shutdown()
        self.server.server_close()

    def restart(self) -> None:
        """Forget every job and restart the id counter (same second, same worker key)."""
        with self.lock:
            self.jobs.clear()
            self.counter = 0

    def _run(self, jid: str, job: dict[str, Any]) -> None:
        job["status"] = "running"
        self.started.set()
        with tempfile.TemporaryDirectory() as td:
            with tarfile.open(fileobj=io.BytesIO(job["bundle"]), mode="r:gz") as tf:
                tf.extractall(td, filter="data")
            m = job["manifest"]
            p = subprocess.run(
                [sys.executable, m["entrypoint"], *m.get("args", [])],
                cwd=td,
                capture_output=True,
                timeout=30,
                env={"PATH": "/usr/bin:/bin"},
            )
            if self.run_gate is not None:
                self.run_gate.wait(30)
            outs = {}
            for f in sorted(Path(td).rglob("*")):
                rel = f.relative_to(td).as_posix()
                if f.is_file() and rel != m["entrypoint"]:
                    data = f.read_bytes()
                    sha = "0" * 64 if self.lie_about_hashes else hashlib.sha256(data).hexdigest()
                    outs[rel] = {"size_bytes": len(data), "sha256": sha, "type": "file", "data": data}
        job.update(
            stdout=p.stdout.decode(),
            stderr=p.stderr.decode(),
            outputs=outs,
            status="completed" if p.returncode == 0 else "failed",
            exit_code=p.returncode,
        )
        job["done"].set()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def _send(self, code: int, body: Any, ctype: str = "application/json") -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                if self.path != "/submit":
                    return self._send(404, {"error": "Not found"})
                names = list(self.headers.keys())
                if "Content-Type" not in names or "Content-Length" not in names:
                    return self._send(400, {"error": "Missing Content-Type or Content-Length"})
                length = int(self.headers["Content-Length"])
                form = _multipart(self.headers["Content-Type"], self.rfile.read(length))
                with fake.lock:
                    fake.submits += 1
                    if fake.busy_submits > 0:
                        fake.busy_submits -= 1
                        return self._send(429, {"error": "Max concurrent jobs reached (2)"})
                    if "files" not in form or "manifest" not in form:
                        return self._send(400, {"error": "Missing files or manifest"})
                    manifest = json.loads(form["manifest"])
                    bundle = form["files"]
                    fake.counter += 1
                    jid = f"job_{fake.epoch}_{fake.counter}"
                    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as tf:
                        entry = tf.extractfile(manifest["entrypoint"]).read()
                    jh = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode() + entry).hexdigest()
                    job = {
                        "status": "queued",
                        "manifest": manifest,
                        "bundle": bundle,
                        "job_hash": jh,
                        "done": threading.Event(),
                    }
                    fake.jobs[jid] = job
                threading.Thread(target=fake._run, args=(jid, job), daemon=True).start()
                self._send(200, {"job_id": jid, "status": "queued"})

            def do_GET(self) -> None:
                parts = [unquote(p) for p in self.path.split("/")[1:]]
                if parts == ["health"]:
                    return self._send(200, {"status": "healthy", "worker_id": fake.worker_id})
                if len(parts) < 2:
                    return self._send(404, {"error": "Not found"})
                job = fake.jobs.get(parts[1])
                if job is None:
                    return self._send(404, {"error": "Job not found"})
                if parts[0] == "status":
                    if fake.block_status_s:
                        job["done"].wait(fake.block_status_s)
                    body = {
                        "job_id": parts[1],
                        "status": job["status"],
                        "job_hash": job["job_hash"],
                        "worker_metadata": {"worker_id": fake.worker_id, "signature": "c2ln"},
                    }
                    if job["done"].is_set():
                        body["execution_metadata"] = {
                            "cpu_seconds": 0.01,
                            "memory_peak_bytes": 1 << 20,
                            "exit_code": job["exit_code"],
                        }
                        body["output_files"] = {
                            k: {x: v[x] for x in ("size_bytes", "sha256", "type")}
                            for k, v in job["outputs"].items()
                        }
                        if fake.delete_on_complete:
                            fake.jobs.pop(parts[1], None)
                    return self._send(200, body)
                if parts[0] == "logs":
                    return self._send(200, {"stdout": job.get("stdout", ""), "stderr": job.get("stderr", "")})
                if parts[0] == "download" and len(parts) >= 3:
                    f = job.get("outputs", {}).get("/".join(parts[2:]))
                    if f is None:
                        return self._send(404, {"error": "File not found"})
                    return self._send(200, f["data"], "application/octet-stream")
                return self._send(404, {"error": "Not found"})

        return H


def _multipart(ctype: str, body: bytes) -> dict[str, bytes]:
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
    return {
        part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
        for part in msg.iter_parts()
    }
