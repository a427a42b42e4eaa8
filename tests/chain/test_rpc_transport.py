"""The JSON-RPC transport (chain/rpc_transport.py): one kept-alive connection per thread, a connection the node
closed is reopened, HTTP errors and a dead node are clear errors, a proxy in the environment is honoured."""

from __future__ import annotations

import gc
import json
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from web3 import HTTPProvider

from sandrun_p2p.chain.anvil import free_port
from sandrun_p2p.chain.chain import Chain
from sandrun_p2p.chain.errors import ChainError
from sandrun_p2p.chain.rpc_transport import KeepAliveHTTPProvider, provider_for


class FakeNode:
    """A JSON-RPC node on loopback answering eth_chainId / eth_blockNumber; counts connections and requests."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self.status = 200
        self.close_after = False  # close the connection after each answer (without saying so)
        self.auth: list[str | None] = []
        node = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                node.connections += 1
                super().setup()

            def do_POST(self) -> None:  # noqa: N802
                node.requests += 1
                node.auth.append(self.headers.get("Authorization"))
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                result = {"eth_chainId": "0x7a69", "eth_blockNumber": hex(node.requests)}[req["method"]]
                data = json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": result}).encode()
                self.send_response(node.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                if node.close_after:
                    self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def node() -> Iterator[FakeNode]:
    n = FakeNode()
    yield n
    n.stop()


def test_calls_from_one_thread_share_one_connection_and_each_thread_gets_its_own(node: FakeNode) -> None:
    chain = Chain.connect(node.url)
    assert isinstance(chain.w3.provider, KeepAliveHTTPProvider)
    before = node.requests
    for _ in range(20):
        chain.block_number()
    assert node.connections == 1 and node.requests == before + 20
    t = threading.Thread(target=chain.block_number)
    t.start()
    t.join(10)
    assert node.connections == 2 and node.requests == before + 21


def test_the_connection_of_a_thread_that_ended_is_closed_not_leaked(node: FakeNode) -> None:
    chain = Chain.connect(node.url)
    gc.collect()  # earlier tests' garbage is collected (and warns, if it must) before we listen
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        t = threading.Thread(target=chain.block_number)  # (trio's worker threads end when idle)
        t.start()
        t.join(10)
        assert node.connections == 2  # connect() opened one in this thread, the thread its own
        del t
        gc.collect()
    port = str(node.server.server_address[1])  # only a socket to this node counts: it names the node's port
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not [m for m in leaked if port in m], leaked


def test_a_connection_the_node_closed_is_reopened_without_an_error(node: FakeNode) -> None:
    chain = Chain.connect(node.url)
    node.close_after = True  # the node drops each connection after its answer, without saying so
    before = node.requests
    assert [chain.block_number() for _ in range(3)] == [before + 1, before + 2, before + 3]
    assert node.connections == 3  # the first (closed after call 1), reopened for calls 2 and 3, none failed


def test_an_http_error_is_a_connection_error_naming_the_status(node: FakeNode) -> None:
    chain = Chain.connect(node.url)
    node.status = 503
    with pytest.raises(ConnectionError, match="HTTP 503"):
        chain.w3.provider.make_request("eth_blockNumber", [])
    with pytest.raises(ChainError) as e:  # reads retry, then give up with a clear error
        chain._read(lambda: chain.w3.eth.block_number)
    assert e.value.reason == "connection" and "503" in str(e.value)


def test_no_node_answering_is_a_clear_error() -> None:
    with pytest.raises(ChainError, match="no JSON-RPC node answers"):
        Chain.connect(f"http://127.0.0.1:{free_port()}")


def test_credentials_in_the_url_are_sent_as_basic_auth(node: FakeNode) -> None:
    chain = Chain.connect(node.url.replace("http://", "http://user:p%40ss@"))
    chain.block_number()
    assert node.auth[-1] == "Basic dXNlcjpwQHNz"  # user:p@ss


def test_a_proxy_in_the_environment_keeps_webs_own_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert type(provider_for("http://10.1.2.3:8545")) is HTTPProvider
    monkeypatch.setenv("no_proxy", "10.1.2.3")
    assert isinstance(provider_for("http://10.1.2.3:8545"), KeepAliveHTTPProvider)
