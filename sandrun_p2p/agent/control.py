"""The agent's local control API: HTTP/1.1 + JSON on 127.0.0.1, for the CLI and the client SDK.

Discovery: the agent writes ``<data_dir>/control.json`` (``{"url", "pid", "node_id", "peer_id"}``) and
``<data_dir>/control.token`` (mode 0600). Every request must carry ``Authorization: Bearer <token>``;
anything else gets 401. One request per connection (``Connection: close``). Errors are
``{"error": "<sentence>"}`` with status 400 (bad input), 401, 404 (unknown path or object), 409,
413 (body too large), 500, 503 (chain or store unavailable), 504 (timed out).
Ids and hashes are lowercase hex; amounts are integers in wei.

Endpoints
---------
``GET  /v1/status``
    ``{"node_id", "peer_id", "eth", "addrs": [multiaddr...], "uptime_s", "chain": "embedded"|"anvil"|...,
    "peers": [{"peer_id", "node_id", "score", "mesh_topics"}], "mesh": {topic: n_peers},
    "jobs_by_state": {state: n}, "running": n, "max_jobs": n, "caps": {advert caps}, "enforced": {exec's
    enforced limits}, "gpus": [{"index", "model", "vram_mb", "busy"}], "account": {stake, earned,
    withdrawable...}, "net": {accepted, rejected{reason:n}, published...}, "chain_errors": [...],
    "chain_info": {"rpc", "market", "kind", "chain_id"}}``
    (``chain_info`` lets a client given only this URL find the chain; ``rpc`` is null for an in-process chain)
``GET  /v1/nodes``
    ``{"nodes": [{"node_id", "caps", "shards", "eth", "staked", "last_advert_s", "fresh"}]}`` (this node first)
``GET  /v1/jobs``
    ``{"jobs": [job summary...]}``: every job this node knows, newest first, each with ``"reason"`` saying
    what it waits for (or why it failed).
``GET  /v1/jobs/<job_id>``
    job summary plus ``"claims"``, ``"winners"``, ``"commits"``, ``"reveals": {node: {"root", "trace_cid",
    "result_cid"}}``, ``"accepted_root"``, ``"result_cids"`` (of the executors that agreed),
    ``"events": [...]``, ``"txs": [...]``, and ``"chain"`` (what the chain says: state, paid/refunded wei).
``POST /v1/jobs``
    body ``{"manifest": {...}, "code_cid": str | "bundle_b64": str, "redundancy": 1, "quorum": (majority),
    "deadline_s": 600 (from now) | "deadline": unix_s, "nonce": hex, "payment_wei": (quote), "executors": [hex
    node id, ...] (only these may run it; default any eligible node), "pay": "escrow" | "voucher"}``; the node
    stores the bundle, escrows the payment on chain (``escrow``, the default) or reserves it in its deposit and
    pays the executor by voucher (``voucher``, k = 1 only, settled in the executor's batch; see
    ``agent/voucherlink.py``) and announces the job as its origin.
    Answer 201 ``{"job_id", "code_cid", "payment_wei", "deadline"}``; 400 names the bad field.
``POST /v1/jobs/batch``
    body ``{"jobs": [job, ...]}`` (1..64 bodies as for ``POST /v1/jobs``): every body is checked first (400
    ``jobs[i]: ...`` and nothing escrowed), the escrows go out concurrently and the funded jobs are announced
    together (a few gossip payloads instead of one per job). Answer 201 ``{"jobs": [answer as for POST
    /v1/jobs, or {"job_id", "error"} for a job whose escrow failed]}``, in the order given.
``POST /v1/announce``
    body ``{"spec": JobSpec.to_dict() with "nonce" (and any "executors", "result_key") as hex, "bundle_key": hex}``
    (``bundle_key``: the 32-byte key of an encrypted bundle; required when ``spec.encrypted``, refused
    otherwise). For a job the client escrowed itself (e.g. from a fresh per-job key): the node checks on
    chain that the job is open with escrow >= ``payment_wei`` and the spec's k, q and deadline (409 "not
    funded" naming what differs), takes the ranking seed from the chain, keeps the bundle key (mode 0600
    under ``<data_dir>/keys``, never in a sandbox; sealed to each winner in GRANT messages) and announces the
    job as its origin. Answer 201 ``{"job_id", "seed", "deadline"}``; 400 without ``spec`` (so ``{}`` probes
    for the endpoint) or with a bad field; 409 for a job this node already knows.
``GET  /v1/events?since=<event id>&job=<job_id>&wait=<seconds <= 30>&linger=<seconds <= wait>``
    ``{"events": [{"id", "job_id", "state", "detail", "node", "at"}], "last": id}``; with ``wait`` the call
    returns as soon as there is a newer event (long poll); with ``linger`` it then waits that much longer, so
    a busy stream comes in fewer, larger answers.
``POST /v1/blobs``
    raw body -> stored as one file: ``{"cid"}``.
``GET  /v1/blobs/<cid>``
    the file's bytes (``application/octet-stream``), fetched from peers when not local; a directory (e.g. a
    job's result) comes as a deterministic tar with ``?format=tar``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import trio

from ..client.peer import INFO_FILE, TOKEN_FILE
from ..private_files import write_private
from ..protocol import node as corenode
from ..protocol.claiming import in_shards, shard_of
from ..protocol.errors import ProtocolError
from ..protocol.jobspec import JobSpec, Manifest
from ..protocol.pricing import quote
from .ports import NotFunded

if TYPE_CHECKING:
    from .runtime import Agent

log = logging.getLogger("sandrun_p2p.agent.control")

MAX_BODY = 64 * 1024 * 1024
MAX_HEADER = 16 * 1024
MAX_BATCH_JOBS = 64  # jobs in one POST /v1/jobs/batch (as many messages as one gossip batch carries)
REASONS = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def write_token(data_dir: Path) -> str:
    path = data_dir / TOKEN_FILE
    token = secrets.token_hex(24)
    write_private(path, token + "\n")
    return token


def _hex(b: bytes | None) -> str | None:
    return b.hex() if b else None


def _unhex(s: Any, what: str, n: int | None = None) -> bytes:
    try:
        b = bytes.fromhex(str(s))
    except ValueError:
        raise HttpError(400, f"{what} must be hex") from None
    if n is not None and len(b) != n:
        raise HttpError(400, f"{what} must be {n} bytes of hex")
    return b


class ControlServer:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.token = ""
        self.url = ""

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        a = self.agent
        self.token = write_token(a.cfg.data_dir)
        listeners = await trio.open_tcp_listeners(a.cfg.control_port, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        info = {
            "url": self.url,
            "pid": os.getpid(),
            "node_id": a.node_id.hex(),
            "peer_id": str(a.net.peer_id),
            "addrs": a.net.addrs(),
        }
        tmp = a.cfg.data_dir / (INFO_FILE + ".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, a.cfg.data_dir / INFO_FILE)
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle, listeners)
            task_status.started()

    # ------------------------------------------------------------------ HTTP plumbing

    async def _handle(self, stream: trio.SocketStream) -> None:
        status, ctype, body = 500, "application/json", b""
        try:
            with trio.fail_after(60):
                method, target, headers, payload = await self._read_request(stream)
            if headers.get("authorization", "") != f"Bearer {self.token}":
                raise HttpError(401, "missing or wrong bearer token (see control.token in the data dir)")
            status, result = await self._route(method, target, payload)
            if isinstance(result, bytes):
                ctype, body = "application/octet-stream", result
            else:
                body = json.dumps(result).encode()
        except HttpError as e:
            status, body = e.status, json.dumps({"error": str(e)}).encode()
        except trio.TooSlowError:
            status, body = 504, json.dumps({"error": "timed out"}).encode()
        except Exception as e:
            log.exception("control API error")
            status, body = 500, json.dumps({"error": f"{type(e).__name__}: {e}"}).encode()
        self.agent.journal.commit()  # what the reply reports is durable before the caller hears of it
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        try:
            with trio.fail_after(60):
                await stream.send_all(head + body)
                await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            pass

    async def _read_request(self, stream: trio.SocketStream) -> tuple[str, str, dict[str, str], bytes]:
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise HttpError(400, "connection closed before the request headers ended")
            buf += chunk
            if len(buf) > MAX_HEADER and b"\r\n\r\n" not in buf[:MAX_HEADER]:
                raise HttpError(413, "request headers too large")
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, _version = lines[0].split(" ", 2)
        except ValueError:
            raise HttpError(400, "malformed request line") from None
        headers = {}
        for line in lines[1:]:
            k, sep, v = line.partition(":")
            if sep:
                headers[k.strip().lower()] = v.strip()
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise HttpError(400, "Content-Length must be an integer") from None
        if length < 0 or length > MAX_BODY:
            raise HttpError(413, f"body larger than {MAX_BODY} bytes")
        body = bytearray(rest)
        while len(body) < length:
            chunk = await stream.receive_some(min(1 << 20, length - len(body)))
            if not chunk:
                raise HttpError(400, "connection closed before the body ended")
            body += chunk
        return method.upper(), target, headers, bytes(body[:length])

    async def _route(self, method: str, target: str, payload: bytes) -> tuple[int, Any]:
        parts = urlsplit(target)
        path = parts.path.rstrip("/")
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        seg = path.split("/")[1:]
        if seg[:1] != ["v1"]:
            raise HttpError(404, f"no endpoint {path}")
        seg = seg[1:]
        if method == "GET" and seg == ["status"]:
            return 200, await self.status()
        if method == "GET" and seg == ["nodes"]:
            return 200, self.nodes()
        if seg == ["jobs"]:
            if method == "GET":
                return 200, {"jobs": self.jobs()}
            if method == "POST":
                return 201, await self.submit(_json(payload))
        if method == "POST" and seg == ["jobs", "batch"]:
            return 201, await self.submit_batch(_json(payload))
        if method == "GET" and len(seg) == 2 and seg[0] == "jobs":
            return 200, await self.job(_unhex(seg[1], "job id", 32))
        if method == "POST" and seg == ["announce"]:
            return 201, await self.announce(_json(payload))
        if method == "GET" and seg == ["events"]:
            return 200, await self.events(q)
        if seg == ["blobs"] and method == "POST":
            return 201, {"cid": await self.agent.store.put_bytes(payload, pin=True)}
        if method == "GET" and len(seg) == 2 and seg[0] == "blobs":
            return 200, await self.blob(seg[1], q.get("format", ""))
        raise HttpError(404 if method in ("GET", "POST") else 405, f"no endpoint {method} {path}")

    # ------------------------------------------------------------------ endpoints

    async def status(self) -> dict[str, Any]:
        a = self.agent
        try:
            with trio.fail_after(5):
                account = await a.chain.account(a.node_id)
        except Exception as e:
            account = {"error": f"{type(e).__name__}: {e}"}
        net = a.net
        mesh = {t: len(net.mesh_peers(t)) for t in net._topics}
        return {
            "node_id": a.node_id.hex(),
            "peer_id": str(net.peer_id),
            "eth": a.eth.hex(),
            "addrs": net.addrs(),
            "uptime_s": round(time.time() - a.started_at, 1),
            "chain": a.chain.kind,
            "peers": net.peer_summary(),
            "mesh": mesh,
            "jobs_by_state": a.journal.count_by_state(),
            "running": len(a._running),
            "max_jobs": a.caps.max_jobs,
            "shard_bits": a.core.cfg.shard_bits,
            "shards": sorted(a.cfg.shards),
            "caps": a.caps.to_dict(),
            "enforced": dict(a.exec_caps.get("enforced", {})),
            "gpus": a.executor.gpu_status() if hasattr(a.executor, "gpu_status") else [],
            "account": account,
            "net": {
                "accepted": net.stats.accepted,
                "rejected": dict(net.stats.rejected),
                "published": net.stats.published,
                "paced_waits": net.stats.paced_waits,
                "pacing_timeouts": net.stats.pacing_timeouts,
                "fetch_served": net.stats.fetch_served,
                "fetch_requests": net.stats.fetch_requests,
                "batches_out": net.stats.batches_out,
                "batches_in": net.stats.batches_in,
            },
            "core": dict(a.core.stats),
            "chain_errors": list(a.chain_errors),
            "chain_info": _chain_info(a),
            # voucher payer: executors it signs no new voucher for (a batch of theirs failed its audit), and why
            "vouchers_blocked": dict(a.vouchers.audits.blocked) if a.vouchers is not None else {},
        }

    def nodes(self) -> dict[str, Any]:
        a = self.agent
        now = time.time()
        core = a.core
        out = [
            {
                "node_id": a.node_id.hex(),
                "self": True,
                "caps": a.caps.to_dict(),
                "shards": a.cfg.shards,
                "eth": a.eth.hex(),
                "staked": a.node_id in core.staked,
                "last_advert_s": 0.0,
                "fresh": True,
            }
        ]
        for nid, adv in sorted(core.adverts.items()):
            out.append(
                {
                    "node_id": nid.hex(),
                    "self": False,
                    "caps": adv.caps.to_dict(),
                    "shards": sorted(adv.shards) if adv.shards is not None else "all",
                    "eth": adv.eth.hex(),
                    "staked": nid in core.staked,
                    "last_advert_s": round(now - adv.at, 1),
                    "fresh": core.advert_fresh(nid, now),
                }
            )
        return {"nodes": out}

    def _summary(self, jid: bytes, row: dict[str, Any] | None) -> dict[str, Any]:
        a = self.agent
        view = a.core.jobs.get(jid)
        now = time.time()
        d: dict[str, Any] = {"job_id": jid.hex()}
        if row:
            d.update(
                {
                    "state": row["state"],
                    "detail": row["detail"],
                    "mine": row["mine"],
                    "updated": row["updated"],
                }
            )
        if view is not None:
            k = view.spec.redundancy
            valid = a.core._valid_claims(view, now)
            state = (
                view.phase
                if view.phase in (corenode.FINAL + (corenode.ACCEPTED, corenode.FAILED))
                else (row["state"] if row else view.phase)
            )
            d.update(
                {
                    "state": state,
                    "phase": view.phase,
                    "origin": view.origin.hex(),
                    "redundancy": k,
                    "quorum": view.spec.quorum,
                    "deadline": view.spec.deadline,
                    "claims": len(valid),
                    "commits": len(view.commits),
                    "reveals": len(view.reveals),
                    "reason": _reason(a, view, valid, now, row),
                }
            )
        elif row:
            d["reason"] = row["detail"] if row["state"] == "failed" else ""
        return d

    def jobs(self) -> list[dict[str, Any]]:
        a = self.agent
        rows = {bytes.fromhex(r["job_id"]): r for r in a.journal.jobs()}
        ids = list(rows)
        for jid in a.core.jobs:
            if jid not in rows:
                ids.append(jid)
        return [self._summary(jid, rows.get(jid)) for jid in ids]

    async def job(self, jid: bytes) -> dict[str, Any]:
        a = self.agent
        row = a.journal.job(jid)
        view = a.core.jobs.get(jid)
        if row is None and view is None:
            raise HttpError(404, f"job {jid.hex()} is not known to this node")
        d = self._summary(jid, row)
        if view is not None:
            d.update(
                {
                    "claims": [n.hex() for n in view.claims],
                    "winners": [n.hex() for n in view.winners],
                    "commits": [n.hex() for n in view.commits],
                    "reveals": {
                        n.hex(): {
                            "root": _hex(b.get("root")),
                            "trace_cid": b.get("trace_cid"),
                            "result_cid": b.get("result_cid"),
                        }
                        for n, b in view.reveal_msgs.items()
                    },
                    "accepted_root": _hex(view.accepted_root),
                    "spec": _jsonable(view.spec.to_dict()),
                }
            )
            if view.accepted_root:
                d["result_cids"] = sorted(
                    {
                        b["result_cid"]
                        for b in view.reveal_msgs.values()
                        if b.get("root") == view.accepted_root
                    }
                )
        d["events"] = a.journal.events(jid)
        d["txs"] = a.journal.txs(jid)
        try:
            with trio.fail_after(5):
                d["chain"] = await a.chain.job(jid)
        except Exception as e:
            d["chain"] = {"error": f"{type(e).__name__}: {e}"}
        return d

    async def submit(self, body: Any) -> dict[str, Any]:
        spec = await self._spec_of(body)
        try:
            jid = await self.agent.submit_job(spec)
        except trio.TooSlowError:
            raise HttpError(504, "the chain did not confirm the escrow in time") from None
        except Exception as e:
            raise HttpError(503, f"could not escrow the job on chain: {type(e).__name__}: {e}") from None
        return _submitted(spec, jid)

    async def submit_batch(self, body: Any) -> dict[str, Any]:
        """Several jobs at once: every body is checked first (400 names the first bad one, nothing is escrowed),
        the escrows go out together (one postJobs transaction), and the jobs funded are announced together
        (batched on gossip)."""
        if not isinstance(body, dict) or set(body) != {"jobs"} or not isinstance(body["jobs"], list):
            raise HttpError(400, 'body must be {"jobs": [job, ...]}')
        if not 1 <= len(body["jobs"]) <= MAX_BATCH_JOBS:
            raise HttpError(400, f"a batch holds 1..{MAX_BATCH_JOBS} jobs")
        specs = []
        for i, job in enumerate(body["jobs"]):
            try:
                specs.append(await self._spec_of(job))
            except HttpError as e:
                raise HttpError(400, f"jobs[{i}]: {e}") from None
        if len({s.job_id for s in specs}) != len(specs):
            raise HttpError(400, "the batch holds the same job twice")
        results = await self.agent.submit_jobs(specs)
        out = []
        for spec, r in zip(specs, results, strict=True):
            if isinstance(r, BaseException):
                out.append(
                    {
                        "job_id": spec.job_id.hex(),
                        "error": f"could not escrow the job on chain: {type(r).__name__}: {r}",
                    }
                )
            else:
                out.append(_submitted(spec, r))
        return {"jobs": out}

    async def _spec_of(self, body: Any) -> JobSpec:
        """The job spec of one submission body (its bundle stored); HttpError 400 names the bad field."""
        a = self.agent
        if not isinstance(body, dict):
            raise HttpError(400, "body must be a JSON object")
        known = {
            "manifest",
            "code_cid",
            "bundle_b64",
            "redundancy",
            "quorum",
            "deadline_s",
            "deadline",
            "nonce",
            "payment_wei",
            "executors",
            "pay",
        }
        extra = sorted(set(body) - known)
        if extra:
            raise HttpError(400, f"unknown field(s) {extra}")
        try:
            manifest = Manifest.from_dict(body.get("manifest"))
        except ProtocolError as e:
            raise HttpError(400, str(e)) from None
        if ("code_cid" in body) == ("bundle_b64" in body):
            raise HttpError(400, "give exactly one of code_cid or bundle_b64")
        if "bundle_b64" in body:
            try:
                bundle = base64.b64decode(body["bundle_b64"], validate=True)
            except (ValueError, TypeError):
                raise HttpError(400, "bundle_b64 is not base64") from None
            code_cid = await a.store.put_bytes(bundle, pin=True)
        else:
            code_cid = body["code_cid"]
        k = body.get("redundancy", 1)
        if "deadline" in body:
            deadline = body["deadline"]
        else:
            ds = body.get("deadline_s", 600)
            if not isinstance(ds, int | float) or not 1 <= ds <= 7 * 86400:
                raise HttpError(400, "deadline_s must be a number of seconds between 1 and 604800")
            deadline = int(time.time() + ds)
        nonce = _unhex(body["nonce"], "nonce") if "nonce" in body else os.urandom(16)
        spec_d: dict[str, Any] = {
            "code_cid": code_cid,
            "manifest": manifest.to_dict(),
            "redundancy": k,
            "deadline": deadline,
            "nonce": nonce,
        }
        if "quorum" in body:
            spec_d["quorum"] = body["quorum"]
        if "executors" in body:
            if not isinstance(body["executors"], list):
                raise HttpError(400, "executors must be a list of hex node ids")
            spec_d["executors"] = sorted(_unhex(x, "executors[]", 32) for x in body["executors"])
        if body.get("pay", "escrow") != "escrow":
            spec_d["pay"] = body["pay"]
        try:
            if "payment_wei" in body:
                spec_d["payment_wei"] = body["payment_wei"]
            elif isinstance(k, int) and 1 <= k <= 5:
                spec_d["payment_wei"] = quote(manifest, k).wei
            spec = JobSpec.from_dict(spec_d)
            if "nonce" not in body:
                spec = in_shards(spec, spec_d, a.core.cfg.shard_bits, a.core.serves)
        except ProtocolError as e:
            raise HttpError(400, str(e)) from None
        _check_served_shard(spec, a.core, "or leave it out and the node picks one")
        return spec

    async def announce(self, body: Any) -> dict[str, Any]:
        a = self.agent
        if not isinstance(body, dict) or "spec" not in body:
            raise HttpError(400, "body must be a JSON object with a spec (and optionally bundle_key)")
        extra = sorted(set(body) - {"spec", "bundle_key"})
        if extra:
            raise HttpError(400, f"unknown field(s) {extra}")
        spec = _spec_from_json(body["spec"])
        _check_served_shard(spec, a.core, "the client chooses it; a peer's status lists its shards")
        key = _unhex(body["bundle_key"], "bundle_key", 32) if body.get("bundle_key") else b""
        if spec.encrypted and not key:
            raise HttpError(
                400, "spec.encrypted is set but no bundle_key was given: nobody could run the job"
            )
        if key and not spec.encrypted:
            raise HttpError(400, "bundle_key given for a job whose spec is not encrypted")
        if spec.deadline <= time.time():
            raise HttpError(400, f"spec.deadline {spec.deadline} has passed")
        if spec.job_id in a.core.jobs or a.journal.job(spec.job_id) is not None:
            raise HttpError(409, f"job {spec.job_id.hex()} is already known to this node")
        try:
            seed = await a.announce_job(spec, key)
        except NotFunded as e:
            raise HttpError(409, f"not funded: {e}") from None
        except trio.TooSlowError:
            raise HttpError(504, "the chain did not answer in time") from None
        except Exception as e:
            raise HttpError(
                503, f"could not read the job's escrow on chain: {type(e).__name__}: {e}"
            ) from None
        return {"job_id": spec.job_id.hex(), "seed": seed.hex(), "deadline": spec.deadline}

    async def events(self, q: dict[str, str]) -> dict[str, Any]:
        a = self.agent
        try:
            since = int(q.get("since", "0"))
            wait = min(30.0, float(q.get("wait", "0")))
            linger = max(0.0, min(wait, float(q.get("linger", "0"))))
        except ValueError:
            raise HttpError(400, "since must be an integer, wait and linger numbers") from None
        jid = _unhex(q["job"], "job", 32) if "job" in q else None
        evs = a.journal.events(jid, since)
        if not evs and wait > 0:
            deadline = trio.current_time() + wait
            while not evs and trio.current_time() < deadline:
                await a.wait_events(deadline - trio.current_time())
                evs = a.journal.events(jid, since)
            if evs and linger > 0:
                await trio.sleep(linger)  # more events join this answer
                evs = a.journal.events(jid, since)
        return {"events": evs, "last": evs[-1]["id"] if evs else since}

    async def blob(self, cid: str, fmt: str) -> bytes:
        a = self.agent
        store = a.store
        try:
            with trio.fail_after(a.cfg.fetch_timeout_s):
                info = await store.stat(cid)
                if info.kind == "file":
                    return await store.get(cid)
                if fmt != "tar":
                    raise HttpError(409, f"{cid} is a directory; ask with ?format=tar")
                from ..store.bundle import pack as pack_dir

                with tempfile.TemporaryDirectory(dir=a.cfg.data_dir) as td:
                    dest = Path(td) / "d"
                    await store.get_dir(cid, dest)
                    return await trio.to_thread.run_sync(pack_dir, dest)
        except HttpError:
            raise
        except trio.TooSlowError:
            raise HttpError(504, f"{cid} could not be fetched from any peer in time") from None
        except Exception as e:
            name = type(e).__name__
            code = 400 if name == "InvalidCid" else 404 if name == "NotFound" else 503
            raise HttpError(code, f"{name}: {e}") from None


def _submitted(spec: JobSpec, jid: bytes) -> dict[str, Any]:
    return {
        "job_id": jid.hex(),
        "code_cid": spec.code_cid,
        "payment_wei": spec.payment_wei,
        "deadline": spec.deadline,
    }


def _check_served_shard(spec: JobSpec, core: Any, hint: str) -> None:
    """400 unless ``spec``'s job falls in a job shard this node serves (else it would not see the claims)."""
    shard = shard_of(spec.job_id, core.cfg.shard_bits)
    if not core.serves(shard):
        raise HttpError(
            400,
            f"the job falls in shard {shard}, which this node does not serve (it would not see "
            f"the job's claims): choose another nonce ({hint})",
        )


def _spec_from_json(d: Any) -> JobSpec:
    """A JobSpec from its JSON form (``nonce``, ``executors`` and ``result_key`` as hex); 400 names the bad field."""
    if not isinstance(d, dict):
        raise HttpError(400, "spec must be a JSON object")
    d = dict(d)
    if "nonce" in d:
        d["nonce"] = _unhex(d["nonce"], "spec.nonce")
    if isinstance(d.get("executors"), list):
        d["executors"] = [_unhex(x, "spec.executors[]", 32) for x in d["executors"]]
    if "result_key" in d:
        d["result_key"] = _unhex(d["result_key"], "spec.result_key", 32)
    try:
        return JobSpec.from_dict(d)
    except ProtocolError as e:
        raise HttpError(400, str(e)) from None


def _chain_info(a: Agent) -> dict[str, Any]:
    try:
        return dict(a.chain.info())
    except Exception as e:  # a chain port without it, or a broken one: say so, keep status working
        return {"error": f"{type(e).__name__}: {e}"}


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload or b"null")
    except ValueError:
        raise HttpError(400, "body is not JSON") from None


def _jsonable(x: Any) -> Any:
    if isinstance(x, bytes):
        return x.hex()
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    return x


def _reason(a: Agent, view: Any, valid: list[bytes], now: float, row: dict[str, Any] | None) -> str:
    """What a job waits for, as this node sees it (or why it failed)."""
    k = view.spec.redundancy
    if view.phase in corenode.FINAL:
        return ""
    if view.phase == corenode.FAILED:
        return view.no_eligible_reason or (row["detail"] if row else "failed")
    if not view.funded:
        return "waiting for the escrow on chain"
    if view.phase == corenode.ACCEPTED:
        return "result accepted; waiting for settlement on chain"
    if view.phase == corenode.REVEALING:
        return f"revealing: {len(view.reveals)} of {k} reveals"
    eligible = a.core.eligible_nodes(view, now)
    if not eligible and not view.claims:
        return "no eligible node yet (" + a.core._why_none_eligible(view, now) + ")"
    if len(valid) < k:
        return f"waiting for claims: {len(valid)} of {k} (eligible nodes known: {len(eligible)})"
    return f"executing: {len([w for w in view.winners if w in view.commits])} of {k} commitments"
