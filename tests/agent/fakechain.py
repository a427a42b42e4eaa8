"""A tiny shared settlement ledger for multi-process agent tests (NOT the product chain).

Run as ``python -m tests.agent.fakechain PORT_FILE``: serves JSON over HTTP on 127.0.0.1 and writes its
URL to PORT_FILE. Agents load :func:`open_chain` through ``chain_factory = "tests.agent.fakechain:open_chain"``
with ``[chain] url = ...``. The rules are the contract's in miniature: escrow on fund, pay agreeing
revealers on settle, refund the rest, record slashes, emit events.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

import httpx
import trio

from sandrun_p2p.agent.ports import NotFunded, fund_each
from sandrun_p2p.protocol.events import ChainUpdate, SubmitTx
from sandrun_p2p.protocol.jobspec import JobSpec

STAKE = 10**18


class Ledger:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.nodes: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.slashes: list[dict[str, Any]] = []

    def emit(self, kind: str, job: str = "", node: str = "", **data: Any) -> None:
        self.events.append({"kind": kind, "job": job, "node": node, "data": data})

    def join(self, node: str) -> dict[str, Any]:
        if node not in self.nodes:
            eth = hashlib.sha256(bytes.fromhex(node)).digest()[:20].hex()
            self.nodes[node] = {"eth": eth, "stake": STAKE, "earned": 0, "slashed": 0}
            self.emit("staked", node=node, eth=eth)
        return {"eth": self.nodes[node]["eth"]}

    def fund(
        self, job: str, payment: int, k: int, origin: str, q: int = 0, deadline: int = 0
    ) -> dict[str, Any]:
        if job not in self.jobs:
            seed = hashlib.sha256(bytes.fromhex(job) + b"fake-chain-seed").hexdigest()
            self.jobs[job] = {
                "state": "funded",
                "payment": payment,
                "k": k,
                "q": q,
                "deadline": deadline,
                "origin": origin,
                "seed": seed,
                "commits": {},
                "reveals": {},
                "paid": {},
                "refunded": 0,
                "reason": "",
            }
            self.emit("job_funded", job=job, seed=seed)
        return {"seed": self.jobs[job]["seed"]}

    def tx(self, node: str, kind: str, job: str, args: dict[str, Any]) -> dict[str, Any]:
        j = self.jobs.get(job)
        if j is None:
            raise ValueError("unknown job")
        if kind == "commit":
            j["commits"][node] = args["commitment"]
        elif kind == "reveal":
            j["reveals"][node] = {"root": args["root"], "usage": int(args.get("usage_wei", 0))}
        elif kind == "settle":
            if j["state"] != "funded":
                raise ValueError(f"job already {j['state']}")
            root = args["root"]
            # as the contract: the settler also reveals the openings it saw on gossip for committed nodes whose
            # own reveal has not landed yet (their usage is unknown here: they ask their full share)
            for n, r in (args.get("reveals") or {}).items():
                if n in j["commits"] and n not in j["reveals"]:
                    j["reveals"][n] = {"root": r, "usage": 0}
            agree = [n for n, r in j["reveals"].items() if r["root"] == root]
            if not agree:
                raise ValueError("no reveal matches the root")
            share = j["payment"] // max(1, j["k"])
            for n in agree:
                pay = min(share, j["reveals"][n]["usage"] or share)
                j["paid"][n] = pay
                self.nodes.setdefault(n, {"eth": "", "stake": 0, "earned": 0, "slashed": 0})["earned"] += pay
            j["refunded"] = j["payment"] - sum(j["paid"].values())
            j["state"] = "settled"
            j["root"] = root
            self.emit("job_settled", job=job, root=root)
        elif kind == "refund":
            if j["state"] != "funded":
                raise ValueError(f"job already {j['state']}")
            j["state"], j["refunded"], j["reason"] = "refunded", j["payment"], args.get("reason", "")
            self.emit("job_refunded", job=job, reason=j["reason"])
        elif kind == "slash":
            accused = args["node"]
            if any(s["job"] == job and s["node"] == accused for s in self.slashes):
                raise ValueError("already slashed for this job")
            self.slashes.append({"job": job, "node": accused, "kind": args.get("kind", ""), "by": node})
            n = self.nodes.get(accused)
            if n:
                cut = n["stake"] // 10
                n["stake"] -= cut
                n["slashed"] += cut
            self.emit("slashed", job=job, node=accused, reason=args.get("kind", ""))
        else:
            raise ValueError(f"unknown tx kind {kind}")
        return {"ok": True}


async def serve(port_file: str) -> None:
    ledger = Ledger()

    async def handle(stream: trio.SocketStream) -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        length = 0
        for line in lines[1:]:
            if line.lower().startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        while len(body) < length:
            body += await stream.receive_some(65536)
        req = json.loads(body or b"{}")
        status = 200
        try:
            if path == "/join":
                out: Any = ledger.join(req["node"])
            elif path == "/fund":
                out = ledger.fund(
                    req["job"],
                    req["payment"],
                    req["k"],
                    req["origin"],
                    req.get("q", 0),
                    req.get("deadline", 0),
                )
            elif path == "/tx":
                out = ledger.tx(req["node"], req["kind"], req["job"], req["args"])
            elif path.startswith("/events"):
                since = int(path.split("since=")[1]) if "since=" in path else 0
                out = {"events": ledger.events[since:], "next": len(ledger.events)}
            elif path == "/state":
                out = {"nodes": ledger.nodes, "jobs": ledger.jobs, "slashes": ledger.slashes}
            else:
                status, out = 404, {"error": "no such path"}
        except Exception as e:
            status, out = 400, {"error": f"{type(e).__name__}: {e}"}
        data = json.dumps(out).encode()
        await stream.send_all(
            f"HTTP/1.1 {status} X\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data
        )
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    with open(port_file + ".tmp", "w") as f:
        f.write(f"http://127.0.0.1:{port}")
    import os

    os.replace(port_file + ".tmp", port_file)
    await trio.serve_listeners(handle, listeners)


def _hexargs(args: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in args.items():
        if isinstance(v, bytes):
            out[k] = v.hex()
        elif isinstance(v, int | str | float):
            out[k] = v
        elif hasattr(v, "kind"):  # Evidence
            out[k] = str(getattr(v, "kind", ""))
        elif k == "reveals":  # a settle's openings seen on gossip: node -> (root, salt)
            out[k] = {n.hex(): rv[0].hex() for n, rv in v.items()}
    return out


class FakeChain:
    kind = "fake"

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = httpx.AsyncClient(base_url=url, timeout=10)
        self.cursor = 0

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = await self.client.post(path, json=body)
        out = r.json()
        if r.status_code != 200:
            raise RuntimeError(out.get("error", r.status_code))
        return out

    async def join(self, node_id: bytes) -> bytes:
        return bytes.fromhex((await self._post("/join", {"node": node_id.hex()}))["eth"])

    async def fund_job(self, spec: JobSpec, origin: bytes) -> bytes:
        out = await self._post(
            "/fund",
            {
                "job": spec.job_id.hex(),
                "payment": spec.payment_wei,
                "k": spec.redundancy,
                "origin": origin.hex(),
                "q": spec.quorum,
                "deadline": spec.deadline,
            },
        )
        return bytes.fromhex(out["seed"])

    async def fund_jobs(self, specs: list[JobSpec], origin: bytes) -> list[bytes | BaseException]:
        return await fund_each(self.fund_job, specs, origin)

    async def check_job(self, spec: JobSpec) -> bytes:
        j = (await self.state())["jobs"].get(spec.job_id.hex())
        if j is None or j["state"] != "funded":
            raise NotFunded(f"job {spec.job_id.hex()} is not open on the fake chain")
        diffs = [
            f"{name}: chain {j[key]}, spec {want}"
            for name, key, want in (
                ("k", "k", spec.redundancy),
                ("q", "q", spec.quorum),
                ("deadline", "deadline", spec.deadline),
            )
            if j[key] != want
        ]
        if j["payment"] < spec.payment_wei:
            diffs.append(f"escrow: chain {j['payment']} wei, spec payment_wei {spec.payment_wei}")
        if diffs:
            raise NotFunded("; ".join(diffs))
        return bytes.fromhex(j["seed"])

    def info(self) -> dict[str, Any]:
        return {"rpc": self.url, "market": None, "kind": self.kind, "chain_id": None}

    async def submit(self, node_id: bytes, tx: SubmitTx) -> str:
        await self._post(
            "/tx", {"node": node_id.hex(), "kind": tx.kind, "job": tx.job_id.hex(), "args": _hexargs(tx.args)}
        )
        return "ok"

    async def poll(self) -> list[ChainUpdate]:
        r = await self.client.get(f"/events?since={self.cursor}")
        out = r.json()
        self.cursor = out["next"]
        ups = []
        for e in out["events"]:
            data = dict(e["data"])
            for key in ("seed", "root", "eth"):
                if key in data:
                    data[key] = bytes.fromhex(data[key])
            ups.append(ChainUpdate(e["kind"], bytes.fromhex(e["job"]), bytes.fromhex(e["node"]), data))
        return ups

    async def state(self) -> dict[str, Any]:
        return (await self.client.get("/state")).json()

    async def account(self, node_id: bytes) -> dict[str, Any]:
        return (await self.state())["nodes"].get(node_id.hex(), {})

    async def job(self, job_id: bytes) -> dict[str, Any]:
        j = (await self.state())["jobs"].get(job_id.hex())
        if j is None:
            return {"state": "unknown"}
        return {
            "state": j["state"],
            "paid_wei": sum(j["paid"].values()),
            "paid": j["paid"],
            "refunded_wei": j["refunded"],
            "reason": j["reason"],
        }

    async def close(self) -> None:
        await self.client.aclose()


def open_chain(options: dict[str, Any]) -> FakeChain:
    return FakeChain(options["url"])


if __name__ == "__main__":
    trio.run(serve, sys.argv[1])
