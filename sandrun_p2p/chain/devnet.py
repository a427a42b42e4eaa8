"""One local chain shared by several processes: anvil when installed, else the embedded chain served over HTTP.

    python -m sandrun_p2p.chain.devnet --port 8545                 # embedded chain (eth-tester) over JSON-RPC
    python -m sandrun_p2p.chain.devnet --backend auto --deploy out.json   # anvil if installed, else embedded

The embedded server is a small JSON-RPC 2.0 endpoint on loopback around ``EthereumTesterProvider``: enough of
``eth_*`` for web3.py (and the ``evm_*`` development methods) so agents in other processes see one chain.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .anvil import Anvil, find_anvil, free_port, wait_for_rpc
from .errors import ChainError, revert_data_from_exception


def _jsonable(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


class EmbeddedRPC:
    """Answers JSON-RPC requests from an in-process eth-tester chain (one request at a time)."""

    def __init__(self) -> None:
        from web3 import EthereumTesterProvider
        from web3.providers.eth_tester.middleware import request_formatters, result_formatters

        self.provider = EthereumTesterProvider()
        self.tester = self.provider.ethereum_tester
        self._req_fmt = request_formatters
        self._res_fmt = result_formatters or {}
        self.lock = threading.Lock()

    def handle(self, req: dict) -> dict:
        rid = req.get("id")
        method = req.get("method", "")
        params = req.get("params") or []
        try:
            with self.lock:
                result = self._dispatch(method, params)
            return {"jsonrpc": "2.0", "id": rid, "result": _jsonable(result)}
        except _RPCError as e:
            err: dict[str, Any] = {"code": e.code, "message": e.message}
            if e.data is not None:
                err["data"] = e.data
            return {"jsonrpc": "2.0", "id": rid, "error": err}
        except Exception as e:  # anything else is the server's own failure, reported and survived
            return {
                "jsonrpc": "2.0",
                "id": rid,
                "error": {"code": -32603, "message": f"{type(e).__name__}: {e}"},
            }

    def _dispatch(self, method: str, params: list) -> Any:
        if method == "evm_increaseTime":
            seconds = int(params[0], 16) if isinstance(params[0], str) else int(params[0])
            pending = self.tester.get_block_by_number("pending")["timestamp"]
            self.tester.time_travel(pending + seconds)
            return seconds
        if method == "evm_setNextBlockTimestamp":
            ts = int(params[0], 16) if isinstance(params[0], str) else int(params[0])
            self.tester.time_travel(ts)  # mines a block at ts - 1: the next one is at ts
            return True
        if method == "evm_mine":
            self.tester.mine_blocks(1)
            return "0x0"
        if method == "net_version":
            return str(self.tester.backend.chain.chain_id)
        if (
            method in ("eth_call", "eth_estimateGas", "eth_createAccessList")
            and params
            and "from" not in params[0]
        ):
            params = [dict(params[0], **{"from": self.tester.get_accounts()[0]}), *params[1:]]
        fmt = self._req_fmt.get(method)
        fparams = fmt(params) if fmt else params
        from eth_tester.exceptions import TransactionFailed

        try:
            resp = self.provider.make_request(method, fparams)
        except TransactionFailed as e:
            raise _RPCError(3, "execution reverted", self._revert_data(method, fparams, e)) from e
        if "error" in resp:
            err = resp["error"]
            raise _RPCError(err.get("code", -32601), err.get("message", "error"))
        result = resp.get("result")
        rfmt = self._res_fmt.get(method)
        return rfmt(result) if rfmt else result

    def _revert_data(self, method: str, params: list, exc: Exception) -> str | None:
        """The raw revert data (web3's eth-tester glue only keeps a string): replay the call."""
        from eth_tester.exceptions import TransactionFailed

        data = None
        if method in ("eth_call", "eth_estimateGas") and params:
            tx = dict(params[0])
            tx.setdefault("from", self.tester.get_accounts()[0])
            tx.pop("gasPrice", None)
            tx.pop("maxFeePerGas", None)
            tx.pop("maxPriorityFeePerGas", None)
            tx.pop("chainId", None)
            tx.pop("nonce", None)
            tx.pop("type", None)
            try:
                self.tester.call(tx, "latest")
            except TransactionFailed as e:
                data = revert_data_from_exception(e)
            except Exception:
                data = None
        if data is None:
            data = revert_data_from_exception(exc)
        if isinstance(data, bytes):
            return "0x" + data.hex()
        if isinstance(data, str):  # a plain reason: re-encode as Error(string)
            from eth_abi import encode

            return "0x08c379a0" + encode(["string"], [data]).hex()
        return None


class _RPCError(Exception):
    def __init__(self, code: int, message: str, data: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


def serve(host: str = "127.0.0.1", port: int = 0) -> tuple[ThreadingHTTPServer, EmbeddedRPC]:
    """Start serving an embedded chain on (host, port) in a background thread; returns the server."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ChainError("bad-host", "the development chain only listens on loopback")
    rpc = EmbeddedRPC()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the agents' transport reuses one connection per thread

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError:
                out: Any = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}}
            else:
                out = [rpc.handle(r) for r in body] if isinstance(body, list) else rpc.handle(body)
            data = json.dumps(out).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="devnet-rpc", daemon=True).start()
    return server, rpc


@dataclass
class LocalChain:
    """A local chain in another process: ``kind`` is "anvil" or "devnet"; stop() ends it by PID."""

    url: str
    kind: str
    pid: int
    _anvil: Anvil | None = None
    _proc: subprocess.Popen | None = None

    def stop(self) -> None:
        if self._anvil is not None:
            self._anvil.stop()
        elif self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self._proc.pid, signal.SIGKILL)
                self._proc.wait(5)

    def __enter__(self) -> LocalChain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_local_chain(backend: str = "auto", port: int | None = None) -> LocalChain:
    """Start one chain for a multi-process local network. ``auto`` prefers anvil when it is installed."""
    if backend not in ("auto", "anvil", "embedded"):
        raise ValueError(f"unknown backend {backend!r}")
    if backend == "anvil" or (backend == "auto" and find_anvil()):
        a = Anvil(port).start()
        return LocalChain(a.url, "anvil", a.pid or 0, _anvil=a)
    port = port or free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandrun_p2p.chain.devnet",
            "--backend",
            "embedded",
            "--port",
            str(port),
            "--quiet",
        ],
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_rpc(url, 30, proc)
    except ChainError:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        raise
    return LocalChain(url, "devnet", proc.pid, _proc=proc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m sandrun_p2p.chain.devnet", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--port", type=int, default=8545)
    ap.add_argument(
        "--backend",
        choices=("auto", "anvil", "embedded"),
        default="embedded",
        help="auto: anvil when installed, else the embedded chain (default: embedded)",
    )
    ap.add_argument("--deploy", metavar="FILE", help="deploy the contracts and write the addresses file")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    local: LocalChain | None = None
    server = None
    if args.backend == "anvil" or (args.backend == "auto" and find_anvil()):
        local = start_local_chain("anvil", args.port)
        url, kind, note = local.url, "anvil", f"anvil (pid {local.pid})"
    else:
        server, _ = serve("127.0.0.1", args.port)
        url, kind = f"http://127.0.0.1:{server.server_address[1]}", "devnet"
        note = "embedded chain (eth-tester, py-evm) served over JSON-RPC" + (
            "" if args.backend == "embedded" else "; anvil is not installed"
        )
    try:
        if args.deploy:
            from .chain import Chain
            from .deployment import deploy

            chain = Chain.connect(url, kind=kind)
            dep = deploy(chain, chain.dev_signers()[0], out=args.deploy)
            print(
                f"devnet: deployed SandrunMarket at {dep.market_address}, addresses in {args.deploy}",
                flush=True,
            )
        if not args.quiet or args.deploy:
            print(f"devnet: {note} at {url}", flush=True)
        stop.wait()
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        if local is not None:
            local.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
