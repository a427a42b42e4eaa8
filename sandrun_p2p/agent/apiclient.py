"""A small synchronous client of the control API (used by the CLI, the testnet and tests)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from .control import INFO_FILE, TOKEN_FILE


class ControlError(RuntimeError):
    """The agent could not be reached, or answered with an error (the message says which)."""


class ControlClient:
    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=timeout,
                                 headers={"Authorization": f"Bearer {token}"})

    @classmethod
    def from_data_dir(cls, data_dir: Path, timeout: float = 30.0) -> ControlClient:
        data_dir = Path(data_dir)
        try:
            info = json.loads((data_dir / INFO_FILE).read_text())
            token = (data_dir / TOKEN_FILE).read_text().strip()
        except FileNotFoundError:
            raise ControlError(f"no running agent found in {data_dir} (no {INFO_FILE}); is `sandrun-p2p agent` "
                               "running with this --data-dir?") from None
        return cls(info["url"], token, timeout)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise ControlError(f"agent at {self.url} not reachable: {type(e).__name__}: {e}") from None
        if r.status_code >= 400:
            try:
                msg = r.json().get("error", r.text)
            except ValueError:
                msg = r.text
            raise ControlError(f"{method} {path}: HTTP {r.status_code}: {msg}")
        if r.headers.get("content-type", "").startswith("application/json"):
            return r.json()
        return r.content

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/v1/status")

    def nodes(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/nodes")["nodes"]

    def jobs(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/jobs")["jobs"]

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{job_id}")

    def submit(self, **body: Any) -> dict[str, Any]:
        return self._call("POST", "/v1/jobs", json=body)

    def submit_many(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``POST /v1/jobs/batch``: one answer per body, in order (``{"job_id", "error"}`` where escrow failed)."""
        return self._call("POST", "/v1/jobs/batch", json={"jobs": bodies})["jobs"]

    def events(self, since: int = 0, job: str | None = None, wait: float = 0, linger: float = 0) -> dict[str, Any]:
        """Events after ``since``; ``wait``: long poll; ``linger``: once one came, wait this much more for others."""
        params: dict[str, Any] = {"since": since, "wait": wait}
        if linger:
            params["linger"] = linger
        if job:
            params["job"] = job
        return self._call("GET", "/v1/events", params=params)

    def put_blob(self, data: bytes) -> str:
        return self._call("POST", "/v1/blobs", content=data)["cid"]

    def blob(self, cid: str, tar: bool = False) -> bytes:
        return self._call("GET", f"/v1/blobs/{cid}", params={"format": "tar"} if tar else None)

    def wait_job(self, job_id: str, states: tuple[str, ...], timeout: float) -> dict[str, Any]:
        """Poll until the job reaches one of ``states`` (by this node's view); ControlError on timeout."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                last = self.job(job_id)
            except ControlError as e:
                if "HTTP 404" not in str(e):
                    raise
            else:
                if last.get("state") in states:
                    return last
            self.events(job=job_id, since=(last.get("events") or [{"id": 0}])[-1]["id"],
                        wait=min(2.0, max(0.05, deadline - time.monotonic())))
        raise ControlError(f"job {job_id} did not reach {states} in {timeout}s; last state "
                           f"{last.get('state')!r}: {last.get('reason', '')}")
