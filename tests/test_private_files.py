"""write_private: owner-only, atomic, and it tightens a file that had a looser mode."""

from __future__ import annotations

import stat
from pathlib import Path

from sandrun_p2p.private_files import write_private


def test_write_private_replaces_a_looser_file_with_an_owner_only_one(tmp_path: Path) -> None:
    p = tmp_path / "secret"
    p.write_text("old")
    p.chmod(0o644)
    (tmp_path / "secret.tmp").write_text("stale")
    (tmp_path / "secret.tmp").chmod(0o666)
    write_private(p, "new\n", fsync=True)
    assert p.read_text() == "new\n" and stat.S_IMODE(p.stat().st_mode) == 0o600
    write_private(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01" and stat.S_IMODE(p.stat().st_mode) == 0o600
    assert sorted(x.name for x in tmp_path.iterdir()) == ["secret"]
