"""IPFS backend behaviour that needs no real daemon: dead, silent and lying APIs; the asyncio bridge."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trio

from sandrun_p2p.store import (
    CidMismatch,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
    cid_of_bytes,
    open_store,
)
from sandrun_p2p.store.ipfs import AsyncioThread, IpfsStore, parse_api


def test_parse_api() -> None:
    a = parse_api("/ip4/127.0.0.1/tcp/5001")
    assert (a.scheme, a.host, a.port) == ("http", "127.0.0.1", 5001)
    assert parse_api("/dns4/ipfs.local/tcp/443/https").scheme == "https"
    assert parse_api("/ip6/::1/tcp/5001").host == "::1"
    u = parse_api("http://localhost:5002/api/v0")
    assert (u.host, u.port) == ("localhost", 5002)
    assert parse_api("127.0.0.1:5003").port == 5003
    for bad in ("/ip4/127.0.0.1/udp/5001", "/ip4/127.0.0.1", "ftp://x:1", "/ip4/1.2.3.4/tcp/0"):
        with pytest.raises(StoreError):
            parse_api(bad)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def test_dead_daemon_clear_error(tmp_path: Path) -> None:
    api = f"/ip4/127.0.0.1/tcp/{free_port()}"
    store = open_store(str(tmp_path), api)
    assert isinstance(store, IpfsStore)
    try:
        with trio.fail_after(10):
            for op in (store.put_bytes(b"x"), store.get(cid_of_bytes(b"x")), store.pin(cid_of_bytes(b"x"))):
                with pytest.raises(StoreUnavailable, match=api.replace(".", r"\.")) as ei:
                    await op
                assert "not reachable" in str(ei.value) or "did not return" in str(ei.value)
    finally:
        await store.close()
    assert list((tmp_path / "store-ipfs" / "owned").iterdir()) == []  # nothing recorded


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts TCP connections and never answers: a hung daemon."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def loop() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
                held.append(c)
            except OSError:
                continue

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield f"/ip4/127.0.0.1/tcp/{srv.getsockname()[1]}"
    stop.set()
    t.join()
    for c in held:
        c.close()
    srv.close()


async def test_slow_daemon_times_out(tmp_path: Path, silent_server: str) -> None:
    store = IpfsStore(silent_server, tmp_path, timeout_s=0.5, block_timeout_s=0.5)
    try:
        with trio.fail_after(10):
            with pytest.raises(StoreTimeout, match=silent_server):
                await store.put_bytes(b"hello")
            with pytest.raises(StoreTimeout, match=silent_server):
                await store.get(cid_of_bytes(b"hello"))
            with pytest.raises(StoreTimeout, match=silent_server):
                await store.has(cid_of_bytes(b"hello"))
    finally:
        await store.close()
    assert list((tmp_path / "store-ipfs" / "owned").iterdir()) == []


class _Liar(BaseHTTPRequestHandler):
    calls: list[str] = []

    def do_POST(self) -> None:  # noqa: N802
        self.calls.append(self.path.split("?")[0])
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        elif self.headers.get("Transfer-Encoding") == "chunked":
            while True:
                size = int(self.rfile.readline().strip(), 16)
                self.rfile.read(size + 2)
                if size == 0:
                    break
        body = json.dumps({"Name": "data", "Hash": cid_of_bytes(b"something else"), "Size": "1"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


async def test_cid_mismatch_is_refused_and_not_pinned(tmp_path: Path) -> None:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Liar)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    _Liar.calls.clear()
    store = IpfsStore(f"http://127.0.0.1:{srv.server_address[1]}", tmp_path, timeout_s=5)
    try:
        with pytest.raises(CidMismatch, match="nothing was pinned"):
            await store.put_bytes(b"the real content")
    finally:
        await store.close()
        srv.shutdown()
    assert _Liar.calls == ["/api/v0/add"]  # no pin/add after the mismatch
    assert list((tmp_path / "store-ipfs" / "owned").iterdir()) == []


async def test_bridge_results_errors_and_cancellation() -> None:
    import asyncio

    bridge = AsyncioThread()
    try:

        async def ok() -> int:
            await asyncio.sleep(0.01)
            return 42

        assert await bridge.run(ok) == 42

        async def boom() -> None:
            raise KeyError("x")

        with pytest.raises(KeyError):
            await bridge.run(boom)
        cancelled = threading.Event()

        async def forever() -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        with trio.move_on_after(0.2) as cs:
            await bridge.run(forever)
        assert cs.cancelled_caught
        for _ in range(100):
            if cancelled.is_set():
                break
            await trio.sleep(0.01)
        assert cancelled.is_set()  # the asyncio task was cancelled too
    finally:
        bridge.stop()
