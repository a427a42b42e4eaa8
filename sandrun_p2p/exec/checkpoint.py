"""Checkpoints: the job-written state in ``$SANDRUN_CHECKPOINT_DIR``, its snapshots and its hash chain.

What the chain contains (deterministic by construction):
  * A *checkpoint entry* is a top-level file or directory of the checkpoint dir whose name does not
    start with ``.`` (write ``.tmp`` then rename, so half-written state is never an entry).
  * Its hash covers its name and every regular file in it (relative path, size, SHA-256).
  * The chain folds :func:`protocol.trace.checkpoint_link` over the entries present at the end of the
    run, in name order (use zero-padded numbers: ``000001``, ``000002``...).
The executor's snapshots (every ``checkpoint_interval`` seconds and on stop) are timing-dependent,
so they only serve resumption: the trace records the chain of the final directory, which depends
only on what the job wrote. A job that writes entries append-only gets, after a kill and a resume
from any snapshot, the same final entries, hence the same chain and trace root as an uninterrupted
run, and the snapshot's chain is a prefix of the final one.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..protocol.encoding import sha256, tagged_hash
from ..protocol.trace import checkpoint_link
from .bundles import pack_dir, safe_extract
from .errors import BundleError
from .tracing import hash_file, is_regular, walk_files

ZERO = bytes(32)


def _entries(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.iterdir(), key=lambda p: p.name):
        if p.name.startswith("."):
            continue
        if is_regular(p) or (p.is_dir() and not p.is_symlink()):
            out.append(p.name)
    return out


def entry_hash(root: Path, name: str) -> bytes:
    p = root / name
    files = [["", *hash_file(p)]] if is_regular(p) else [[rel, *hash_file(p / rel)] for rel in walk_files(p)]
    return tagged_hash("checkpoint-entry", [name, files])


def chain(root: Path) -> tuple[bytes, ...]:
    """The checkpoint chain of a checkpoint directory (see module docstring)."""
    links, prev = [], ZERO
    for name in _entries(root):
        prev = checkpoint_link(prev, entry_hash(root, name))
        links.append(prev)
    return tuple(links)


@dataclass(frozen=True)
class Checkpoint:
    """A snapshot of the checkpoint dir: deterministic tar bytes plus the chain they hash to."""

    tar: bytes
    chain: tuple[bytes, ...]

    @property
    def sha256(self) -> bytes:
        return sha256(self.tar)


def snapshot(root: Path) -> Checkpoint:
    """Pack the checkpoint dir, and take its chain from what was packed: the job may be adding or writing an
    entry meanwhile, and a chain read from the live dir could then name entries the tar does not hold."""
    entries = set(_entries(root))
    # what a job wrote: never refused here (links, FIFOs are left out; no caps, as before the merge);
    # restore() applies the bundle caps to what it is given
    data = pack_dir(
        root,
        include=lambda rel: rel.split("/", 1)[0] in entries,
        max_entries=sys.maxsize,
        max_bytes=sys.maxsize,
    )
    with tempfile.TemporaryDirectory(prefix="sandrun-ckpt-") as td:
        safe_extract(data, Path(td), max_entries=sys.maxsize, max_bytes=sys.maxsize)
        return Checkpoint(data, chain(Path(td)))


def restore(source: Path | Checkpoint | bytes, dest: Path) -> tuple[bytes, ...]:
    """Fill the empty dir ``dest`` from a checkpoint; check a Checkpoint's chain; return the chain."""
    if isinstance(source, Path):
        if not source.is_dir():
            raise BundleError(f"checkpoint directory {source} does not exist")
        for rel in walk_files(source):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / rel, dest / rel, follow_symlinks=False)
        return chain(dest)
    data = source.tar if isinstance(source, Checkpoint) else source
    safe_extract(data, dest)
    got = chain(dest)
    if isinstance(source, Checkpoint) and source.chain and got != source.chain:
        raise BundleError("checkpoint content does not match its chain (tampered or truncated snapshot)")
    return got
