"""``KEY=VALUE`` command-line assignments whose values are read as TOML (``3``, ``0.5``, ``true``, ``"text"``,
``[1, 2]``; anything else is taken as a plain string), as ``sims --set`` and ``sandrun-p2p testnet --core`` take."""

from __future__ import annotations

import tomllib
from typing import Any


def value(text: str) -> Any:
    """``text`` as a TOML value, or the text itself when it is not one."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse(items: list[str], flag: str) -> dict[str, Any]:
    """``{KEY: value}`` of ``KEY=VALUE`` items; raise ValueError naming ``flag`` for an item without ``=``."""
    out = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} expects KEY=VALUE, got {item!r}")
        out[key] = value(val)
    return out
