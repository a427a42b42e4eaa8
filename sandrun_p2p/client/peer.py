"""The one client of a node's control API (HTTP + JSON, bearer token): :class:`Peer` (async, trio; the SDK)
and :class:`ControlClient` (blocking; the CLI, the testnet and the tests). Both share how a peer is named,
how an answer is decoded and what an error says.

A peer is named by its agent data directory (``control.json`` and ``control.token`` are read from it),
or by a URL plus a token (``token=`` or ``$SANDRUN_P2P_PEER_TOKEN``). Without a name, the local agent's
default data directory (``$SANDRUN_P2P_HOME`` or ``~/.sandrun-p2p``) is used.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx

from .errors import PeerUnavailable

INFO_FILE = "control.json"  # the agent's control API address, written by sandrun_p2p/agent/control.py
TOKEN_FILE = "control.token"  # its bearer token (mode 0600)
TOKEN_ENV = "SANDRUN_P2P_PEER_TOKEN"


class PeerError(PeerUnavailable):
    """The peer answered with an HTTP error; ``status`` is its code."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def default_agent_dir() -> Path:
    env = os.environ.get("SANDRUN_P2P_HOME")
    return Path(env).expanduser() if env else Path.home() / ".sandrun-p2p"


def peer_dir(peer: str | None) -> Path | None:
    """The agent data dir a peer name points at (None for a URL)."""
    if peer and peer.startswith(("http://", "https://")):
        return None
    return Path(peer).expanduser() if peer else default_agent_dir()


def resolve(peer: str | None, token: str | None = None) -> tuple[str, str]:
    """(url, token) of a peer given as a data dir, a URL, or None (the local agent)."""
    if peer and peer.startswith(("http://", "https://")):
        tok = token or os.environ.get(TOKEN_ENV, "")
        if not tok:
            raise PeerUnavailable(
                f"peer {peer} needs its control token: pass --peer-token or set {TOKEN_ENV} "
                "(it is in control.token in that agent's data dir)"
            )
        return peer.rstrip("/"), tok
    d = Path(peer).expanduser() if peer else default_agent_dir()
    try:
        info = json.loads((d / INFO_FILE).read_text())
        tok = token or (d / TOKEN_FILE).read_text().strip()
    except FileNotFoundError:
        raise PeerUnavailable(
            f"no running agent in {d} (no {INFO_FILE}); start one with `sandrun-p2p agent` or "
            "`sandrun-p2p testnet`, or name a running agent's data dir (or, for a client, its URL)"
        ) from None
    except ValueError:
        raise PeerUnavailable(f"{d / INFO_FILE} is not valid JSON; is the agent still starting?") from None
    return str(info["url"]).rstrip("/"), tok


#: The longest a node spends escrowing one job from its own account (the agent's bound on the transaction); a
#: submission through it waits ``SUBMIT_MARGIN_S`` longer, so a slow chain gives the node's own answer (each job's
#: escrow error) rather than a client-side timeout.
ESCROW_WAIT_S = 60.0
SUBMIT_MARGIN_S = 30.0


def _submit_wait(timeout: httpx.Timeout) -> float:
    """How long a submission waits for its answer: the client's timeout, or the node's escrow bound and a margin."""
    return max(timeout.read or 0.0, ESCROW_WAIT_S + SUBMIT_MARGIN_S)


def _unreachable(url: str, e: httpx.HTTPError) -> PeerUnavailable:
    if isinstance(e, httpx.ReadTimeout | httpx.WriteTimeout):
        return PeerUnavailable(
            f"peer {url} did not answer in time ({type(e).__name__}); it is running but busy or waiting "
            "(e.g. on its chain)"
        )
    return PeerUnavailable(f"peer {url} not reachable ({type(e).__name__}: {e}); is its agent running?")


def _answer(url: str, method: str, path: str, r: httpx.Response) -> Any:
    """The decoded body of a control API answer (JSON, else bytes); :class:`PeerError` for an HTTP error."""
    if r.status_code >= 400:
        try:
            msg = r.json().get("error", r.text)
        except ValueError:
            msg = r.text
        raise PeerError(r.status_code, f"peer {url}: {method} {path}: HTTP {r.status_code}: {msg}")
    if r.headers.get("content-type", "").startswith("application/json"):
        return r.json()
    return r.content


def _events_params(job_id: str | None, since: int, wait: float, linger: float) -> dict[str, Any]:
    params: dict[str, Any] = {"since": since, "wait": wait}
    if linger:
        params["linger"] = linger
    if job_id:
        params["job"] = job_id
    return params


class Peer:
    """Async client of one node's control API. Use as ``async with Peer(url, token) as p``."""

    def __init__(self, url: str, token: str, timeout: float = 60.0) -> None:
        self.url = url
        self._http = httpx.AsyncClient(
            base_url=url, timeout=timeout, headers={"Authorization": f"Bearer {token}"}
        )

    @classmethod
    def open(cls, peer: str | None = None, token: str | None = None, timeout: float = 60.0) -> Peer:
        return cls(*resolve(peer, token), timeout=timeout)

    async def __aenter__(self) -> Peer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, *, timeout: float | None = None, **kw: Any) -> Any:
        if timeout is not None:
            kw["timeout"] = timeout
        try:
            r = await self._http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise _unreachable(self.url, e) from None
        return _answer(self.url, method, path, r)

    async def status(self) -> dict[str, Any]:
        return await self._call("GET", "/v1/status")

    async def nodes(self) -> list[dict[str, Any]]:
        return (await self._call("GET", "/v1/nodes"))["nodes"]

    async def job(self, job_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/jobs/{job_id}")

    async def events(self, job_id: str | None = None, since: int = 0, wait: float = 0) -> dict[str, Any]:
        params = _events_params(job_id, since, wait, 0)
        return await self._call("GET", "/v1/events", params=params, timeout=wait + 30)

    async def put_blob(self, data: bytes) -> str:
        return (await self._call("POST", "/v1/blobs", content=data))["cid"]

    async def blob(self, cid: str, *, tar: bool = False) -> bytes:
        return await self._call("GET", f"/v1/blobs/{cid}", params={"format": "tar"} if tar else None)

    async def announce(self, spec: dict[str, Any], bundle_key: str = "") -> dict[str, Any]:
        """Ask the peer to announce a job the client escrowed itself (POST /v1/announce)."""
        body: dict[str, Any] = {"spec": spec}
        if bundle_key:
            body["bundle_key"] = bundle_key
        return await self._call("POST", "/v1/announce", json=body)

    async def submit_escrowed_by_peer(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/jobs: the peer escrows from its own account and announces (not anonymous)."""
        return await self._call("POST", "/v1/jobs", json=body, timeout=_submit_wait(self._http.timeout))


class ControlClient:
    """Blocking client of one node's control API (the CLI's, the testnet's and the tests')."""

    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.url, timeout=timeout, headers={"Authorization": f"Bearer {token}"}
        )

    @classmethod
    def from_data_dir(cls, data_dir: Path | str, timeout: float = 30.0) -> ControlClient:
        return cls(*resolve(str(data_dir)), timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise _unreachable(self.url, e) from None
        return _answer(self.url, method, path, r)

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/v1/status")

    def nodes(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/nodes")["nodes"]

    def jobs(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/jobs")["jobs"]

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{job_id}")

    def submit(self, **body: Any) -> dict[str, Any]:
        """``POST /v1/jobs``: the node escrows from its own account and announces."""
        return self._call("POST", "/v1/jobs", json=body, timeout=_submit_wait(self.http.timeout))

    def submit_many(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``POST /v1/jobs/batch``: one answer per body, in order (``{"job_id", "error"}`` where escrow failed)."""
        wait = _submit_wait(self.http.timeout)
        return self._call("POST", "/v1/jobs/batch", json={"jobs": bodies}, timeout=wait)["jobs"]

    def events(
        self, since: int = 0, job: str | None = None, wait: float = 0, linger: float = 0
    ) -> dict[str, Any]:
        """Events after ``since``; ``wait``: long poll; ``linger``: once one came, wait this much more for others."""
        return self._call(
            "GET", "/v1/events", params=_events_params(job, since, wait, linger), timeout=wait + 30
        )

    def put_blob(self, data: bytes) -> str:
        return self._call("POST", "/v1/blobs", content=data)["cid"]

    def blob(self, cid: str, tar: bool = False) -> bytes:
        return self._call("GET", f"/v1/blobs/{cid}", params={"format": "tar"} if tar else None)

    def wait_job(self, job_id: str, states: tuple[str, ...], timeout: float) -> dict[str, Any]:
        """Poll until the job reaches one of ``states`` (by this node's view); PeerUnavailable on timeout."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                last = self.job(job_id)
            except PeerError as e:
                if e.status != 404:
                    raise
            else:
                if last.get("state") in states:
                    return last
            self.events(
                job=job_id,
                since=(last.get("events") or [{"id": 0}])[-1]["id"],
                wait=min(2.0, max(0.05, deadline - time.monotonic())),
            )
        raise PeerUnavailable(
            f"job {job_id} did not reach {states} in {timeout}s; last state "
            f"{last.get('state')!r}: {last.get('reason', '')}"
        )
