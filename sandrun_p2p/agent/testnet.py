"""``sandrun-p2p testnet``: N agents as separate processes on loopback, sharing one local chain.

The chain is anvil when it is installed, else the embedded chain served over JSON-RPC to every agent (the
output says which). The contracts are deployed, each node gets a funded account and stakes, and the command
waits until every node sees every other node's fresh, staked advert. Then it prints how to reach each node
(and every PID it started) and runs until SIGINT or SIGTERM: it installs both handlers itself, so started in
the background from a script (where SIGINT arrives ignored), ``kill -TERM <pid>`` stops every agent and the
chain, by PID, before it exits. With ``--jobs M`` it submits M sample jobs through
different nodes, waits for them, prints a summary (``--json`` for the machine-readable one) and exits
non-zero when any job did not settle.

``--pay voucher`` pays the sample jobs (k = 1) by voucher instead of a per-job escrow. The testnet deploys with
a 1-second ``challenge_window`` (production: 3600 s) so voucher batches finalize, and their jobs reach
``settled`` (the batch holding the job was paid out), within the run.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

SAMPLE_JOB = (
    "import hashlib\n"
    "n = int(open('n.txt').read())\n"
    "acc = sum(i * i for i in range(n))\n"
    "open('out.txt', 'w').write(f'{acc}\\n')\n"
    "print('sum of squares below', n, '=', acc, hashlib.sha256(str(acc).encode()).hexdigest()[:16])\n"
)

TESTNET_CORE = {
    "advert_interval": 5.0,
    "fallback_interval": 1.0,
    "commit_grace": 10.0,
    "reveal_window": 5.0,
    "settle_backup_delay": 3.0,
    "require_stake": True,
    "require_escrow": True,
    "deferred_spread": 1.0,  # a burst of jobs on one machine: spread freed nodes over them (docs/protocol.md)
}


def core_overrides(items: list[str]) -> dict[str, Any]:
    """``--core KEY=VALUE`` items as [core] settings; raise ValueError for an unknown key or a value of the wrong
    type (so a typo stops the testnet before it starts, not each agent)."""
    from ..assignments import parse
    from .config import core_settings

    return core_settings(parse(items, "--core"), "--core")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=int, default=3, help="number of agents (default 3)")
    p.add_argument("--jobs", type=int, default=0, help="submit this many sample jobs, wait, summarise, exit")
    p.add_argument("--redundancy", type=int, default=1, help="executors per sample job (k)")
    p.add_argument("--json", action="store_true", help="print the job summary as JSON")
    p.add_argument(
        "--data-dir",
        type=Path,
        help="where the nodes keep their state (default: a new temp dir, "
        "removed when the run ends well; kept after a failure or with --keep)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir (node state and logs) in any case")
    p.add_argument(
        "--chain",
        choices=["auto", "anvil", "embedded"],
        default="auto",
        help="auto: anvil when installed, else the embedded chain served to all nodes",
    )
    p.add_argument(
        "--timeout", type=float, default=180.0, help="seconds to wait for the mesh and for the jobs"
    )
    p.add_argument(
        "--pay",
        choices=["escrow", "voucher"],
        default="escrow",
        help="how sample jobs are paid: per-job escrow (default) or vouchers settled in batches (k = 1)",
    )
    p.add_argument("--job-size", type=int, default=200_000, help="work per sample job (loop length)")
    p.add_argument(
        "--publish-batch-window",
        type=float,
        default=0.0,
        help="each agent's publish_batch_window_s (default 0: publish at once)",
    )
    p.add_argument(
        "--core",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a protocol parameter for every node, over the testnet's (the agent config's [core]; e.g. "
        "--core deferred_spread=0 --core pass_when_full=true); repeatable",
    )
    p.add_argument(
        "--shard-bits",
        type=int,
        default=0,
        help="2**B job topics; contiguous blocks of nodes serve one each (default 0: one topic)",
    )
    p.add_argument(
        "--transport",
        choices=["tcp", "quic"],
        default="tcp",
        help="what the nodes listen on and dial: TCP (Noise, mplex; default) or QUIC (TLS 1.3)",
    )
    p.add_argument(
        "--job-runtime",
        action="append",
        metavar="DIR",
        help="every node's jobs see this folder read-only, its bin first on PATH (e.g. a Python environment "
        "with PyTorch; repeatable; see `sandrun-p2p agent --job-runtime`)",
    )


def _free_port(transport: str = "tcp") -> int:
    with socket.socket(type=socket.SOCK_DGRAM if transport == "quic" else socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _addr(transport: str, port: int) -> str:
    """A loopback listen address (without /p2p) for ``transport``."""
    return f"/ip4/127.0.0.1/udp/{port}/quic-v1" if transport == "quic" else f"/ip4/127.0.0.1/tcp/{port}"


def _bundle(n: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, text in (("main.py", SAMPLE_JOB), ("n.txt", str(n))):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def shard_groups(n: int, shard_bits: int) -> list[list[int]]:
    """The job shards node ``i`` of ``n`` serves in a testnet of ``2**shard_bits`` shards: contiguous blocks of
    nodes share a shard (nodes 0-4 shard 0, 5-9 shard 1 for 10 nodes and one bit); every shard gets a node
    (with more shards than nodes, a node serves several)."""
    s = 2**shard_bits
    if s <= n:
        return [[i * s // n] for i in range(n)]
    return [[x for x in range(s) if x * n // s == i] for i in range(n)]


def dial_plan(i: int, n: int, shard_bits: int = 0) -> list[int]:
    """Whom node ``i`` dials: a ring plus a chord (no single hub), each pair dialled from one side only
    (simultaneous dials in both directions leave py-libp2p with a half-usable connection). With job shards
    (:func:`shard_groups`), also a ring inside each shard's block of nodes, so that every job topic's mesh is
    connected without going through nodes of other shards (gossip reaches only a topic's subscribers)."""
    groups = shard_groups(n, shard_bits)

    def wants(a: int) -> set[int]:
        out = {(a + 1) % n, (a + n // 2) % n} if n > 1 else set()
        if shard_bits:
            block = [b for b in range(n) if groups[b] == groups[a]]
            if len(block) > 1:
                out.add(block[(block.index(a) + 1) % len(block)])
        return out - {a}

    return sorted(j for j in wants(i) if not (i in wants(j) and i > j))


def _toml(d: dict[str, Any]) -> str:
    lines, tables = [], []
    for k, v in d.items():
        (tables if isinstance(v, dict) else lines).append((k, v))
    out = [f"{k} = {json.dumps(v)}" for k, v in lines]
    for name, t in tables:
        out.append(f"[{name}]")
        out.extend(f"{k} = {json.dumps(v)}" for k, v in t.items())
    return "\n".join(out) + "\n"


def agent_command(d: Path, cfg: dict[str, Any], *, faulty: bool = False) -> list[str]:
    """Write ``cfg`` as the config file of the agent whose data dir is ``d``; the command that runs it (logs in
    ``d/agent.log``; ``faulty``: with the test-only faulty executor)."""
    (d / "agent.toml").write_text(_toml(cfg))
    argv = [sys.executable, "-m", "sandrun_p2p.agent.cli_agent", "--data-dir", str(d)]
    argv += ["--config", str(d / "agent.toml"), "--log-file", str(d / "agent.log")]
    return [*argv, "--test-faulty-executor"] if faulty else argv


class Testnet:
    def __init__(self, args: argparse.Namespace, say: Any, *, faulty: tuple[int, ...] = ()) -> None:
        """``faulty``: indexes of nodes started with the test-only faulty executor (tests only)."""
        self.args = args
        self.faulty = faulty
        self.say = say
        self.own_root = not args.data_dir  # a temp dir of its own: removed by stop(remove_state=True)
        self.root = Path(args.data_dir or tempfile.mkdtemp(prefix="sandrun-testnet-")).resolve()
        self.procs: list[subprocess.Popen] = []
        self.nodes: list[dict[str, Any]] = []
        self.local: Any = None
        self.chain_kind = ""

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        from ..chain import Chain, MarketParams, deploy
        from ..chain.devnet import start_local_chain
        from ..net.keys import load_or_create_key, peer_id_of_node
        from .chainlink import write_key_file

        a = self.args
        self.root.mkdir(parents=True, exist_ok=True)
        self.local = start_local_chain(a.chain)
        self.chain_kind = "anvil" if self.local.kind == "anvil" else "embedded"
        self.say(f"chain: {self.chain_kind} at {self.local.url} (pid {self.local.pid})")
        chain = Chain.connect(self.local.url, kind=self.local.kind)
        funder = chain.dev_signers()[0]
        # short windows so jobs and voucher batches finalize within a run (production: 3600 s each)
        params = MarketParams(reveal_window=20, challenge_window=1)
        addresses = self.root / "sandrun-chain.json"
        dep = deploy(chain, funder, params, out=str(addresses))
        self.say(f"contracts: SandrunMarket at {dep.market_address} (addresses in {addresses})")
        infos = []
        transport = getattr(a, "transport", "tcp") or "tcp"
        for i in range(a.nodes):
            d = self.root / f"node{i}"
            d.mkdir(exist_ok=True)
            key = load_or_create_key(d)
            acct = chain.new_account(fund=10 * 10**18, funder=funder)
            write_key_file(
                d / "chain.key",
                acct.private_key.hex() if isinstance(acct.private_key, bytes) else str(acct.private_key),
            )
            infos.append(
                (d, _free_port(transport), key.node_id, str(peer_id_of_node(key.node_id)), acct.address)
            )
        bits = int(getattr(a, "shard_bits", 0) or 0)
        groups = shard_groups(a.nodes, bits)
        for i, (d, port, nid, pid, address) in enumerate(infos):
            peers = dial_plan(i, a.nodes, bits)
            cfg = {
                "listen": [_addr(transport, port)],
                "bootstrap": [f"{_addr(transport, infos[j][1])}/p2p/{infos[j][3]}" for j in peers],
                "mdns": False,
                "core": {
                    **TESTNET_CORE,
                    "shard_bits": bits,
                    **core_overrides(getattr(a, "core", None) or []),
                },
                "shards": groups[i],
                "chain": {
                    "rpc": self.local.url,
                    "kind": self.local.kind,
                    "addresses_file": str(addresses),
                    "key_file": str(d / "chain.key"),
                },
                "shutdown_grace_s": 5.0,
                "chain_poll_s": 1.0,  # and at once when an unfunded job is announced
            }
            if getattr(a, "job_runtime", None):
                cfg["job_runtimes"] = [str(Path(r).resolve()) for r in a.job_runtime]
            if getattr(a, "publish_batch_window", 0):
                cfg["publish_batch_window_s"] = float(a.publish_batch_window)
            argv = agent_command(d, cfg, faulty=i in self.faulty)
            with open(d / "agent.out", "ab") as out:
                proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self.procs.append(proc)
            self.nodes.append(
                {
                    "index": i,
                    "data_dir": str(d),
                    "pid": proc.pid,
                    "node_id": nid.hex(),
                    "peer_id": pid,
                    "addr": f"{_addr(transport, port)}/p2p/{pid}",
                    "eth": address,
                }
            )

    def clients(self) -> list[Any]:
        from ..client.peer import ControlClient

        return [ControlClient.from_data_dir(Path(n["data_dir"])) for n in self.nodes]

    def wait_mesh(self) -> list[Any]:
        from ..client.errors import PeerUnavailable
        from ..client.peer import ControlClient

        deadline = time.monotonic() + self.args.timeout
        clients: list[Any] = [None] * len(self.nodes)
        ids = {n["node_id"] for n in self.nodes}
        while time.monotonic() < deadline:
            for i, p in enumerate(self.procs):
                if p.poll() is not None:
                    log = Path(self.nodes[i]["data_dir"]) / "agent.out"
                    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                    raise RuntimeError(f"node {i} exited with {p.returncode}:\n{tail}")
            try:
                for i, n in enumerate(self.nodes):
                    if clients[i] is None:
                        clients[i] = ControlClient.from_data_dir(Path(n["data_dir"]))
                if all(
                    ids <= {d["node_id"] for d in c.nodes() if d["fresh"] and d["staked"]} for c in clients
                ):
                    return clients
            except PeerUnavailable:
                pass
            time.sleep(0.25)
        raise RuntimeError(
            f"the mesh did not form within {self.args.timeout}s (see {self.root}/node*/agent.log)"
        )

    def describe(self, clients: list[Any]) -> None:
        self.say(f"mesh formed: {len(self.nodes)} nodes, each sees all adverts (state in {self.root})")
        for n, c in zip(self.nodes, clients, strict=True):
            self.say(f"  node{n['index']}  pid {n['pid']}  {n['addr']}")
            self.say(f"         control {c.url}   sandrun-p2p status --data-dir {n['data_dir']}")

    # ------------------------------------------------------------------ jobs

    def run_jobs(self, clients: list[Any]) -> dict[str, Any]:
        a = self.args
        t0 = time.monotonic()
        submitted = []
        for i in range(a.jobs):
            api = clients[i % len(clients)]
            body = {
                "manifest": {
                    "entrypoint": "main.py",
                    "outputs": ["out.txt"],
                    "timeout": 30,
                    "memory_mb": 128,
                },
                "bundle_b64": base64.b64encode(_bundle(a.job_size + i)).decode(),
                "redundancy": a.redundancy,
                "deadline_s": max(60, int(a.timeout)),
            }
            if getattr(a, "pay", "escrow") != "escrow":
                body["pay"] = a.pay
            at = time.time()
            r = api.submit(**body)
            submitted.append((api, r["job_id"], at))
            self.say(f"submitted job {r['job_id'][:16]} through node{i % len(clients)}")
        jobs = []
        deadline = time.monotonic() + a.timeout
        for api, jid, submitted_at in submitted:
            left = max(1.0, deadline - time.monotonic())
            try:
                j = api.wait_job(jid, ("settled", "refunded"), left)
            except Exception:
                j = api.job(jid)
            chain = j.get("chain") or {}
            if j.get("state") == "settled" and not chain.get("paid_wei"):
                # the node's view settled: give its chain poller a moment for the payout figures
                end = time.monotonic() + 10
                while time.monotonic() < end and not chain.get("paid_wei"):
                    time.sleep(0.2)
                    chain = api.job(jid).get("chain") or {}
            jobs.append(
                {
                    "job_id": jid,
                    "state": j.get("state"),
                    "submitted_at": round(submitted_at, 6),
                    **self.claims_and_runs(clients, jid, api),
                    "claimants": j.get("claims") if isinstance(j.get("claims"), list) else [],
                    "trace_roots": {n: v["root"] for n, v in (j.get("reveals") or {}).items()}
                    if isinstance(j.get("reveals"), dict)
                    else {},
                    "accepted_root": j.get("accepted_root"),
                    "paid_wei": int(chain.get("paid_wei", 0)),
                    "refunded_wei": int(chain.get("refunded_wei", 0)),
                    "reason": j.get("reason", ""),
                }
            )
            self.say(f"job {jid[:16]}: {j.get('state')} {j.get('reason', '')}")
        totals = {
            "jobs": len(jobs),
            "settled": sum(1 for j in jobs if j["state"] == "settled"),
            "not_settled": sum(1 for j in jobs if j["state"] != "settled"),
            "paid_wei": sum(j["paid_wei"] for j in jobs),
            "refunded_wei": sum(j["refunded_wei"] for j in jobs),
            "jobs_wall_s": round(time.monotonic() - t0, 2),
        }
        return {"jobs": jobs, "totals": totals}

    def claims_and_runs(self, clients: list[Any], jid: str, origin: Any) -> dict[str, Any]:
        """``announced_at`` (the origin's record of announcing the job, after escrowing it), ``claims``:
        [{node, at}] and ``runs``: [{node, started_at, committed_at}], each read from the journal of the node that
        announced, claimed or ran (its own record, on its own clock: every node shares this host's clock)."""
        claims: list[dict[str, Any]] = []
        runs: list[dict[str, Any]] = []
        announced_at = None
        for n, api in zip(self.nodes, clients, strict=True):
            try:
                events = api.events(job=jid)["events"]
            except Exception:
                continue  # a node that stopped answering: its claims are missing from the summary
            own = [e for e in events if e["node"] == n["node_id"]]
            if api is origin:
                announced_at = min((e["at"] for e in own if e["state"] == "announced"), default=None)
            claimed = [e["at"] for e in own if e["state"] == "claimed"]
            if claimed:
                claims.append({"node": n["node_id"], "at": round(min(claimed), 6)})
            started = [e["at"] for e in own if e["state"] == "running"]
            committed = [e["at"] for e in own if e["state"] == "committed"]
            if started and committed:
                runs.append(
                    {
                        "node": n["node_id"],
                        "started_at": round(min(started), 6),
                        "committed_at": round(min(committed), 6),
                    }
                )
        claims.sort(key=lambda c: c["at"])
        return {
            "announced_at": None if announced_at is None else round(announced_at, 6),
            "claims": claims,
            "runs": runs,
        }

    # ------------------------------------------------------------------ stop

    def stop(self, remove_state: bool = False) -> None:
        """Stop every agent and the chain (by PID); with ``remove_state``, then remove the temp dir it made."""
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)
        end = time.monotonic() + 20
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
                p.wait()
        if self.local is not None:
            self.local.stop()
        if remove_state and self.own_root:
            shutil.rmtree(self.root, ignore_errors=True)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _set_stop_signals(handler: Any) -> None:
    """SIGINT and SIGTERM -> ``handler`` (main thread only; elsewhere, e.g. tests calling run(), leave them)."""
    import threading

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)


def run(args: argparse.Namespace) -> int:
    if args.nodes < 1 or args.nodes > 64:
        print("sandrun-p2p testnet: --nodes must be between 1 and 64", file=sys.stderr)
        return 2
    if getattr(args, "pay", "escrow") == "voucher" and args.redundancy != 1:
        print("sandrun-p2p testnet: --pay voucher is for --redundancy 1 only", file=sys.stderr)
        return 2
    if not 1 <= args.redundancy <= min(5, args.nodes):
        print(
            f"sandrun-p2p testnet: --redundancy must be between 1 and min(5, --nodes={args.nodes})",
            file=sys.stderr,
        )
        return 2
    if args.jobs < 0:
        print("sandrun-p2p testnet: --jobs must be >= 0", file=sys.stderr)
        return 2
    try:
        core_overrides(args.core)
    except ValueError as e:
        print(f"sandrun-p2p testnet: {e}", file=sys.stderr)
        return 2
    quiet = args.json

    def say(msg: str) -> None:
        print(msg, file=sys.stderr if quiet else sys.stdout, flush=True)

    t0 = time.monotonic()
    net = Testnet(args, say)
    _set_stop_signals(_interrupt)
    rc = 1
    try:
        net.start()
        clients = net.wait_mesh()
        net.describe(clients)
        if args.jobs:
            summary = net.run_jobs(clients)
            summary["chain"] = net.chain_kind
            summary["wall_s"] = round(time.monotonic() - t0, 2)
            if args.json:
                print(json.dumps(summary, indent=2))
            else:
                t = summary["totals"]
                say(
                    f"{t['settled']} of {t['jobs']} jobs settled; paid {t['paid_wei']} wei; wall {summary['wall_s']}s"
                )
            rc = 0 if summary["totals"]["not_settled"] == 0 else 1
            return rc
        say("running; press Ctrl-C to stop every node")
        with contextlib.suppress(KeyboardInterrupt):
            while all(p.poll() is None for p in net.procs):
                time.sleep(0.5)
        rc = 0
        return rc
    except KeyboardInterrupt:
        rc = 130
        return rc
    except Exception as e:
        print(f"sandrun-p2p testnet: {type(e).__name__}: {e}", file=sys.stderr)
        return rc
    finally:
        _set_stop_signals(signal.SIG_IGN)  # a second signal must not cut the cleanup short
        say("stopping every node (by PID)")
        remove = rc in (0, 130) and not getattr(args, "keep", False)
        net.stop(remove_state=remove)
        _set_stop_signals(signal.SIG_DFL)
        say("stopped" + ("" if remove or not net.own_root else f"; node state and logs kept in {net.root}"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sandrun-p2p testnet")
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
