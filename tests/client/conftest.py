"""A local testnet (real agents, real chain: anvil or the embedded devnet) for the end-to-end client tests.

Started as ``sandrun-p2p testnet`` in a child process; its own SIGTERM handler stops every agent and the
chain by PID. Readiness is polled with a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


class Net:
    def __init__(self, root: Path, proc: subprocess.Popen, n: int) -> None:
        self.root, self.proc, self.n = root, proc, n

    def node(self, i: int) -> str:
        return str(self.root / f"node{i}")

    def log(self) -> str:
        return (self.root.parent / "testnet.log").read_text(errors="replace")[-3000:]


@pytest.fixture(scope="session")
def testnet(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("client-testnet")
    root = base / "net"
    n = 4
    with open(base / "testnet.log", "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sandrun_p2p",
                "testnet",
                "--nodes",
                str(n),
                "--data-dir",
                str(root),
                "--timeout",
                "120",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    net = Net(root, proc, n)
    try:
        deadline = time.monotonic() + 150
        while "running; press Ctrl-C" not in net.log():
            if proc.poll() is not None:
                raise AssertionError(f"testnet exited with {proc.returncode}:\n{net.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"testnet not ready in 150 s:\n{net.log()}")
            time.sleep(0.1)  # polling a log file with a deadline, not a guess at readiness
        yield net
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private client home for one test (records and keys)."""
    monkeypatch.setenv("SANDRUN_P2P_HOME", str(tmp_path / "client-home"))
    return tmp_path / "client-home"
