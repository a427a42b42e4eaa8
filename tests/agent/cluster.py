"""Multi-process test clusters: a fake shared chain plus N agent processes on loopback.

Synchronisation is by polling the agents' control APIs with deadlines, never by sleeping for a guess.
"""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandrun_p2p.agent.testnet import agent_command
from sandrun_p2p.client.errors import PeerUnavailable
from sandrun_p2p.client.peer import ControlClient
from sandrun_p2p.exec.sandbox import sweep_stale_runs
from sandrun_p2p.net.keys import load_or_create_key, peer_id_of_node

ROOT = Path(__file__).resolve().parents[2]

# Fast, but with margins above gossip delay on a loaded 2-core CI machine (p99 up to ~2.5 s with 10
# processes): a fallback rank must not claim before the top ranks' claims can arrive, and an advert must not
# look stale because it was late (stale after 3 intervals).
FAST_CORE = {
    "advert_interval": 2.0,
    "fallback_interval": 3.0,
    "commit_grace": 6.0,
    "reveal_window": 3.0,
    "settle_backup_delay": 2.0,
    "no_eligible_grace": 3.0,
    "require_stake": True,
    "require_escrow": True,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``pred()`` until it returns something truthy; AssertionError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last_err: Exception | None = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except (PeerUnavailable, OSError) as e:
            last_err = e
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_err})" if last_err else "")
    )


def bundle(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, text in sorted(files.items()):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


HELLO = bundle({"main.py": "print('hello from the sandbox')\nopen('out.txt','w').write(str(6*7))\n"})


def hello_job(**kw: Any) -> dict[str, Any]:
    job = {
        "manifest": {"entrypoint": "main.py", "outputs": ["out.txt"], "timeout": 20, "memory_mb": 128},
        "bundle_b64": base64.b64encode(HELLO).decode(),
        "redundancy": 1,
        "deadline_s": 90,
    }
    job.update(kw)
    return job


@dataclass
class Node:
    index: int
    data_dir: Path
    port: int
    node_id: bytes
    peer_id: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    _client: ControlClient | None = None

    @property
    def addr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.port}/p2p/{self.peer_id}"

    def start(self) -> None:
        for f in ("control.json", "control.token"):
            (self.data_dir / f).unlink(missing_ok=True)
        self._client = None
        with open(self.data_dir / "agent.log", "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )

    @property
    def api(self) -> ControlClient:
        if self._client is None:
            self._client = ControlClient.from_data_dir(self.data_dir, timeout=30)
        return self._client

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"agent {self.index} exited with {self.proc.returncode}:\n{self.log_tail()}")
        if not (self.data_dir / "control.json").exists():
            return False
        self.api.status()
        return True

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join((self.data_dir / "agent.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@dataclass
class Cluster:
    root: Path
    chain_url: str
    chain_proc: subprocess.Popen
    nodes: list[Node] = field(default_factory=list)

    def chain_state(self) -> dict[str, Any]:
        import httpx

        return httpx.get(self.chain_url + "/state", timeout=10).json()

    def wait_ready(self, timeout: float = 60) -> None:
        for n in self.nodes:
            wait_for(n.ready, timeout, f"agent {n.index} control API")

    def wait_mesh(self, timeout: float = 60) -> None:
        """Every running node sees every other running node's fresh, staked advert."""
        live = [n for n in self.nodes if n.proc and n.proc.poll() is None]
        ids = {n.node_id.hex() for n in live}

        def formed() -> bool:
            for n in live:
                seen = {d["node_id"] for d in n.api.nodes() if d["fresh"] and d["staked"]}
                if not ids <= seen:
                    return False
            return True

        wait_for(formed, timeout, "the mesh to form (fresh staked adverts everywhere)", interval=0.2)

    def stop(self) -> None:
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.proc.send_signal(signal.SIGTERM)
        for n in self.nodes:
            if n.proc is not None:
                try:
                    n.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    n.proc.kill()
                    n.proc.wait()
            if n._client:
                n._client.close()
            sweep_stale_runs(n.data_dir / "exec")  # what a SIGKILLed node (never restarted) left mounted
        self.chain_proc.terminate()
        self.chain_proc.wait(timeout=10)


def start_cluster(
    root: Path,
    n: int,
    *,
    faulty: tuple[int, ...] = (),
    caps: dict[int, dict] | None = None,
    core: dict[str, Any] | None = None,
    start: bool = True,
    shards: dict[int, list[int]] | None = None,
) -> Cluster:
    """``shards``: per node index, the job shards it serves (default [0]; set ``core={"shard_bits": b}``)."""
    root.mkdir(parents=True, exist_ok=True)
    port_file = root / "chain.url"
    chain = subprocess.Popen(
        [sys.executable, "-m", "tests.agent.fakechain", str(port_file)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    wait_for(port_file.exists, 30, "the fake chain to start")
    url = port_file.read_text().strip()
    cluster = Cluster(root, url, chain)
    infos = []
    for i in range(n):
        d = root / f"node{i}"
        d.mkdir(exist_ok=True)
        key = load_or_create_key(d)
        infos.append((d, free_port(), key.node_id, str(peer_id_of_node(key.node_id))))
    for i, (d, port, nid, pid) in enumerate(infos):
        boots = [f"/ip4/127.0.0.1/tcp/{infos[j][1]}/p2p/{infos[j][3]}" for j in range(max(0, i - 3), i)]
        if i == 0 and n > 1:
            boots = [f"/ip4/127.0.0.1/tcp/{infos[1][1]}/p2p/{infos[1][3]}"]
        cfg = {
            "listen": [f"/ip4/127.0.0.1/tcp/{port}"],
            "bootstrap": boots,
            "mdns": False,
            "chain_factory": "tests.agent.fakechain:open_chain",
            "chain": {"url": url},
            "core": {**FAST_CORE, **(core or {})},
            "caps": (caps or {}).get(i, {"max_jobs": 4}),
            "shards": (shards or {}).get(i, [0]),
            "shutdown_grace_s": 3.0,
            "chain_poll_s": 0.1,
            "log_level": "info",
        }
        cluster.nodes.append(Node(i, d, port, nid, pid, agent_command(d, cfg, faulty=i in faulty)))
    if start:
        for node in cluster.nodes:
            node.start()
    return cluster


@contextmanager
def running_cluster(root: Path, n: int, **kw: Any) -> Iterator[Cluster]:
    """:func:`start_cluster`, ready and meshed; every process stopped on exit."""
    c = start_cluster(root, n, **kw)
    try:
        c.wait_ready(90)
        c.wait_mesh(60)
        yield c
    finally:
        c.stop()
