"""Files only their owner may read (keys, tokens, client records): written whole, then renamed into place."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, data: bytes | str, *, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically: a reader sees the old file or the new one, never a
    part, and an existing file with a looser mode is replaced rather than reused. ``fsync``: flush to disk first
    (for a key that must survive a power cut once it was announced)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a stale .tmp left with another mode
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
