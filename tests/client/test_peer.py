"""The control API clients (async ``Peer`` for the SDK, blocking ``ControlClient`` for the CLI): how a peer is
named, and the errors a dead or refusing agent gives (one behaviour for both)."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import trio

from sandrun_p2p.client.errors import PeerUnavailable
from sandrun_p2p.client.peer import INFO_FILE, TOKEN_FILE, ControlClient, Peer, PeerError, resolve


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Refusing(BaseHTTPRequestHandler):
    """Answers every request 409 with a JSON error, the way the agent's control API refuses."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = json.dumps({"error": f"nope, token {self.headers.get('Authorization')}"}).encode()
        self.send_response(409)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def refusing_agent(tmp_path: Path):
    srv = HTTPServer(("127.0.0.1", 0), _Refusing)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    (tmp_path / INFO_FILE).write_text(json.dumps({"url": f"http://127.0.0.1:{srv.server_port}/"}))
    (tmp_path / TOKEN_FILE).write_text("sekrit\n")
    yield tmp_path
    srv.shutdown()
    srv.server_close()


def test_a_data_dir_names_the_agent_and_its_token(refusing_agent: Path) -> None:
    url, token = resolve(str(refusing_agent))
    assert url.startswith("http://127.0.0.1:") and not url.endswith("/") and token == "sekrit"


def test_no_agent_in_the_data_dir_says_so(tmp_path: Path) -> None:
    with pytest.raises(PeerUnavailable, match=f"no running agent in {tmp_path}"):
        ControlClient.from_data_dir(tmp_path)
    (tmp_path / INFO_FILE).write_text('{"url": ')  # the agent is still writing it
    (tmp_path / TOKEN_FILE).write_text("t")
    with pytest.raises(PeerUnavailable, match="not valid JSON"):
        Peer.open(str(tmp_path))


def test_a_url_without_a_token_is_refused_before_any_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SANDRUN_P2P_PEER_TOKEN", raising=False)
    with pytest.raises(PeerUnavailable, match="needs its control token"):
        resolve("http://127.0.0.1:9/")


def test_both_clients_report_an_http_error_with_its_status_and_message(refusing_agent: Path) -> None:
    c = ControlClient.from_data_dir(refusing_agent, timeout=5)
    try:
        with pytest.raises(PeerError, match="GET /v1/status: HTTP 409: nope, token Bearer sekrit") as ei:
            c.status()
        assert ei.value.status == 409
    finally:
        c.close()

    async def main() -> None:
        async with Peer.open(str(refusing_agent), timeout=5) as p:
            with pytest.raises(PeerError, match="GET /v1/nodes: HTTP 409: nope") as ei:
                await p.nodes()
            assert ei.value.status == 409

    trio.run(main)


def test_both_clients_say_a_dead_agent_is_not_reachable() -> None:
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    c = ControlClient(url, "t", timeout=5)
    try:
        with pytest.raises(PeerUnavailable, match=f"peer {url} not reachable .*is its agent running"):
            c.jobs()
    finally:
        c.close()

    async def main() -> None:
        async with Peer(url, "t", timeout=5) as p:
            with pytest.raises(PeerUnavailable, match="not reachable"):
                await p.status()

    trio.run(main)


class _Slow(BaseHTTPRequestHandler):
    """Answers after ``DELAY_S``, as a node does while its escrow transaction is pending."""

    DELAY_S = 0.6

    def _reply(self) -> None:
        length = int(self.headers.get("content-length", 0) or 0)
        self.rfile.read(length)
        threading.Event().wait(self.DELAY_S)
        body = json.dumps({"jobs": [{"job_id": "ab"}], "job_id": "ab"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _reply  # noqa: N815 (http.server's names)

    def log_message(self, *args: object) -> None:
        pass


def test_a_submission_waits_for_the_nodes_escrow_and_a_busy_node_is_not_called_dead() -> None:
    """A client's short timeout holds for reads, but a submission waits as long as the node may take to escrow
    (its own answer, e.g. each job's escrow error, rather than a timeout); a read that times out says the peer
    is busy, not that nothing runs there."""
    srv = HTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    c = ControlClient(url, "t", timeout=0.2)
    try:
        with pytest.raises(PeerUnavailable, match=f"peer {url} did not answer in time .*busy"):
            c.jobs()
        assert c.submit_many([{"x": 1}]) == [{"job_id": "ab"}]
        assert c.submit(x=1)["job_id"] == "ab"

        async def main() -> None:
            async with Peer(url, "t", timeout=0.2) as p:
                with pytest.raises(PeerUnavailable, match="did not answer in time"):
                    await p.status()
                assert (await p.submit_escrowed_by_peer({"x": 1}))["job_id"] == "ab"

        trio.run(main)
    finally:
        srv.shutdown()
        srv.server_close()
        c.close()
