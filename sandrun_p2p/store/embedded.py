"""The embedded content store (the default): IPFS-compatible blocks in files under the data directory.

Layout of ``<data_dir>/store/``::

    blocks/<xy>/<cid>   one file per block, named by its CIDv1 (``xy`` = the CID's next-to-last 2 chars); all
                        1024 ``xy`` directories are made when the repo is created and stay (gc keeps them)
    pins/<cid>          one name per pin, kept by gc until unpinned: a hard link to the root block's file
                        (no new inode per pin), or an empty file where the block is absent or links fail
    tmp/                staging: every put writes its new blocks here (``put-<id>-<cid>``), then renames
                        them into blocks/ (children first, root last), so a root is never visible before its
                        children; blocks already in blocks/ are not written again
    corrupt/            blocks that failed their hash check, moved aside for inspection (gc empties it)

Every block read is re-hashed; a mismatch moves the block to ``corrupt/`` and raises
:class:`CorruptObject` (or, when a peer ``fetcher`` is configured, fetches a good copy instead).
Disk work runs in worker threads (``trio.to_thread``), so the trio loop never blocks on I/O.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import trio

from .base import ContentStore, Fetcher, GcStats, Limits, ObjectInfo, PathLike, checked_object, verified_block
from .cid import DAG_PB, RAW, Cid, parse_cid
from .errors import (
    CorruptObject,
    NotAFile,
    NotFound,
    StoreError,
    StoreTimeout,
    TooLarge,
    Unsupported,
)
from .importer import import_bytes, import_file, import_tree
from .unixfs import (
    T_DIRECTORY,
    T_FILE,
    T_HAMT,
    T_RAW,
    UnixFsData,
    check_name,
    decode_unixfs,
)

T = TypeVar("T")
#: The characters of a CIDv1 in base32 (RFC 4648, lower case): the names of the block shard directories.
_B32 = "abcdefghijklmnopqrstuvwxyz234567"
#: Deepest file DAG accepted on read (ours: 3 levels cover 1.3 TB).
MAX_FILE_DEPTH = 16
#: Most blocks one walk (fetch, has, gc mark) will visit for one root.
MAX_WALK_BLOCKS = 4_000_000


class _Staging:
    """Blocks of one put, written as files under tmp/ and renamed into blocks/ on commit (children first).

    No directory per put, and a block the repo holds already is not written again (its mtime is refreshed, so
    gc's grace covers it as it covers a new one): on ext4 every file or directory created and deleted again
    makes later creations slower (the allocator steps over recently deleted inodes), which an agent storing
    every result felt as ~10 ms of CPU per job."""

    def __init__(self, repo: BlockRepo) -> None:
        self.repo = repo
        self.prefix = f"put-{uuid.uuid4().hex}-"
        self.order: list[tuple[Cid, Path]] = []  # blocks written, in the order they came (children first)
        self._seen: set[Cid] = set()

    def add(self, cid: Cid, block: bytes) -> None:
        if cid in self._seen:
            return
        self._seen.add(cid)
        if self.repo.refresh(cid, len(block)):
            return
        path = self.repo.tmp / (self.prefix + str(cid))
        self.repo._write_file(path, block)
        self.order.append((cid, path))

    def commit(self) -> None:
        with self.repo._lock:
            now = time.time()
            for cid, src in self.order:  # dependency order: the root is renamed last
                os.utime(src, (now, now))
                dst = self.repo.block_path(cid)
                try:
                    os.replace(src, dst)
                except FileNotFoundError:  # a shard directory removed by hand: make it again
                    dst.parent.mkdir(exist_ok=True)
                    os.replace(src, dst)
            self.order.clear()

    def discard(self) -> None:
        for _, src in self.order:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(src)
        self.order.clear()


class BlockRepo:
    """Synchronous core of the embedded store (thread-safe; call it from worker threads)."""

    def __init__(self, root: Path, limits: Limits, *, fsync: bool = False) -> None:
        self.root = root
        self.limits = limits
        self.fsync = fsync
        self.blocks = root / "blocks"
        self.pins_dir = root / "pins"
        self.tmp = root / "tmp"
        self.corrupt = root / "corrupt"
        for d in (self.blocks, self.pins_dir, self.tmp, self.corrupt):
            d.mkdir(parents=True, exist_ok=True)
        self._make_shards()
        self._lock = threading.Lock()  # commit vs sweep, within this process

    def _make_shards(self) -> None:
        """Make every ``blocks/<xy>`` directory once (a marker file says it is done). Made one by one as blocks
        arrive, a new node's first thousand puts would each create one, and on ext4 each creation costs more
        while many files were deleted recently (which an agent storing every result does)."""
        done = self.root / "blocks.made"
        if done.exists():
            return
        for a in _B32:
            for b in _B32:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(self.blocks / (a + b))
        done.touch()

    # -- blocks --------------------------------------------------------------------------------
    def block_path(self, cid: Cid) -> Path:
        s = str(cid)
        return self.blocks / s[-3:-1] / s

    def _write_file(self, path: Path, data: bytes) -> None:
        with open(path, "wb") as f:
            f.write(data)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())

    def has_block(self, cid: Cid) -> bool:
        return self.block_path(cid).is_file()

    def refresh(self, cid: Cid, size: int) -> bool:
        """Whether the repo holds ``cid`` already (a file of its size); if so its mtime is set to now, which
        keeps gc from sweeping it within its grace (a put of it is then done without writing it again)."""
        p = self.block_path(cid)
        with self._lock:  # not between gc's look at the mtime and its unlink
            try:
                if os.stat(p).st_size != size:
                    return False
                os.utime(p)
            except FileNotFoundError:
                return False
        return True

    def missing(self, cids: Iterable[Cid]) -> list[Cid]:
        return [c for c in cids if not self.has_block(c)]

    def read_block(self, cid: Cid) -> bytes:
        p = self.block_path(cid)
        try:
            with open(p, "rb") as f:
                data = f.read(self.limits.max_block_bytes + 1)
        except FileNotFoundError:
            raise NotFound(f"block {cid} is not in the store at {self.root}") from None
        if len(data) > self.limits.max_block_bytes or not cid.matches(data):
            moved = self._quarantine(p)
            raise CorruptObject(
                f"block {cid} on disk is corrupted (its bytes do not hash to its CID); moved {p} to {moved} "
                "- add or fetch the object again"
            )
        return data

    def _quarantine(self, p: Path) -> Path:
        dst = self.corrupt / f"{p.name}.{uuid.uuid4().hex[:8]}"
        with contextlib.suppress(OSError):
            os.replace(p, dst)
        return dst

    def write_blocks(self, blocks: dict[Cid, bytes]) -> None:
        """Store already-verified blocks (e.g. from a peer), each atomically."""
        st = _Staging(self)
        try:
            for cid, block in blocks.items():
                st.add(cid, block)
            st.commit()
        finally:
            st.discard()

    # -- imports -------------------------------------------------------------------------------
    def _staged(self, fn: Callable[[_Staging], T]) -> T:
        st = _Staging(self)
        try:
            out = fn(st)
            st.commit()
            return out
        finally:
            st.discard()

    def put_bytes(self, data: bytes) -> Cid:
        return self._staged(lambda st: import_bytes(data, st.add, self.limits)[0])

    def put_file(self, path: PathLike) -> Cid:
        return self._staged(lambda st: import_file(path, st.add, self.limits)[0])

    def put_dir(self, path: PathLike) -> Cid:
        return self._staged(lambda st: import_tree(path, st.add, self.limits).cid)

    # -- reading -------------------------------------------------------------------------------
    def node(self, cid: Cid, block: bytes | None = None) -> tuple[Any, UnixFsData, bytes]:
        block = self.read_block(cid) if block is None else block
        node, data = decode_unixfs(cid, block)
        return node, data, block

    def stat(self, cid: Cid) -> ObjectInfo:
        node, data, block = self.node(cid)
        return _info(cid, node, data, block)

    def iter_file(self, cid: Cid, max_bytes: int, root_block: bytes | None = None) -> Iterator[bytes]:
        node, data, block = self.node(cid, root_block)
        info = _info(cid, node, data, block)
        if info.kind != "file":
            raise NotAFile(f"{cid} is a directory, not a file (use get_dir)")
        if info.size > max_bytes:
            raise TooLarge(f"{cid} is {info.size} bytes, over the limit of {max_bytes}")
        produced = 0

        def walk(c: Cid, depth: int, blk: bytes | None) -> Iterator[bytes]:
            nonlocal produced
            if depth > MAX_FILE_DEPTH:
                raise CorruptObject(f"file {cid} is nested deeper than {MAX_FILE_DEPTH} levels")
            b = self.read_block(c) if blk is None else blk
            if c.codec == RAW:
                pieces = [b]
                links = []
            else:
                n, d = decode_unixfs(c, b)
                if d.type not in (T_FILE, T_RAW):
                    raise CorruptObject(f"file {cid} contains a UnixFS {d.type_name} node ({c})")
                pieces = [d.data] if d.data else []
                links = n.links
            for p in pieces:
                produced += len(p)
                if produced > info.size:
                    raise CorruptObject(f"file {cid} holds more bytes than its declared size {info.size}")
                yield p
            for link in links:
                yield from walk(link.cid, depth + 1, None)

        yield from walk(cid, 0, block)
        if produced != info.size:
            raise CorruptObject(f"file {cid} holds {produced} bytes but declares {info.size}")

    def read_file(self, cid: Cid, max_bytes: int) -> bytes:
        return b"".join(self.iter_file(cid, max_bytes))

    def export_file(self, cid: Cid, dest: PathLike) -> None:
        dest = Path(dest)
        if dest.exists() or dest.is_symlink():
            raise StoreError(f"{dest} already exists")
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.partial-", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                for piece in self.iter_file(cid, self.limits.max_object_bytes):
                    f.write(piece)
            os.chmod(tmp, 0o644 & ~_umask())
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def export_dir(self, cid: Cid, dest: PathLike) -> None:
        dest = Path(dest)
        if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
            raise StoreError(f"{dest} already exists and is not an empty directory")
        node, data, block = self.node(cid)
        if data.type == T_HAMT:
            raise Unsupported(f"{cid} is a HAMT-sharded directory, which this store does not read")
        if data.type != T_DIRECTORY:
            raise NotAFile(f"{cid} is a file, not a directory (use get or get_file)")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
        entries = 0
        total = 0

        def walk(c: Cid, n: Any, out: Path, depth: int) -> None:
            nonlocal entries, total
            if depth > self.limits.max_depth:
                raise TooLarge(f"directory {cid} is nested deeper than {self.limits.max_depth} levels")
            seen: set[str] = set()
            for link in n.links:
                name = check_name(link.name, f"in directory {c}")
                if name in seen:
                    raise CorruptObject(f"directory {c} lists {name!r} twice")
                seen.add(name)
                entries += 1
                if entries > self.limits.max_entries:
                    raise TooLarge(f"directory {cid} has more than {self.limits.max_entries} entries")
                target = out / name
                child_node, child_data, child_block = self.node(link.cid)
                if child_data.type == T_DIRECTORY:
                    target.mkdir(mode=0o755)
                    walk(link.cid, child_node, target, depth + 1)
                elif child_data.type in (T_FILE, T_RAW):
                    budget = self.limits.max_object_bytes - total
                    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                    with os.fdopen(os.open(target, flags, 0o644), "wb") as f:
                        for piece in self.iter_file(link.cid, budget, child_block):
                            f.write(piece)
                            total += len(piece)
                else:
                    raise Unsupported(
                        f"directory {c} entry {name!r} is a UnixFS {child_data.type_name}, which is not supported"
                    )

        try:
            walk(cid, node, tmp, 0)
            os.chmod(tmp, 0o755 & ~_umask())
            if dest.exists():
                dest.rmdir()
            os.rename(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def children(self, cids: Iterable[Cid]) -> list[Cid]:
        """Links of the given dag-pb blocks (each read and verified)."""
        out: list[Cid] = []
        for c in cids:
            if c.codec == DAG_PB:
                node, _ = decode_unixfs(c, self.read_block(c))
                out.extend(link.cid for link in node.links)
        return out

    def walk(self, root: Cid) -> tuple[set[Cid], bool]:
        """(blocks reachable from ``root`` that are present, complete?). Leaves are not re-hashed."""
        found: set[Cid] = set()
        complete = True
        stack = [root]
        while stack:
            c = stack.pop()
            if c in found:
                continue
            if len(found) > MAX_WALK_BLOCKS:
                raise TooLarge(f"{root} has more than {MAX_WALK_BLOCKS} blocks")
            if c.codec == RAW:
                if self.has_block(c):
                    found.add(c)
                else:
                    complete = False
                continue
            try:
                node, _ = decode_unixfs(c, self.read_block(c))
            except (NotFound, CorruptObject):
                complete = False
                continue
            found.add(c)
            stack.extend(link.cid for link in node.links)
        return found, complete

    # -- pins and gc ---------------------------------------------------------------------------
    def pin(self, cid: Cid) -> None:
        p = self.pins_dir / str(cid)
        try:  # a second name for the root block's file: no inode is made (or freed again at unpin)
            os.link(self.block_path(cid), p)
        except FileExistsError:
            pass
        except OSError:  # the block is not here (yet), or the file system has no hard links
            p.touch()

    def unpin(self, cid: Cid) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.pins_dir / str(cid)).unlink()

    def pins(self) -> set[str]:
        out = set()
        for p in self.pins_dir.iterdir():
            try:
                out.add(str(parse_cid(p.name)))
            except StoreError:
                continue
        return out

    def gc(self, live: Iterable[Cid], grace_s: float) -> GcStats:
        start = time.time()
        cutoff = start - grace_s
        marked: set[str] = set()
        for root in set(live) | {parse_cid(p) for p in self.pins()}:
            found, _ = self.walk(root)
            marked.update(str(c) for c in found)
        removed = removed_bytes = kept = 0
        with self._lock:
            for shard in self.blocks.iterdir():
                if not shard.is_dir():
                    continue
                for f in shard.iterdir():
                    if f.name in marked:
                        kept += 1
                        continue
                    try:
                        st = f.stat()
                        if st.st_mtime >= cutoff:
                            kept += 1
                            continue
                        f.unlink()
                    except FileNotFoundError:
                        continue
                    removed += 1
                    removed_bytes += st.st_size
            for d in (self.tmp, self.corrupt):
                for f in d.iterdir():
                    with contextlib.suppress(OSError):
                        if d is self.corrupt or f.stat().st_mtime < cutoff:
                            if f.is_dir():
                                shutil.rmtree(f, ignore_errors=True)
                            else:
                                f.unlink()
        return GcStats(removed, removed_bytes, kept)


def _info(cid: Cid, node: Any, data: UnixFsData, block: bytes) -> ObjectInfo:
    if cid.codec == RAW:
        return ObjectInfo(str(cid), "file", len(block))
    if data.type in (T_FILE, T_RAW):
        size = data.filesize if data.filesize is not None else len(data.data or b"") + sum(data.blocksizes)
        return ObjectInfo(str(cid), "file", size)
    if data.type == T_DIRECTORY:
        return ObjectInfo(str(cid), "dir", len(block) + sum(link.tsize for link in node.links))
    raise Unsupported(f"{cid} is a UnixFS {data.type_name}; only files and plain directories are supported")


@functools.cache
def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def _first_store_error(eg: BaseExceptionGroup) -> BaseException:  # type: ignore[type-arg]
    for e in eg.exceptions:
        if isinstance(e, BaseExceptionGroup):
            return _first_store_error(e)
        return e
    return eg  # pragma: no cover


class EmbeddedStore(ContentStore):
    """Content store in ``<data_dir>/store`` with no daemon. See the module docstring for the layout.

    ``fetcher`` (optional) is asked for blocks missing locally (see :data:`Fetcher`); each answer is
    verified against its CID before it is stored.
    """

    def __init__(
        self,
        data_dir: PathLike,
        *,
        limits: Limits | None = None,
        fetcher: Fetcher | None = None,
        fetch_timeout_s: float = 30.0,
        fetch_concurrency: int = 8,
        gc_grace_s: float = 60.0,
        fsync: bool = False,
    ) -> None:
        self.limits = limits or Limits()
        self.data_dir = Path(data_dir)
        self.repo = BlockRepo(self.data_dir / "store", self.limits, fsync=fsync)
        self.fetcher = fetcher
        self.fetch_timeout_s = fetch_timeout_s
        self.fetch_concurrency = fetch_concurrency
        self.gc_grace_s = gc_grace_s
        self._closed = False

    def __repr__(self) -> str:
        return f"EmbeddedStore({str(self.data_dir)!r})"

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise StoreError("the store is closed")
        return await trio.to_thread.run_sync(functools.partial(fn, *args))

    # -- peer fetch ----------------------------------------------------------------------------
    async def _receive_block(self, cid: Cid) -> bytes:
        """``cid``'s block from the fetcher, checked against its CID (not yet stored)."""
        assert self.fetcher is not None
        data: Any = None
        with trio.move_on_after(self.fetch_timeout_s) as cs:
            data = await self.fetcher(str(cid))
        if cs.cancelled_caught:
            raise StoreTimeout(f"no peer delivered block {cid} within {self.fetch_timeout_s:g} s")
        if data is None:
            raise NotFound(f"{cid} is not in the store at {self.repo.root} and no peer supplied it")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise CorruptObject(f"the peer fetcher returned {type(data).__name__} for {cid}, not bytes")
        data = bytes(data)
        if len(data) > self.limits.max_block_bytes:
            raise TooLarge(
                f"a peer sent {len(data)} bytes for block {cid}; the block limit is {self.limits.max_block_bytes}"
            )
        if not cid.matches(data):
            raise CorruptObject(
                f"a peer sent {len(data)} bytes for {cid} that hash to something else; discarded them"
            )
        return data

    async def _fetch_block(self, cid: Cid) -> bytes:
        data = await self._receive_block(cid)
        await self._run(self.repo.write_blocks, {cid: data})
        return data

    async def _ensure(self, root: Cid, missing: list[Cid], then: Callable[[], T]) -> T:
        """Fetch every block of ``root`` that is missing locally (``missing``: of ``[root]``), breadth-first and a
        few at a time, then return ``then()``. One worker-thread call per level of the DAG: it stores the level's
        blocks, reads their links and finds which of those are missing (the last one runs ``then``); a thread
        hop costs more CPU than reading a few small blocks."""
        frontier = [root]
        seen: set[Cid] = {root}
        fetched_bytes = 0
        limiter = trio.CapacityLimiter(self.fetch_concurrency)
        while True:
            got: dict[Cid, bytes] = {}

            async def one(c: Cid, got: dict[Cid, bytes] = got) -> None:
                async with limiter:
                    got[c] = await self._receive_block(c)

            try:
                async with trio.open_nursery() as nursery:
                    for c in missing:
                        nursery.start_soon(one, c)
            except BaseExceptionGroup as eg:  # surface the first real error, not the group
                raise _first_store_error(eg) from None
            fetched_bytes += sum(len(b) for b in got.values())
            if fetched_bytes > self.limits.max_object_bytes + self.limits.max_block_bytes * 64:
                raise TooLarge(
                    f"fetching {root} exceeded the object limit of {self.limits.max_object_bytes} bytes"
                )
            frontier, missing, out = await self._run(self._next_level, root, got, frontier, seen, then)
            if not frontier:
                return out

    def _next_level(
        self, root: Cid, got: dict[Cid, bytes], frontier: list[Cid], seen: set[Cid], then: Callable[[], T]
    ) -> tuple[list[Cid], list[Cid], T | None]:
        """(in a worker thread) store ``got``; the next level of ``frontier`` and which of it is missing, or,
        at the bottom, ``([], [], then())``."""
        self.repo.write_blocks(got)
        nxt = [c for c in dict.fromkeys(self.repo.children(frontier)) if c not in seen]
        seen.update(nxt)
        if len(seen) > MAX_WALK_BLOCKS:
            raise TooLarge(f"{root} has more than {MAX_WALK_BLOCKS} blocks")
        if nxt:
            return nxt, self.repo.missing(nxt), None
        return [], [], then()

    async def _with_fetch(self, root: Cid, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread; when a block of ``root`` is missing or corrupt and a fetcher is set,
        the missing blocks are fetched first (a one-block object: two thread hops in all)."""
        if self.fetcher is None:
            return await self._run(fn, *args)

        def attempt() -> tuple[bool, Any]:
            try:
                return True, fn(*args)
            except (NotFound, CorruptObject):  # (a corrupt block was moved aside: it is missing now)
                return False, self.repo.missing([root])

        done, out = await self._run(attempt)
        if done:
            return out
        return await self._ensure(root, out, lambda: fn(*args))

    # -- ContentStore --------------------------------------------------------------------------
    async def put_bytes(self, data: bytes, *, pin: bool = False) -> str:
        return await self._put(self.repo.put_bytes, checked_object(data, self.limits), pin)

    async def put_file(self, path: PathLike, *, pin: bool = False) -> str:
        return await self._put(self.repo.put_file, path, pin)

    async def put_dir(self, path: PathLike, *, pin: bool = False) -> str:
        return await self._put(self.repo.put_dir, path, pin)

    async def _put(self, put: Callable[[Any], Cid], what: Any, pin: bool) -> str:
        """The import and, with ``pin``, its pin, in one worker-thread call (an agent stores ~3 objects per job,
        and each hop to a thread costs the loop ~70 us)."""

        def work() -> Cid:
            cid = put(what)
            if pin:
                self.repo.pin(cid)
            return cid

        return str(await self._run(work))

    async def put_block(self, cid: str, block: bytes) -> str:
        c = verified_block(cid, block, self.limits)
        await self._run(self.repo.write_blocks, {c: bytes(block)})
        return str(c)

    async def get(self, cid: str, *, max_bytes: int | None = None) -> bytes:
        c = parse_cid(cid)
        cap = (
            self.limits.max_object_bytes
            if max_bytes is None
            else min(max_bytes, self.limits.max_object_bytes)
        )
        return await self._with_fetch(c, self.repo.read_file, c, cap)

    async def get_file(self, cid: str, dest: PathLike) -> None:
        c = parse_cid(cid)
        await self._with_fetch(c, self.repo.export_file, c, dest)

    async def get_dir(self, cid: str, dest: PathLike) -> None:
        c = parse_cid(cid)
        await self._with_fetch(c, self.repo.export_dir, c, dest)

    async def get_block(self, cid: str) -> bytes:
        c = parse_cid(cid)
        return await self._run(self.repo.read_block, c)

    async def stat(self, cid: str) -> ObjectInfo:
        c = parse_cid(cid)
        try:
            return await self._run(self.repo.stat, c)
        except (NotFound, CorruptObject):
            if self.fetcher is None:
                raise
        await self._fetch_block(c)
        return await self._run(self.repo.stat, c)

    async def has(self, cid: str) -> bool:
        c = parse_cid(cid)
        _, complete = await self._run(self.repo.walk, c)
        return complete

    async def pin(self, cid: str) -> None:
        c = parse_cid(cid)
        if await self.has(str(c)):
            await self._run(self.repo.pin, c)
            return
        if self.fetcher is None:
            raise NotFound(f"cannot pin {c}: it is not (completely) in the store at {self.repo.root}")
        await self._ensure(c, await self._run(self.repo.missing, [c]), lambda: self.repo.pin(c))

    async def unpin(self, cid: str) -> None:
        await self._run(self.repo.unpin, parse_cid(cid))

    async def pins(self) -> set[str]:
        return await self._run(self.repo.pins)

    async def gc(self, live_cids: Iterable[str] = (), *, grace_s: float | None = None) -> GcStats:
        live = [parse_cid(c) for c in live_cids]
        return await self._run(self.repo.gc, live, self.gc_grace_s if grace_s is None else grace_s)

    async def close(self) -> None:
        self._closed = True

    # -- helpers for other layers --------------------------------------------------------------
    def block_reader(self) -> Callable[[str], Any]:
        """An async ``cid -> bytes | None`` that serves local blocks to peers (None when absent/corrupt)."""

        async def serve(cid: str) -> bytes | None:
            try:
                return await self.get_block(cid)
            except (NotFound, CorruptObject, StoreError):
                return None

        return serve
