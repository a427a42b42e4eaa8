"""IPFS daemon backend: the same :class:`ContentStore` interface over the Kubo RPC API, through aioipfs.

aioipfs is asyncio; sandrun-p2p is trio. The bridge is a private asyncio loop in a daemon thread:
trio submits coroutines with ``asyncio.run_coroutine_threadsafe`` and is woken through its
``TrioToken`` when they finish; a trio cancellation (or timeout) cancels the asyncio task.

Rules kept here:

* every daemon call has a timeout (an offline daemon waits forever for a CID it lacks), and a dead or
  slow daemon raises :class:`StoreUnavailable` / :class:`StoreTimeout` naming the API address;
* ``add`` uses ``cid-version=1, raw-leaves, chunker=size-262144`` and the returned CID (base58btc from
  js-ipfs, normalised to base32) must equal the one computed locally, otherwise :class:`CidMismatch`
  and nothing is pinned or recorded;
* reads are verified: ``cat`` output is re-hashed; when that does not reproduce the CID (content added
  elsewhere with other settings) the DAG is walked block by block, every block hash-checked;
* what this store adds is pinned on the daemon and recorded under ``<data_dir>/store-ipfs/owned``;
  :meth:`IpfsStore.gc` unpins what is neither live nor pinned through this store, then runs ``repo gc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import trio

from .base import ContentStore, Fetcher, GcStats, Limits, ObjectInfo, PathLike, checked_object, verified_block
from .cid import DAG_PB, Cid, parse_cid
from .embedded import EmbeddedStore, _info
from .errors import (
    CidMismatch,
    CorruptObject,
    NotAFile,
    NotFound,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
    TooLarge,
)
from .importer import TreeResult, _drop, import_bytes, import_file, import_tree
from .unixfs import decode_unixfs

T = TypeVar("T")

ADD_PARAMS = {
    "cid-version": "1",
    "raw-leaves": "true",
    "chunker": "size-262144",
    "hash": "sha2-256",
    "pin": "false",  # pinned explicitly after the CID is checked
    "wrap-with-directory": "false",
    "progress": "false",
}


@dataclass(frozen=True, slots=True)
class ApiAddress:
    scheme: str
    host: str
    port: int
    text: str  # as the user wrote it, for error messages

    def __str__(self) -> str:
        return self.text


def parse_api(api: str) -> ApiAddress:
    """Multiaddr (``/ip4/127.0.0.1/tcp/5001[/http|/https]``, ``/dns4/host/tcp/5001``) or URL."""
    text = api.strip()
    if text.startswith("/"):
        parts = [p for p in text.split("/") if p]
        try:
            proto, host, tproto, port_s = parts[:4]
            port = int(port_s)
        except ValueError:
            raise StoreError(f"cannot parse IPFS API multiaddr {api!r} (want /ip4/HOST/tcp/PORT)") from None
        if proto not in ("ip4", "ip6", "dns", "dns4", "dns6") or tproto != "tcp" or not 0 < port < 65536:
            raise StoreError(f"unsupported IPFS API multiaddr {api!r} (want /ip4|ip6|dns4/HOST/tcp/PORT)")
        scheme = "https" if "https" in parts[4:] else "http"
        return ApiAddress(scheme, host, port, text)
    u = urlparse(text if "://" in text else f"http://{text}")
    if u.scheme not in ("http", "https") or not u.hostname:
        raise StoreError(f"cannot parse IPFS API address {api!r} (want a multiaddr or http://HOST:PORT)")
    return ApiAddress(u.scheme, u.hostname, u.port or 5001, text)


class AsyncioThread:
    """A private asyncio event loop running in a daemon thread, callable from trio."""

    def __init__(self, name: str = "sandrun-aioipfs") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            pending = asyncio.all_tasks(self.loop)
            for t in pending:
                t.cancel()
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    async def run(self, afn: Callable[[], Awaitable[T]]) -> T:
        """Run ``afn()`` on the asyncio loop; trio cancellation cancels the asyncio task."""
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()

        def wake(_: object) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        async def wrapper() -> T:
            return await afn()

        fut = asyncio.run_coroutine_threadsafe(wrapper(), self.loop)
        fut.add_done_callback(wake)
        try:
            await done.wait()
        finally:
            if not fut.done():
                fut.cancel()
        return fut.result()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)


class IpfsStore(ContentStore):
    """Content store backed by an IPFS daemon's RPC API (Kubo or js-ipfs)."""

    def __init__(
        self,
        api: str,
        data_dir: PathLike,
        *,
        limits: Limits | None = None,
        fetcher: Fetcher | None = None,
        timeout_s: float = 30.0,
        block_timeout_s: float = 10.0,
        min_rate_bytes_s: float = 5 * 1024 * 1024,
        repo_gc: bool = True,
        gc_grace_s: float = 60.0,
    ) -> None:
        self.api = parse_api(api)
        self.limits = limits or Limits()
        self.fetcher = fetcher
        self.timeout_s = timeout_s
        self.block_timeout_s = block_timeout_s
        self.min_rate = min_rate_bytes_s
        self.repo_gc = repo_gc
        self.gc_grace_s = gc_grace_s
        self.state = Path(data_dir) / "store-ipfs"
        self._owned = self.state / "owned"
        self._pins = self.state / "pins"
        self._scratch_root = self.state / "scratch"
        for d in (self._owned, self._pins, self._scratch_root):
            d.mkdir(parents=True, exist_ok=True)
        self._bridge: AsyncioThread | None = None
        self._client: Any = None
        self._client_lock = trio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"IpfsStore({self.api.text!r})"

    # -- plumbing ------------------------------------------------------------------------------
    async def _ensure_client(self) -> Any:
        if self._closed:
            raise StoreError("the store is closed")
        async with self._client_lock:
            if self._client is None:
                import aioipfs

                self._bridge = AsyncioThread()
                a = self.api

                async def make() -> Any:  # AsyncIPFS must be built inside the running loop
                    return aioipfs.AsyncIPFS(host=a.host, port=a.port, scheme=a.scheme)

                self._client = await self._bridge.run(make)
        return self._client

    def _xfer_timeout(self, nbytes: int) -> float:
        return self.timeout_s + nbytes / self.min_rate

    async def _call(self, what: str, fn: Callable[[Any], Awaitable[T]], timeout: float | None = None) -> T:
        """Run ``fn(client)`` on the asyncio side with a timeout; translate every failure."""
        client = await self._ensure_client()
        assert self._bridge is not None
        t = self.timeout_s if timeout is None else timeout
        try:
            with trio.fail_after(t):
                return await self._bridge.run(lambda: fn(client))
        except trio.TooSlowError:
            raise StoreTimeout(f"IPFS API at {self.api} did not finish {what} within {t:g} s") from None
        except StoreError:
            raise
        except Exception as e:
            raise self._translate(e, what) from None

    def _translate(self, e: Exception, what: str) -> StoreError:
        import aiohttp
        from aioipfs import exceptions as aex

        name = type(e).__name__
        if isinstance(e, asyncio.TimeoutError | TimeoutError):
            return StoreTimeout(f"IPFS API at {self.api} timed out during {what}")
        if isinstance(e, aex.APIError):
            msg = getattr(e, "message", "") or str(e)
            return StoreUnavailable(f"IPFS API at {self.api} refused {what}: {msg}")
        if isinstance(e, aiohttp.ClientError | aex.IPFSConnectionError | ConnectionError | OSError):
            return StoreUnavailable(
                f"IPFS API at {self.api} is not reachable during {what} ({name}: {e}); is the daemon running?"
            )
        return StoreUnavailable(f"IPFS API at {self.api} failed during {what} ({name}: {e})")

    async def _thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(functools.partial(fn, *args))

    def _mark(self, d: Path, cid: Cid) -> None:
        (d / str(cid)).touch()

    # -- add -----------------------------------------------------------------------------------
    async def _add(self, what: str, src: bytes | str, expect: Cid, size: int) -> None:
        """POST /add with one file (bytes, or a path streamed from disk); its CID must be ``expect``."""

        async def do(client: Any) -> list[dict[str, Any]]:
            from aiohttp import MultipartWriter, payload

            with contextlib.ExitStack() as stack, MultipartWriter("form-data") as mp:
                if isinstance(src, bytes):
                    part: Any = payload.BytesPayload(src, content_type="application/octet-stream")
                else:
                    f = stack.enter_context(open(src, "rb"))
                    part = payload.BufferedReaderPayload(f, content_type="application/octet-stream")
                part.set_content_disposition("form-data", name="file", filename="data")
                mp.append_payload(part)
                return [entry async for entry in client.core.add_generic(mp, params=dict(ADD_PARAMS))]

        entries = await self._call(what, do, timeout=self._xfer_timeout(size))
        got = next((e["Hash"] for e in entries if e.get("Name") == "data" and "Hash" in e), None)
        if got is None:
            raise StoreUnavailable(f"IPFS API at {self.api} answered {what} without a CID")
        theirs = parse_cid(got)
        if theirs != expect:
            raise CidMismatch(
                f"IPFS daemon at {self.api} returned {theirs} for {what}, but the local computation gives {expect}; "
                "nothing was pinned"
            )

    async def _own(self, cid: Cid, pin: bool, size: int) -> str:
        """Record and pin an added object (see :meth:`_pin_recorded`)."""
        await self._pin_recorded(cid, timeout=self._xfer_timeout(size))
        if pin:
            await self._thread(self._mark, self._pins, cid)
        return str(cid)

    async def _pin_recorded(self, cid: Cid, timeout: float | None = None) -> None:
        """Pin on the daemon with the ``owned`` marker written first, so a crash never leaves a pin we
        do not know about. The marker is taken back when the daemon certainly did not pin (refused or
        unreachable); after a timeout it stays (the pin may have happened) and gc sorts it out."""
        marker = self._owned / str(cid)
        existed = marker.exists()
        await self._thread(self._mark, self._owned, cid)
        try:
            await self._daemon_pin(cid, timeout=timeout)
        except StoreTimeout:
            raise
        except StoreError:
            if not existed:
                with contextlib.suppress(FileNotFoundError):
                    marker.unlink()
            raise

    async def _daemon_pin(self, cid: Cid, timeout: float | None = None) -> None:
        async def do(client: Any) -> None:
            async for _ in client.pin.add(str(cid), recursive=True, progress=False):
                pass

        await self._call(f"pin add {cid}", do, timeout=timeout)

    async def put_bytes(self, data: bytes, *, pin: bool = False) -> str:
        data = checked_object(data, self.limits)
        cid, _ = await self._thread(import_bytes, data, _drop, self.limits)
        await self._add(f"add of {len(data)} bytes", data, cid, len(data))
        return await self._own(cid, pin, len(data))

    async def put_file(self, path: PathLike, *, pin: bool = False) -> str:
        p = Path(path)
        cid, _, size = await self._thread(import_file, p, _drop, self.limits)
        await self._add(f"add of {p}", str(p), cid, size)
        return await self._own(cid, pin, size)

    async def put_dir(self, path: PathLike, *, pin: bool = False) -> str:
        """Each file through ``add`` (its CID checked), then each directory node through ``block put``,
        then one recursive pin of the root (which fails unless the daemon holds the whole DAG).

        One multipart request for the whole tree would be the obvious route, but js-ipfs 0.66 hangs on
        a third of multi-part directory uploads when file bodies are streamed (and rejects a request
        whose first part is a directory); single-part requests have never hung.
        """
        p = Path(path)
        dag_pb: dict[Cid, bytes] = {}

        def keep_nodes(cid: Cid, block: bytes) -> None:
            if cid.codec == DAG_PB:
                dag_pb[cid] = block

        tree: TreeResult = await self._thread(import_tree, p, keep_nodes, self.limits)
        done: set[Cid] = set()
        for e in tree.entries:
            if e.kind == "file" and e.cid not in done:
                await self._add(f"add of {e.abspath}", str(e.abspath), e.cid, e.size)
                done.add(e.cid)
        dirs = [e.cid for e in tree.entries if e.kind == "dir"] + [tree.cid]
        for c in dirs:  # children before parents (entries are in post-order), the root last
            if c not in done:
                await self._block_put(c, dag_pb[c])
                done.add(c)
        return await self._own(tree.cid, pin, tree.total_bytes)

    async def put_block(self, cid: str, block: bytes) -> str:
        c = verified_block(cid, block, self.limits)
        await self._block_put(c, bytes(block))
        return str(c)

    async def _block_put(self, c: Cid, block: bytes) -> None:
        async def do(client: Any) -> dict[str, Any]:
            from aiohttp import MultipartWriter, payload

            with MultipartWriter("form-data") as mp:
                part = payload.BytesPayload(block, content_type="application/octet-stream")
                part.set_content_disposition("form-data", name="file", filename="block")
                mp.append_payload(part)
            params = {"cid-codec": c.codec_name, "mhtype": "sha2-256", "version": "1", "pin": "false"}
            async with client.session.post(client.core.url("block/put"), data=mp, params=params) as r:
                if r.status >= 400:
                    client.core.handle_error(r, await r.read())
                return await r.json(content_type=None)

        out = await self._call(f"block put {c}", do, timeout=self.block_timeout_s)
        key = out.get("Key") if isinstance(out, dict) else None
        if key is None or parse_cid(key) != c:
            raise CidMismatch(f"IPFS daemon at {self.api} stored block {c} as {key}")

    # -- read ----------------------------------------------------------------------------------
    async def _daemon_block(self, c: Cid) -> bytes:
        async def do(client: Any) -> bytes:
            return await client.block.get(str(c))

        try:
            data = await self._call(f"block get {c}", do, timeout=self.block_timeout_s)
        except StoreTimeout:
            raise StoreTimeout(
                f"IPFS API at {self.api} did not return block {c} within {self.block_timeout_s:g} s: the daemon "
                "does not have it and could not find it (an offline daemon waits forever for missing CIDs)"
            ) from None
        if len(data) > self.limits.max_block_bytes or not c.matches(data):
            raise CorruptObject(
                f"IPFS daemon at {self.api} returned bytes for block {c} that do not hash to it"
            )
        return data

    async def _fetch_block(self, cid: str) -> bytes | None:
        """Fetcher for the scratch store: the daemon first, then peers (whose blocks we give the daemon)."""
        c = parse_cid(cid)
        try:
            return await self._daemon_block(c)
        except StoreTimeout:
            if self.fetcher is None:
                raise
        data = await self.fetcher(str(c))
        if data is not None and c.matches(bytes(data)) and len(data) <= self.limits.max_block_bytes:
            with contextlib.suppress(StoreError):
                await self._block_put(c, bytes(data))
        return data

    async def get_block(self, cid: str) -> bytes:
        return await self._daemon_block(parse_cid(cid))

    async def stat(self, cid: str) -> ObjectInfo:
        c = parse_cid(cid)
        data = await self._fetch_block(str(c))
        if data is None:
            raise NotFound(f"{c} is not on the IPFS daemon at {self.api} and no peer supplied it")
        data = bytes(data)
        if not c.matches(data):
            raise CorruptObject(f"a peer sent bytes for {c} that do not hash to it")
        node, ufs = decode_unixfs(c, data)
        return _info(c, node, ufs, data)

    @contextlib.asynccontextmanager
    async def _scratch(self) -> Any:
        """A throw-away embedded store whose fetcher is the daemon (then peers): verified block walks."""
        d = self._scratch_root / uuid.uuid4().hex
        st = EmbeddedStore(
            d,
            limits=self.limits,
            fetcher=self._fetch_block,
            fetch_timeout_s=self.block_timeout_s * 3 + 5,
            gc_grace_s=0,
        )
        try:
            yield st
        finally:
            await trio.to_thread.run_sync(functools.partial(shutil.rmtree, d, ignore_errors=True))

    async def get(self, cid: str, *, max_bytes: int | None = None) -> bytes:
        c = parse_cid(cid)
        cap = (
            self.limits.max_object_bytes
            if max_bytes is None
            else min(max_bytes, self.limits.max_object_bytes)
        )
        info = await self.stat(str(c))
        if info.kind != "file":
            raise NotAFile(f"{c} is a directory, not a file (use get_dir)")
        if info.size > cap:
            raise TooLarge(f"{c} is {info.size} bytes, over the limit of {cap}")

        async def cat(client: Any) -> bytes:
            return await client.core.cat(str(c))

        data: bytes | None = None
        with contextlib.suppress(StoreTimeout):
            data = await self._call(f"cat {c}", cat, timeout=self._xfer_timeout(info.size))
        if data is not None and len(data) == info.size:
            again, _ = await self._thread(import_bytes, data, _drop, self.limits)
            if again == c:
                return data
        # Added elsewhere with other settings (or damaged): verify block by block.
        async with self._scratch() as st:
            return await st.get(str(c), max_bytes=cap)

    async def get_file(self, cid: str, dest: PathLike) -> None:
        dest = Path(dest)
        if dest.exists() or dest.is_symlink():
            raise StoreError(f"{dest} already exists")
        data = await self.get(cid)

        def write() -> None:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.partial-", dir=dest.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.chmod(tmp, 0o644)
                os.replace(tmp, dest)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise

        await self._thread(write)

    async def get_dir(self, cid: str, dest: PathLike) -> None:
        c = parse_cid(cid)
        async with self._scratch() as st:
            await st.get_dir(str(c), dest)

    async def has(self, cid: str) -> bool:
        c = parse_cid(cid)
        if await self._pinned_on_daemon(c):
            return True
        try:
            await self._daemon_block(c)
        except (StoreTimeout, CorruptObject):
            return False
        if c.codec != DAG_PB:
            return True
        async with self._scratch() as st:
            st.fetcher = self._daemon_only
            try:
                await st._ensure(c)
            except (StoreTimeout, NotFound, CorruptObject):
                return False
        return True

    async def _daemon_only(self, cid: str) -> bytes | None:
        return await self._daemon_block(parse_cid(cid))

    async def _pinned_on_daemon(self, c: Cid) -> bool:
        async def do(client: Any) -> Any:
            return await client.pin.ls(pintype="recursive", quiet=True)

        out = await self._call("pin ls", do)
        keys = (out or {}).get("Keys", {}) if isinstance(out, dict) else {}
        for k in keys:
            with contextlib.suppress(StoreError):
                if parse_cid(k) == c:
                    return True
        return False

    # -- lifetime ------------------------------------------------------------------------------
    async def pin(self, cid: str) -> None:
        c = parse_cid(cid)
        if self.fetcher is not None and not await self.has(str(c)):
            async with self._scratch() as st:  # pulls missing blocks from peers into the daemon
                await st._ensure(c)
        await self._pin_recorded(c)
        await self._thread(self._mark, self._pins, c)

    async def unpin(self, cid: str) -> None:
        c = parse_cid(cid)
        with contextlib.suppress(FileNotFoundError):
            await self._thread((self._pins / str(c)).unlink)

    async def pins(self) -> set[str]:
        return await self._thread(_listing, self._pins)

    async def gc(self, live_cids: Iterable[str] = (), *, grace_s: float | None = None) -> GcStats:
        keep = {str(parse_cid(c)) for c in live_cids} | await self.pins()
        grace = self.gc_grace_s if grace_s is None else grace_s
        cutoff = time.time() - grace
        unpinned = 0
        for name in await self._thread(_listing, self._owned):
            marker = self._owned / name
            if name in keep:
                continue
            try:
                if marker.stat().st_mtime >= cutoff:
                    continue
            except FileNotFoundError:
                continue

            async def rm(client: Any, name: str = name) -> Any:
                return await client.pin.rm(name, recursive=True)

            try:
                await self._call(f"pin rm {name}", rm)
            except StoreUnavailable as e:
                if "not pinned" not in str(e).lower():
                    raise
            with contextlib.suppress(FileNotFoundError):
                marker.unlink()
            unpinned += 1
        removed = 0
        if self.repo_gc:

            async def repo_gc(client: Any) -> int:
                n = 0
                async for _ in client.repo.gc(quiet=True):
                    n += 1
                return n

            removed = await self._call("repo gc", repo_gc, timeout=self.timeout_s * 4)
        await self._thread(shutil.rmtree, self._scratch_root, True)
        self._scratch_root.mkdir(parents=True, exist_ok=True)
        return GcStats(removed_blocks=removed, unpinned=unpinned)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._client is not None and self._bridge is not None:
            client = self._client
            with contextlib.suppress(Exception), trio.move_on_after(5):
                await self._bridge.run(client.close)
        if self._bridge is not None:
            await trio.to_thread.run_sync(self._bridge.stop)
        self._client = None
        self._bridge = None


def _listing(d: Path) -> set[str]:
    out = set()
    for p in d.iterdir():
        try:
            out.add(str(parse_cid(p.name)))
        except StoreError:
            continue
    return out
