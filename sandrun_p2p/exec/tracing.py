"""Build the proof-of-compute trace of a finished run from the files it left behind."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any

from ..protocol.jobspec import Manifest
from ..protocol.trace import OutputFile, Trace, normalize_numeric
from . import environment


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate an output glob (``*``, ``?``, ``[..]``, ``**`` for any depth) to a full-path regex."""
    i, out = 0, []
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j].replace("\\", "\\\\")
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def walk_files(root: Path) -> list[str]:
    """Sorted '/'-separated relative paths of the regular files under ``root`` (links never followed).

    What a trace can see of a tree: outputs, checkpoint entries, and what a client checks a result against.
    """
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        base = Path(dirpath)
        for name in filenames:
            p = base / name
            if stat.S_ISREG(os.lstat(p).st_mode):
                out.append(p.relative_to(root).as_posix())
    return sorted(out)


def match_outputs(root: Path, patterns: tuple[str, ...]) -> list[str]:
    """Sorted relative paths of regular files under ``root`` matched by any pattern (no link following)."""
    regs = [glob_regex(p) for p in patterns]
    return [rel for rel in walk_files(root) if any(r.match(rel) for r in regs)]


def hash_file(path: Path, *, normalize_digits: int | None = None) -> tuple[int, bytes]:
    """(size, sha256) of a file; with ``normalize_digits`` the hash covers the numerically rounded bytes."""
    if normalize_digits is not None:
        data = path.read_bytes()
        return len(data), hashlib.sha256(normalize_numeric(data, normalize_digits)).digest()
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.digest()


def collect_outputs(work: Path, manifest: Manifest, dest: Path | None = None) -> tuple[OutputFile, ...]:
    """Hash the outputs of a run (applying the compare rule) and optionally copy them into ``dest``."""
    rounded = set(manifest.compare.round_files)
    outs = []
    for rel in match_outputs(work, manifest.outputs):
        src = work / rel
        digits = manifest.compare.digits if rel in rounded else None
        size, h = hash_file(src, normalize_digits=digits)
        outs.append(OutputFile(rel, size, h))
        if dest is not None:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest / rel, follow_symlinks=False)
    return tuple(outs)


def is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def build_trace(
    job_id: bytes,
    manifest: Manifest,
    *,
    status: str,
    exit_code: int,
    stdout: Path,
    stderr: Path,
    outputs: tuple[OutputFile, ...],
    checkpoints: tuple[bytes, ...] = (),
    usage: dict[str, Any] | None = None,
) -> Trace:
    """The canonical trace of a run from its captured streams and hashed outputs."""
    return Trace(
        job_id=job_id,
        env_digest=environment.digest(manifest),
        status=status,
        exit_code=exit_code,
        stdout_sha256=hash_file(stdout)[1],
        stderr_sha256=hash_file(stderr)[1],
        outputs=outputs,
        checkpoints=checkpoints,
        usage=dict(usage or {}),
    )
