"""Deterministic bundle packing and safe unpacking."""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

import pytest

from sandrun_p2p.store import StoreError, TooLarge, UnsafePath
from sandrun_p2p.store.bundle import list_members, pack, unpack


def make_src(root: Path) -> Path:
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "main.py").write_text("print('hi')\n")
    (root / "run.sh").write_text("#!/bin/sh\necho\n")
    os.chmod(root / "run.sh", 0o700)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "sub" / "data.bin").write_bytes(os.urandom(5000))
    (root / "empty").mkdir()
    (root / "ünï.txt").write_text("u")
    return root


def test_pack_is_deterministic(tmp_path: Path) -> None:
    src = make_src(tmp_path / "a")
    first = pack(src)
    # same contents, different mtimes, permissions noise and creation order -> same bytes
    time.sleep(0.01)
    for p in src.rglob("*"):
        os.utime(p, (12345, 67890))
    os.chmod(src / "main.py", 0o600)
    assert pack(src) == first
    assert pack(src, compress=True) == pack(src, compress=True)
    with tarfile.open(fileobj=io.BytesIO(first)) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names == [
        "empty",
        "main.py",
        "pkg",
        "pkg/__init__.py",
        "pkg/sub",
        "pkg/sub/data.bin",
        "run.sh",
        "ünï.txt",
    ]
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" for m in members)
    modes = {m.name: m.mode for m in members}
    assert modes["run.sh"] == 0o755 and modes["main.py"] == 0o644 and modes["pkg"] == 0o755


def test_roundtrip(tmp_path: Path) -> None:
    src = make_src(tmp_path / "a")
    for data in (pack(src), pack(src, compress=True)):
        dest = tmp_path / f"out{len(data)}"
        names = unpack(data, dest)
        assert "pkg/sub/data.bin" in names and "empty/" in names
        assert (dest / "pkg" / "sub" / "data.bin").read_bytes() == (
            src / "pkg" / "sub" / "data.bin"
        ).read_bytes()
        assert os.access(dest / "run.sh", os.X_OK) and not os.access(dest / "main.py", os.X_OK)
        assert (dest / "empty").is_dir()


def test_single_file(tmp_path: Path) -> None:
    f = tmp_path / "job.py"
    f.write_text("print(1)\n")
    assert list_members(pack(f)) == ["job.py"]
    unpack(pack(f), tmp_path / "o")
    assert (tmp_path / "o" / "job.py").read_text() == "print(1)\n"


def test_pack_refuses_symlinks_and_devices(tmp_path: Path) -> None:
    src = make_src(tmp_path / "a")
    (src / "link").symlink_to("/etc/passwd")
    with pytest.raises(UnsafePath, match="symlink"):
        pack(src)
    (src / "link").unlink()
    os.mkfifo(src / "fifo")
    with pytest.raises(UnsafePath, match="FIFO"):
        pack(src)


def evil_tar(*members: tuple[str, str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, payload in members:
            ti = tarfile.TarInfo(name)
            if kind == "file":
                assert isinstance(payload, bytes)
                ti.size = len(payload)
                tf.addfile(ti, io.BytesIO(payload))
                continue
            ti.type = {
                "sym": tarfile.SYMTYPE,
                "hard": tarfile.LNKTYPE,
                "chr": tarfile.CHRTYPE,
                "fifo": tarfile.FIFOTYPE,
                "dir": tarfile.DIRTYPE,
            }[kind]
            if kind in ("sym", "hard"):
                ti.linkname = str(payload)
            tf.addfile(ti)
    return buf.getvalue()


@pytest.mark.parametrize(
    "members",
    [
        [("../escape.txt", "file", b"x")],
        [("ok/../../escape.txt", "file", b"x")],
        [("/etc/escape.txt", "file", b"x")],
        [("C:/escape.txt", "file", b"x")],
        [("a\\..\\escape.txt", "file", b"x")],
        [("link", "sym", "/etc/passwd")],
        [("link", "sym", "../../outside"), ("link/pwned", "file", b"x")],
        [("hard", "hard", "/etc/passwd")],
        [("dev", "chr", "")],
        [("fifo", "fifo", "")],
        [("dup", "file", b"1"), ("dup", "file", b"2")],
        [("f", "file", b"1"), ("f/under", "file", b"2")],
    ],
    ids=lambda m: m[-1][0],
)
def test_unpack_refuses_hostile_archives(tmp_path: Path, members: list) -> None:
    data = evil_tar(("fine.txt", "file", b"fine"), *members)
    (tmp_path / "work").mkdir()
    dest = tmp_path / "work" / "dest"
    with pytest.raises(UnsafePath):
        unpack(data, dest)
    assert not dest.exists()
    assert list((tmp_path / "work").iterdir()) == []  # nothing partial left behind
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "work" / "escape.txt").exists()


def test_unpack_accepts_dot_root_entry(tmp_path: Path) -> None:
    data = evil_tar(("./", "dir", ""), ("./a.txt", "file", b"a"))
    assert unpack(data, tmp_path / "d") == ["a.txt"]


def test_unpack_limits_and_garbage(tmp_path: Path) -> None:
    src = make_src(tmp_path / "a")
    with pytest.raises(TooLarge):
        unpack(pack(src), tmp_path / "o1", max_bytes=100)
    with pytest.raises(TooLarge):
        unpack(pack(src), tmp_path / "o2", max_entries=2)
    import gzip

    bomb = gzip.compress(b"\0" * (20 * 1024 * 1024))
    with pytest.raises(TooLarge):
        unpack(bomb, tmp_path / "o3", max_bytes=1024)
    with pytest.raises(StoreError, match="tar"):
        unpack(b"definitely not a tar archive" * 30, tmp_path / "o4")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(StoreError, match="not an empty directory"):
        unpack(pack(src), tmp_path / "full")


def test_unpack_refuses_file_used_as_directory_in_either_order(tmp_path: Path) -> None:
    # the child listed before the file: refused at validation, not by a failed write half-way
    for order in (
        [("f/under", "file", b"2"), ("f", "file", b"1")],
        [("f", "file", b"1"), ("f/under", "file", b"2")],
    ):
        with pytest.raises(UnsafePath, match="inside a file"):
            list_members(evil_tar(*order))
        with pytest.raises(UnsafePath, match="inside a file"):
            unpack(evil_tar(*order), tmp_path / "d")
        assert not (tmp_path / "d").exists()


def test_unpack_refuses_broken_gzip(tmp_path: Path) -> None:
    import gzip

    good = gzip.compress(pack(make_src(tmp_path / "a")), mtime=0)
    for bad in (b"\x1f\x8b" + b"garbage" * 20, good[: len(good) // 2]):
        with pytest.raises(StoreError, match="not a readable tar"):
            unpack(bad, tmp_path / "o")
        assert not (tmp_path / "o").exists()


def test_unpack_sets_mtime(tmp_path: Path) -> None:
    src = make_src(tmp_path / "a")
    unpack(pack(src, compress=True), tmp_path / "o", mtime=315532800)
    paths = [tmp_path / "o", *(tmp_path / "o").rglob("*")]
    assert len(paths) > 5 and {os.lstat(p).st_mtime for p in paths} == {315532800}


def test_default_limits_are_the_strictest() -> None:
    from sandrun_p2p.store import bundle

    assert bundle.DEFAULT_MAX_BYTES == 1 << 30 and bundle.DEFAULT_MAX_ENTRIES == 10_000


def test_pack_include_and_skip_unsafe(tmp_path: Path) -> None:
    src = make_src(tmp_path / "a")
    assert list_members(pack(src, include=lambda rel: rel.split("/", 1)[0] == "pkg")) == [
        "pkg/",
        "pkg/__init__.py",
        "pkg/sub/",
        "pkg/sub/data.bin",
    ]
    clean = pack(src)
    (src / "link").symlink_to("/etc/passwd")
    os.mkfifo(src / "pkg" / "fifo")
    (src / "back\\slash").write_text("x")
    with pytest.raises(UnsafePath, match="backslash"):
        pack(src, include=lambda rel: rel != "link" and rel != "pkg/fifo")
    assert pack(src, skip_unsafe=True) == clean  # left out, never followed or opened
    with pytest.raises(TooLarge):
        pack(src, skip_unsafe=True, max_entries=3)
    with pytest.raises(TooLarge):
        pack(src, skip_unsafe=True, max_bytes=1000)
