"""Safe extraction and deterministic packing of tar bundles (code bundles, checkpoint snapshots).

Extraction refuses, before writing anything, members that are absolute, contain ``..``, are
links, devices or FIFOs, repeat a path, or exceed the size/count caps. Only regular files and
directories are written, with modes limited to 0o755/0o644 and mtimes set to ``mtime``.
NOTE: store/bundle.py (another engineer) may provide the same; merge into one place then.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path, PurePosixPath

from .errors import BundleError

MAX_BUNDLE_FILES = 10_000
MAX_BUNDLE_BYTES = 1 << 30


def _check_name(name: str) -> PurePosixPath:
    if not name or "\x00" in name or name.startswith("/") or "\\" in name:
        raise BundleError(f"bundle member {name!r} has an absolute or invalid path")
    p = PurePosixPath(name)
    if any(part == ".." for part in p.parts):
        raise BundleError(f"bundle member {name!r} escapes the job directory")
    parts = [x for x in p.parts if x != "."]
    if not parts:
        raise BundleError(f"bundle member {name!r} has an empty path")
    return PurePosixPath(*parts)


def safe_extract(data: bytes, dest: Path, *, max_files: int = MAX_BUNDLE_FILES,
                 max_bytes: int = MAX_BUNDLE_BYTES, mtime: int = 0) -> list[str]:
    """Extract tar (optionally gzip) ``data`` into the existing directory ``dest``; return the file paths."""
    try:
        tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")  # noqa: SIM115 - closed below
        members = tf.getmembers()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise BundleError(f"not a readable tar archive ({e})") from None
    if len(members) > max_files:
        raise BundleError(f"bundle has {len(members)} members, more than {max_files}")
    seen: set[PurePosixPath] = set()
    total = 0
    plan: list[tuple[PurePosixPath, tarfile.TarInfo]] = []
    for m in members:
        rel = _check_name(m.name)
        if m.issym() or m.islnk():
            raise BundleError(f"bundle member {m.name!r} is a link; links are not allowed")
        if not (m.isreg() or m.isdir()):
            raise BundleError(f"bundle member {m.name!r} is a device, FIFO or special file")
        if rel in seen:
            raise BundleError(f"bundle member {m.name!r} appears twice")
        seen.add(rel)
        total += m.size
        if total > max_bytes:
            raise BundleError(f"bundle expands to more than {max_bytes} bytes")
        plan.append((rel, m))
    files = {r for r, m in plan if m.isreg()}
    for r in files:  # a file may not be the parent of another member
        for parent in r.parents:
            if parent in files:
                raise BundleError(f"bundle member {str(r)!r} is inside a file")
    with tf:
        return _write_members(tf, plan, dest.resolve(), mtime)


def _write_members(tf: tarfile.TarFile, plan: list[tuple[PurePosixPath, tarfile.TarInfo]], dest: Path,
                   mtime: int) -> list[str]:
    written: list[str] = []
    for rel, m in sorted(plan, key=lambda x: x[0].parts):
        target = dest.joinpath(*rel.parts)
        _mkdirs(dest, target.parent)
        if m.isdir():
            _mkdirs(dest, target)
            continue
        src = tf.extractfile(m)
        assert src is not None
        mode = 0o755 if m.mode & 0o111 else 0o644
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        os.utime(target, (mtime, mtime))
        written.append(rel.as_posix())
    return written


def _mkdirs(root: Path, d: Path) -> None:
    """Create ``d`` under ``root`` component by component, refusing anything that is not a real directory."""
    cur = root
    for part in d.relative_to(root).parts:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            os.mkdir(cur, 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise BundleError(f"bundle path {cur.relative_to(root).as_posix()!r} is not a directory")


def walk_files(root: Path) -> list[str]:
    """Sorted '/'-separated relative paths of the regular files under ``root`` (links never followed)."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        base = Path(dirpath)
        for name in filenames:
            p = base / name
            if stat.S_ISREG(os.lstat(p).st_mode):
                out.append(p.relative_to(root).as_posix())
    return sorted(out)


def pack_dir(root: Path, *, include=lambda rel: True, gzip: bool = False) -> bytes:
    """Deterministic tar of the regular files under ``root`` (sorted, mtime 0, uid/gid 0, modes 644/755)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gzip else "w", format=tarfile.PAX_FORMAT) as tf:
        for rel in walk_files(root):
            if not include(rel):
                continue
            p = root / rel
            info = tarfile.TarInfo(rel)
            info.size = os.lstat(p).st_size
            info.mode = 0o755 if os.lstat(p).st_mode & 0o111 else 0o644
            info.mtime = 0
            with open(p, "rb") as f:
                tf.addfile(info, f)
    data = buf.getvalue()
    if gzip:  # gzip header carries a timestamp; zero it for deterministic bytes
        data = data[:4] + b"\x00\x00\x00\x00" + data[8:]
    return data
