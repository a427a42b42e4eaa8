"""Helpers shared by the content-store tests (a unique module name: test dirs have no __init__.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "store"


def content(spec: dict) -> bytes:
    """Bytes of a vector entry (see tests/fixtures/store/cid_vectors.json 'content_rule')."""
    if "text" in spec:
        return spec["text"].encode("utf-8")
    return hashlib.shake_256(spec["seed"].encode("utf-8")).digest(spec["size"])


def build_tree(root: Path, entries: list[dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for e in entries:
        p = root / e["path"]
        if e.get("dir"):
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content(e))
    return root


def tree_of(root: Path) -> dict[str, bytes | None]:
    """{relative path: bytes (file) or None (directory)} of everything under ``root``."""
    out: dict[str, bytes | None] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = None if p.is_dir() else p.read_bytes()
    return out
