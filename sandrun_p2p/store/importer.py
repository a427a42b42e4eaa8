"""Turn bytes, files and directory trees into UnixFS blocks (no storage here: blocks go to ``emit``).

Used by the embedded store (``emit`` stages blocks on disk), by the IPFS backend (to know the CID
the daemon must return) and by :func:`cid_of_bytes` / :func:`cid_of_path` (``emit`` drops them).
"""

from __future__ import annotations

import os
import stat as statmod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .base import Limits, PathLike, checked_object
from .cid import Cid
from .errors import StoreError, TooLarge, UnsafePath
from .unixfs import FileBuilder, check_name, dir_node

Emit = Callable[[Cid, bytes], None]
READ_SIZE = 1024 * 1024


def _drop(_cid: Cid, _block: bytes) -> None:
    return None


def import_bytes(data: bytes | bytearray | memoryview, emit: Emit, limits: Limits) -> tuple[Cid, int]:
    """(root CID, cumulative block size) of ``data`` as a UnixFS file."""
    checked_object(data, limits)
    fb = FileBuilder(emit)
    mv = memoryview(data)
    for i in range(0, len(mv), READ_SIZE):
        fb.update(mv[i : i + READ_SIZE])
    return fb.finish()


def import_fileobj(
    f: BinaryIO, emit: Emit, limits: Limits, where: str = "", budget: int | None = None
) -> tuple[Cid, int, int]:
    """(root CID, cumulative block size, content size) of an open binary file, read to its end."""
    cap = limits.max_object_bytes if budget is None else budget
    fb = FileBuilder(emit)
    while True:
        chunk = f.read(READ_SIZE)
        if not chunk:
            break
        fb.update(chunk)
        if fb.size > cap:
            raise TooLarge(f"{where or 'file'} exceeds the size limit of {cap} bytes")
    size = fb.size
    cid, tsize = fb.finish()
    return cid, tsize, size


def _open_regular(path: Path) -> BinaryIO:
    """Open a regular file without following a symlink in its last component."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if path.is_symlink():
            raise UnsafePath(f"{path} is a symlink; only regular files are stored") from None
        raise StoreError(f"cannot read {path}: {e.strerror}") from None
    st = os.fstat(fd)
    if not statmod.S_ISREG(st.st_mode):
        os.close(fd)
        raise UnsafePath(f"{path} is not a regular file")
    return os.fdopen(fd, "rb")


def import_file(path: PathLike, emit: Emit, limits: Limits) -> tuple[Cid, int, int]:
    p = Path(path)
    with _open_regular(p) as f:
        return import_fileobj(f, emit, limits, str(p))


@dataclass(slots=True)
class TreeEntry:
    """One thing under an imported directory, for callers that must upload the tree elsewhere."""

    rel: str  # POSIX relative path, "" for the root
    kind: str  # "file" or "dir"
    cid: Cid
    tsize: int
    abspath: Path
    size: int = 0
    empty_dir: bool = False


@dataclass(slots=True)
class TreeResult:
    cid: Cid
    tsize: int
    total_bytes: int
    entries: list[TreeEntry] = field(default_factory=list)


def import_tree(path: PathLike, emit: Emit, limits: Limits) -> TreeResult:
    """Import a directory tree: regular files and directories only, names must be UTF-8.

    Symlinks, devices, FIFOs and sockets raise :class:`UnsafePath` naming the entry; limits on entries,
    depth and total bytes raise :class:`TooLarge`. Entries are returned in a deterministic order.
    """
    root = Path(path)
    try:
        st = os.lstat(root)
    except OSError as e:
        raise StoreError(f"cannot read {root}: {e.strerror}") from None
    if statmod.S_ISLNK(st.st_mode):
        raise UnsafePath(f"{root} is a symlink; give the real directory")
    if not statmod.S_ISDIR(st.st_mode):
        raise StoreError(f"{root} is not a directory")
    res = TreeResult(Cid.of_block(0x55, b""), 0, 0)
    count = 0

    def walk(dirpath: Path, rel: str, depth: int) -> tuple[Cid, int]:
        nonlocal count
        if depth > limits.max_depth:
            raise TooLarge(f"{root}: nesting deeper than {limits.max_depth} levels at {rel!r}")
        try:
            with os.scandir(dirpath) as it:
                items = sorted(it, key=lambda e: os.fsencode(e.name))
        except OSError as e:
            raise StoreError(f"cannot list {dirpath}: {e.strerror}") from None
        links: list[tuple[str, Cid, int]] = []
        for e in items:
            name = e.name
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                raise UnsafePath(f"{dirpath}: entry name {os.fsencode(name)!r} is not UTF-8") from None
            check_name(name, f"in {dirpath}")
            erel = f"{rel}/{name}" if rel else name
            count += 1
            if count > limits.max_entries:
                raise TooLarge(f"{root} has more than {limits.max_entries} entries")
            est = e.stat(follow_symlinks=False)
            if statmod.S_ISLNK(est.st_mode):
                raise UnsafePath(
                    f"{root}: {erel} is a symlink (-> {os.readlink(e.path)}); symlinks are not stored - "
                    "copy the target into the directory instead"
                )
            if statmod.S_ISDIR(est.st_mode):
                cid, tsize = walk(Path(e.path), erel, depth + 1)
                is_empty = not any(True for _ in os.scandir(e.path))
                res.entries.append(TreeEntry(erel, "dir", cid, tsize, Path(e.path), empty_dir=is_empty))
            elif statmod.S_ISREG(est.st_mode):
                with _open_regular(Path(e.path)) as f:
                    budget = limits.max_object_bytes - res.total_bytes
                    cid, tsize, size = import_fileobj(f, emit, limits, f"{root}/{erel}", budget)
                res.total_bytes += size
                res.entries.append(TreeEntry(erel, "file", cid, tsize, Path(e.path), size))
            else:
                raise UnsafePath(
                    f"{root}: {erel} is a device, FIFO or socket; only regular files and directories are stored"
                )
            links.append((name, cid, tsize))
        cid, block, tsize = dir_node(links, where=f"{root}/{rel}" if rel else str(root))
        emit(cid, block)
        return cid, tsize

    res.cid, res.tsize = walk(root, "", 0)
    return res


def cid_of_bytes(data: bytes | bytearray | memoryview, limits: Limits | None = None) -> str:
    """The CID ``ipfs add --cid-version 1 --raw-leaves --chunker size-262144`` gives ``data`` (stores nothing)."""
    return str(import_bytes(data, _drop, limits or Limits())[0])


def cid_of_path(path: PathLike, limits: Limits | None = None) -> str:
    """CID of a file or directory tree (``ipfs add -r --hidden`` with the same options); stores nothing."""
    p = Path(path)
    lim = limits or Limits()
    if p.is_dir() and not p.is_symlink():
        return str(import_tree(p, _drop, lim).cid)
    return str(import_file(p, _drop, lim)[0])
