"""The peer a client talks to: any node's control API (HTTP + JSON, bearer token), async over httpx/trio.

A peer is named by its agent data directory (``control.json`` and ``control.token`` are read from it),
or by a URL plus a token (``token=`` or ``$SANDRUN_P2P_PEER_TOKEN``). Without a name, the local agent's
default data directory (``$SANDRUN_P2P_HOME`` or ``~/.sandrun-p2p``) is used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx

from .errors import PeerUnavailable

INFO_FILE = "control.json"  # written by the agent (sandrun_p2p/agent/control.py)
TOKEN_FILE = "control.token"
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
            f"no running agent in {d} (no {INFO_FILE}); start one with `sandrun-p2p agent`, run "
            "`sandrun-p2p testnet`, or give --peer DATA_DIR or --peer URL"
        ) from None
    except ValueError:
        raise PeerUnavailable(f"{d / INFO_FILE} is not valid JSON; is the agent still starting?") from None
    return str(info["url"]).rstrip("/"), tok


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
            raise PeerUnavailable(f"peer {self.url} not reachable ({type(e).__name__}: {e}); is its agent running?") from None
        if r.status_code >= 400:
            try:
                msg = r.json().get("error", r.text)
            except ValueError:
                msg = r.text
            raise PeerError(r.status_code, f"peer {self.url}: {method} {path}: HTTP {r.status_code}: {msg}")
        if r.headers.get("content-type", "").startswith("application/json"):
            return r.json()
        return r.content

    async def status(self) -> dict[str, Any]:
        return await self._call("GET", "/v1/status")

    async def nodes(self) -> list[dict[str, Any]]:
        return (await self._call("GET", "/v1/nodes"))["nodes"]

    async def job(self, job_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/jobs/{job_id}")

    async def events(self, job_id: str | None = None, since: int = 0, wait: float = 0) -> dict[str, Any]:
        params: dict[str, Any] = {"since": since, "wait": wait}
        if job_id:
            params["job"] = job_id
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
        return await self._call("POST", "/v1/jobs", json=body)
