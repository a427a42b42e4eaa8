"""A cheaper transport for web3.py's HTTP provider: one keep-alive ``http.client`` connection per thread.

web3's ``HTTPProvider`` posts through ``requests``: ~0.59 ms of CPU per JSON-RPC call on this machine against
anvil, where ``http.client`` on a kept-alive connection takes ~0.12 ms (``eth_blockNumber``, medians of 500). An
agent makes ~20 calls per settled job (each transaction's estimate, send and receipt; every node's event polls),
so the transport alone was ~10 ms of each job's CPU. :class:`KeepAliveHTTPProvider` keeps everything else of
``HTTPProvider`` (request encoding, response decoding, the request cache, errors) and replaces only the post.
HTTP errors and dropped connections raise ``ConnectionError`` (an ``OSError``, as ``requests``' errors were), which
:class:`~.chain.Chain` retries where a retry is safe. A proxy configured in the environment for the node's host
is honoured by using ``requests`` as before (:func:`provider_for`).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import threading
import urllib.request
from typing import Any
from urllib.parse import unquote, urlsplit

from web3 import HTTPProvider

#: Status lines and errors of a kept-alive connection the server closed meanwhile: sent once more on a new one.
_STALE = (
    http.client.RemoteDisconnected,
    BrokenPipeError,
    ConnectionResetError,
    http.client.CannotSendRequest,
)


class _Closing:
    """A connection that closes its socket when it is collected (a worker thread ended and its thread-local
    went, or the provider did), instead of leaving it to the socket's own finalizer (a ResourceWarning)."""

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # (at interpreter exit, nothing is left to report to)
            self.close()  # type: ignore[attr-defined]


class _HTTP(_Closing, http.client.HTTPConnection):
    pass


class _HTTPS(_Closing, http.client.HTTPSConnection):
    pass


class KeepAliveHTTPProvider(HTTPProvider):
    """``HTTPProvider`` posting over one persistent ``http.client`` connection per thread (http or https)."""

    def __init__(self, endpoint_uri: str, timeout: float = 30.0, **kwargs: Any) -> None:
        super().__init__(endpoint_uri, request_kwargs={"timeout": timeout}, **kwargs)
        u = urlsplit(endpoint_uri)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {endpoint_uri!r}")
        self._https = u.scheme == "https"
        self._host, self._port = u.hostname, u.port
        self._path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        self._timeout = timeout
        self._headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
        if u.username is not None:
            creds = f"{unquote(u.username)}:{unquote(u.password or '')}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(creds).decode()
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = _HTTPS if self._https else _HTTP
            conn = cls(
                self._host, self._port, timeout=self._timeout
            )  # (https: the default, verifying context)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _make_request(self, method: Any, request_data: bytes) -> bytes:  # noqa: ARG002 - web3's signature
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request("POST", self._path, request_data, self._headers)
                resp = conn.getresponse()
                body = resp.read()
            except _STALE as e:
                self._drop()
                if attempt == 1:
                    continue
                raise ConnectionError(
                    f"the JSON-RPC node at {self.endpoint_uri} closed the connection: {e}"
                ) from e
            except (OSError, http.client.HTTPException) as e:
                self._drop()
                if isinstance(e, OSError):
                    raise
                raise ConnectionError(f"bad HTTP answer from {self.endpoint_uri}: {e!r}") from e
            if resp.status >= 400:
                raise ConnectionError(
                    f"HTTP {resp.status} {resp.reason} from {self.endpoint_uri}: {body[:200]!r}"
                )
            if resp.will_close:
                self._drop()
            return body
        raise AssertionError("unreachable")


def provider_for(url: str, timeout: float = 30.0, **kwargs: Any) -> HTTPProvider:
    """The provider for a JSON-RPC URL: :class:`KeepAliveHTTPProvider`, or web3's own (``requests``) when the
    environment sets a proxy for the URL's host (``requests`` honours it; ``http.client`` would not)."""
    u = urlsplit(url)
    proxied = u.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(u.hostname or "")
    if proxied:
        return HTTPProvider(url, request_kwargs={"timeout": timeout}, **kwargs)
    return KeepAliveHTTPProvider(url, timeout=timeout, **kwargs)
