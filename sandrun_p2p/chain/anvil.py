"""Start and stop anvil (npm ``@foundry-rs/anvil-linux-amd64``) on 127.0.0.1 for multi-process local networks."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from .errors import ChainError

_PKG = Path("node_modules") / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
_REPO = Path(__file__).resolve().parents[2]


def find_anvil() -> str | None:
    """The anvil binary: $SANDRUN_ANVIL, the npm package under contracts/ or scripts/anvil/, or PATH."""
    env = os.environ.get("SANDRUN_ANVIL")
    candidates = [Path(env)] if env else []
    candidates += [
        _REPO / "contracts" / _PKG,
        _REPO / "scripts" / "anvil" / _PKG,
        Path.cwd() / "contracts" / _PKG,
    ]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    return shutil.which("anvil")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_rpc(url: str, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until a JSON-RPC node answers eth_chainId at ``url``."""
    import json
    import urllib.request

    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise ChainError("start", f"the node exited with code {proc.returncode} before answering")
        try:
            req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=1) as r:
                if "result" in json.loads(r.read()):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ChainError("start", f"nothing answered at {url} within {timeout}s")
        time.sleep(0.02)


class Anvil:
    """An anvil process on 127.0.0.1 (a free port unless given); stop() ends it by its PID."""

    def __init__(
        self,
        port: int | None = None,
        *,
        chain_id: int = 31337,
        binary: str | None = None,
        block_time: float | None = None,
        log: str | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        """``args``: more command-line arguments for anvil (e.g. ``("--hardfork", "cancun")``)."""
        self.binary = binary or find_anvil()
        if not self.binary:
            raise ChainError(
                "no-anvil",
                "anvil is not installed: run `npm ci` in contracts/ (npm @foundry-rs/anvil-linux-amd64)",
            )
        self.port = port
        self.chain_id = chain_id
        self.block_time = block_time
        self.log = log
        self.args = tuple(args)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 10.0) -> Anvil:
        requested = self.port
        for attempt in range(3):
            port = requested or free_port()
            cmd = [self.binary, "--host", "127.0.0.1", "--port", str(port), "--chain-id", str(self.chain_id)]
            if self.block_time:
                cmd += ["--block-time", str(self.block_time)]
            cmd += self.args
            out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self.port = port
            try:
                wait_for_rpc(self.url, timeout, self.proc)
                return self
            except ChainError:
                self.stop()
                if requested is None and attempt < 2:
                    continue  # the free port was taken meanwhile: pick another
                raise
        raise ChainError("start", "anvil did not start")

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)

    def __enter__(self) -> Anvil:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
