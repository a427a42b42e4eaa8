"""Compiled contract artifacts (written by contracts/compile.js; never edit by hand)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

HERE = Path(__file__).resolve().parent


@cache
def load(name: str, directory: str | None = None) -> dict:
    """The artifact of contract ``name``: abi, bytecode, deployedBytecode, compiler and settings."""
    path = Path(directory) / f"{name}.json" if directory else HERE / f"{name}.json"
    with open(path, encoding="utf-8") as f:
        return json.load(f)
