"""The interface every content store offers; the rest of sandrun-p2p sees only this.

All methods are trio-async. CIDs go in as any CID string the store understands and come out as
CIDv1 base32 strings (``bafy...`` for dag-pb roots, ``bafk...`` for single raw blocks).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .cid import Cid, parse_cid
from .errors import CorruptObject, TooLarge

#: Peer-fetch hook: asked for one block by CID (CIDv1 base32), returns that block's bytes or None.
#: Whatever it returns is hashed and compared with the CID before it is stored or used.
Fetcher = Callable[[str], Awaitable[bytes | None]]

GiB = 1024**3
MiB = 1024**2


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits. Anything larger is refused with :class:`~sandrun_p2p.store.errors.TooLarge`."""

    #: one file (``put_*`` and ``get``), and the sum of all files of one directory tree
    max_object_bytes: int = 4 * GiB
    #: one block received from a peer or found on disk (ours are at most 256 KiB; IPFS allows 1 MiB)
    max_block_bytes: int = 1 * MiB
    #: entries (files + directories) in one directory tree
    max_entries: int = 100_000
    #: nesting depth of a directory tree
    max_depth: int = 64


def checked_object(data: object, limits: Limits) -> bytes:
    """``data`` as bytes, after checking it is bytes-like and within the object limit (both backends' put_bytes)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("put_bytes takes bytes")
    if len(data) > limits.max_object_bytes:
        raise TooLarge(f"{len(data)} bytes exceeds the object limit of {limits.max_object_bytes} bytes")
    return bytes(data)


def verified_block(cid: str, block: bytes, limits: Limits) -> Cid:
    """The parsed CID of a block offered for storage, after checking its size and that it hashes to that CID."""
    c = parse_cid(cid)
    if len(block) > limits.max_block_bytes:
        raise TooLarge(f"block {c} is {len(block)} bytes; the block limit is {limits.max_block_bytes}")
    if not c.matches(block):
        raise CorruptObject(f"{len(block)} bytes offered as block {c} hash to something else; refused")
    return c


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    cid: str
    kind: Literal["file", "dir"]
    #: file: content bytes; dir: cumulative size of all blocks below (the UnixFS Tsize)
    size: int


@dataclass(frozen=True, slots=True)
class GcStats:
    removed_blocks: int = 0
    removed_bytes: int = 0
    kept_blocks: int = 0
    #: IPFS backend: CIDs unpinned on the daemon
    unpinned: int = 0


PathLike = str | os.PathLike[str]


class ContentStore(ABC):
    """Content-addressed storage of files and directories, IPFS-compatible CIDs."""

    limits: Limits

    # -- writing -------------------------------------------------------------------------------
    @abstractmethod
    async def put_bytes(self, data: bytes, *, pin: bool = False) -> str:
        """Store ``data`` as a UnixFS file; return its CID."""

    @abstractmethod
    async def put_file(self, path: PathLike, *, pin: bool = False) -> str:
        """Store the regular file at ``path`` (symlinks refused); return its CID."""

    @abstractmethod
    async def put_dir(self, path: PathLike, *, pin: bool = False) -> str:
        """Store the directory tree at ``path`` as a UnixFS directory; return its CID.

        Hidden files and empty directories are included; symlinks, devices, FIFOs and sockets are
        refused (:class:`UnsafePath`). The CID equals ``ipfs add -r --hidden --cid-version 1
        --raw-leaves --chunker size-262144 PATH``. Names must be UTF-8.
        """

    async def put_path(self, path: PathLike, *, pin: bool = False) -> str:
        """``put_dir`` for a directory, ``put_file`` otherwise."""
        p = Path(path)
        if p.is_dir() and not p.is_symlink():
            return await self.put_dir(p, pin=pin)
        return await self.put_file(p, pin=pin)

    @abstractmethod
    async def put_block(self, cid: str, block: bytes) -> str:
        """Store one block received from elsewhere after checking it hashes to ``cid``."""

    # -- reading -------------------------------------------------------------------------------
    @abstractmethod
    async def get(self, cid: str, *, max_bytes: int | None = None) -> bytes:
        """The bytes of the file ``cid`` (every block re-hashed); :class:`NotAFile` for a directory."""

    @abstractmethod
    async def get_file(self, cid: str, dest: PathLike) -> None:
        """Write the file ``cid`` to ``dest`` (temp file + rename; ``dest`` must not exist)."""

    @abstractmethod
    async def get_dir(self, cid: str, dest: PathLike) -> None:
        """Materialise directory ``cid`` at ``dest`` (which must not exist, or be an empty directory).

        Built in a temporary sibling and renamed into place: on any error nothing is left at ``dest``.
        Entry names are checked: ``..``, ``/``, absolute paths and NUL are refused (:class:`UnsafePath`).
        """

    async def get_path(self, cid: str, dest: PathLike) -> Literal["file", "dir"]:
        """``get_dir`` or ``get_file`` depending on what ``cid`` is; returns which."""
        info = await self.stat(cid)
        if info.kind == "dir":
            await self.get_dir(cid, dest)
        else:
            await self.get_file(cid, dest)
        return info.kind

    @abstractmethod
    async def get_block(self, cid: str) -> bytes:
        """One raw block (verified), e.g. to answer a peer; :class:`NotFound` when absent locally."""

    @abstractmethod
    async def stat(self, cid: str) -> ObjectInfo:
        """Kind and size of ``cid`` (reads only the root block)."""

    @abstractmethod
    async def has(self, cid: str) -> bool:
        """True when every block of ``cid`` is present locally (no peer is asked)."""

    # -- lifetime ------------------------------------------------------------------------------
    @abstractmethod
    async def pin(self, cid: str) -> None:
        """Keep ``cid`` (and everything below it) through :meth:`gc` until :meth:`unpin`."""

    @abstractmethod
    async def unpin(self, cid: str) -> None:
        """Undo :meth:`pin` (no error when not pinned)."""

    @abstractmethod
    async def pins(self) -> set[str]:
        """CIDs pinned through this store."""

    @abstractmethod
    async def gc(self, live_cids: Iterable[str] = (), *, grace_s: float | None = None) -> GcStats:
        """Remove everything not reachable from ``live_cids`` or a pin.

        Blocks written less than ``grace_s`` seconds ago are kept (protects another process's
        upload in progress); ``None`` means the store's default.
        """

    @abstractmethod
    async def close(self) -> None:
        """Release resources (threads, HTTP sessions). Idempotent."""

    async def __aenter__(self) -> ContentStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
