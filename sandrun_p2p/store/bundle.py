"""Bundles: THE deterministic tar packing and safe unpacking of the project (code bundles, results,
checkpoint snapshots, the sandrun backend's tar.gz). The executors use it through ``exec.bundles``,
which turns a :class:`StoreError` into their ``BundleError`` ("bad-bundle").

``pack(path)`` gives the same bytes for the same file contents on every machine: entries sorted by
path, mtime 0, uid/gid 0, no user/group names, modes normalised to 0644 / 0755 (executable bit kept),
PAX format with UTF-8 names, no symlinks, hardlinks, devices, FIFOs or sockets (refused, or left out
with ``skip_unsafe=True`` for trees a job wrote). A single file is packed as one entry named by its
base name; a directory by its contents.

``unpack(data, dest)`` accepts a tar or tar.gz and refuses, naming the member and before writing
anything: absolute paths, ``..`` components, backslashes, NUL, symlinks, hardlinks, devices, FIFOs,
duplicates, a file used as a directory (in any member order), unreadable archives, and archives over
the size/entry limits (gzip bombs included). It extracts into a temporary sibling of ``dest`` and
renames it into place, so a refused archive leaves nothing behind.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import stat as statmod
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from .base import PathLike
from .errors import StoreError, TooLarge, UnsafePath

DEFAULT_MAX_BYTES = 1 << 30  # contents (sum of file sizes), 1 GiB
DEFAULT_MAX_ENTRIES = 10_000  # files and directories
_GZIP_MAGIC = b"\x1f\x8b"


def _mode(st_mode: int, is_dir: bool) -> int:
    if is_dir or st_mode & 0o111:
        return 0o755
    return 0o644


def _tarinfo(name: str, *, size: int = 0, is_dir: bool = False, mode: int = 0o644) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    ti.size = 0 if is_dir else size
    ti.mode = mode
    ti.mtime = 0
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def pack(
    path: PathLike,
    *,
    compress: bool = False,
    include: Callable[[str], bool] | None = None,
    skip_unsafe: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> bytes:
    """Deterministic tar (``compress=True``: gzip with mtime 0) of a file or directory.

    ``include(rel)`` is asked for every file and directory below a packed directory ('/'-separated
    path); ``False`` leaves it out (a directory with everything in it). ``skip_unsafe=True`` is for
    trees a job wrote (checkpoint dirs): symlinks, devices, FIFOs, sockets, names that :func:`unpack`
    would refuse and entries that vanish while packing are left out instead of refused.
    """
    root = Path(path)
    try:
        st = os.lstat(root)
    except OSError as e:
        raise StoreError(f"cannot read {root}: {e.strerror}") from None
    buf = io.BytesIO()
    total = 0
    count = 0

    def add_file(tf: tarfile.TarFile, src: Path, name: str, st: os.stat_result) -> None:
        nonlocal total
        total += st.st_size
        if total > max_bytes:
            raise TooLarge(f"{root}: bundle would exceed {max_bytes} bytes")
        try:
            fd = os.open(src, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError:
            if skip_unsafe:
                return
            raise
        except OSError as e:  # O_NOFOLLOW on a file swapped for a symlink: ELOOP
            if skip_unsafe:
                return
            raise UnsafePath(f"{src} cannot be opened as a regular file ({e.strerror})") from None
        with os.fdopen(fd, "rb") as f:
            fst = os.fstat(f.fileno())
            if not statmod.S_ISREG(fst.st_mode):
                if skip_unsafe:
                    return
                raise UnsafePath(f"{src} changed into something other than a regular file")
            tf.addfile(_tarinfo(name, size=fst.st_size, mode=_mode(fst.st_mode, False)), f)

    def refuse(msg: str) -> None:
        if not skip_unsafe:
            raise UnsafePath(msg)

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tf:
        if statmod.S_ISREG(st.st_mode):
            add_file(tf, root, _check_member_name(root.name, str(root)), st)
        elif statmod.S_ISDIR(st.st_mode):

            def walk(d: Path, rel: str) -> None:
                nonlocal count
                try:
                    with os.scandir(d) as it:
                        items = sorted(it, key=lambda e: os.fsencode(e.name))
                except FileNotFoundError:
                    if skip_unsafe:
                        return
                    raise
                for e in items:
                    try:
                        e.name.encode("utf-8")
                    except UnicodeEncodeError:
                        refuse(f"{d}: name {os.fsencode(e.name)!r} is not UTF-8")
                        continue
                    name = f"{rel}/{e.name}" if rel else e.name
                    if "\\" in e.name:
                        refuse(f"{root}: name {name!r} has a backslash; bundles cannot hold it")
                        continue
                    if include is not None and not include(name):
                        continue
                    try:
                        est = e.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        if skip_unsafe:
                            continue
                        raise
                    if statmod.S_ISLNK(est.st_mode):
                        refuse(
                            f"{root}: {name} is a symlink; bundles hold regular files and directories only"
                        )
                        continue
                    if not (statmod.S_ISDIR(est.st_mode) or statmod.S_ISREG(est.st_mode)):
                        refuse(f"{root}: {name} is a device, FIFO or socket; refused")
                        continue
                    count += 1
                    if count > max_entries:
                        raise TooLarge(f"{root} has more than {max_entries} entries")
                    if statmod.S_ISDIR(est.st_mode):
                        tf.addfile(_tarinfo(name, is_dir=True, mode=0o755))
                        walk(Path(e.path), name)
                    else:
                        add_file(tf, Path(e.path), name, est)

            walk(root, "")
        elif statmod.S_ISLNK(st.st_mode):
            raise UnsafePath(f"{root} is a symlink; give the real file or directory")
        else:
            raise UnsafePath(f"{root} is not a regular file or directory")
    data = buf.getvalue()
    if compress:
        return gzip.compress(data, compresslevel=9, mtime=0)
    return data


def _check_member_name(name: str, where: str) -> str:
    if not name or "\x00" in name or "\\" in name:
        raise UnsafePath(f"unsafe name {name!r} in {where}")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafePath(f"absolute path {name!r} in {where}")
    parts = PurePosixPath(name).parts
    if any(p == ".." for p in parts):
        raise UnsafePath(f"path {name!r} in {where} escapes the destination (..)")
    clean = [p for p in parts if p != "."]
    if not clean:
        raise UnsafePath(f"empty path {name!r} in {where}")
    return "/".join(clean)


def _decompressed(data: bytes, max_bytes: int) -> bytes:
    if not data.startswith(_GZIP_MAGIC):
        return data
    out = io.BytesIO()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as g:
            while True:
                chunk = g.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
                if out.tell() > max_bytes + 1024 * 1024:  # tar headers on top of the contents
                    raise TooLarge(f"bundle decompresses to more than {max_bytes} bytes")
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise StoreError(f"not a readable tar archive (broken gzip: {e})") from None
    return out.getvalue()


def list_members(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_entries: int = DEFAULT_MAX_ENTRIES
) -> list[str]:
    """Validated member paths of a bundle (directories end with ``/``), without extracting anything."""
    return [n for n, _ in _validated(_decompressed(bytes(data), max_bytes), max_bytes, max_entries)]


def _validated(raw: bytes, max_bytes: int, max_entries: int) -> list[tuple[str, tarfile.TarInfo]]:
    """Check every member of an uncompressed tar before anything is written."""
    out: list[tuple[str, tarfile.TarInfo]] = []
    seen: dict[str, bool] = {}  # path -> is_dir
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:", encoding="utf-8", errors="strict") as tf:
            members = tf.getmembers()
    except (tarfile.TarError, UnicodeDecodeError, EOFError, OSError) as e:
        raise StoreError(f"not a readable tar archive ({e})") from None
    if len(members) > max_entries:
        raise TooLarge(f"bundle has {len(members)} entries, more than {max_entries}")
    for m in members:
        if m.isdir() and m.name.strip("/") in (".", ""):
            continue  # the "./" root entry written by `tar -C dir -cf - .`
        name = _check_member_name(m.name, "bundle")
        if m.issym() or m.islnk():
            raise UnsafePath(
                f"bundle member {m.name!r} is a {'symlink' if m.issym() else 'hardlink'}; refused"
            )
        if not (m.isreg() or m.isdir()):
            raise UnsafePath(f"bundle member {m.name!r} is a device, FIFO or other special file; refused")
        if name in seen:
            raise UnsafePath(f"bundle lists {name!r} twice")
        seen[name] = m.isdir()
        total += m.size
        if total > max_bytes:
            raise TooLarge(f"bundle holds more than {max_bytes} bytes")
        out.append((name + ("/" if m.isdir() else ""), m))
    for name in seen:  # a file may not be the parent of another member, whichever comes first
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if seen.get(parent) is False:
                raise UnsafePath(f"bundle member {name!r} is inside a file ({parent!r})")
    return out


def unpack(
    data: bytes,
    dest: PathLike,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    mtime: int | None = None,
) -> list[str]:
    """Extract a bundle into ``dest`` (must not exist, or be an empty directory); return the member paths.

    All members are validated before anything is written; files get mode 0644 or 0755 only. With
    ``mtime`` every extracted file and directory (``dest`` included) gets that modification time.
    """
    dest = Path(dest)
    if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
        raise StoreError(f"{dest} already exists and is not an empty directory")
    raw = _decompressed(bytes(data), max_bytes)
    members = _validated(raw, max_bytes, max_entries)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:", encoding="utf-8") as tf:
            for name, m in members:
                target = tmp.joinpath(*name.rstrip("/").split("/"))
                # every parent is a directory we created: no symlink can redirect the write
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
                if m.isdir():
                    target.mkdir(exist_ok=True, mode=0o755)
                    continue
                src = tf.extractfile(m)
                assert src is not None
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                with os.fdopen(os.open(target, flags, _mode(m.mode, False)), "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
        if mtime is not None:
            for d, _dirs, files in os.walk(tmp, topdown=False):  # children before their directory
                for f in files:
                    os.utime(os.path.join(d, f), (mtime, mtime), follow_symlinks=False)
                os.utime(d, (mtime, mtime), follow_symlinks=False)
        os.chmod(tmp, 0o755)
        if dest.exists():
            dest.rmdir()
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [n for n, _ in members]
