"""Bounded memo tables for the protocol's hot paths: insertion-ordered, the oldest entry dropped first.

They are ``OrderedDict``s: dropping a plain dict's oldest entry (``del d[next(iter(d))]``) scans the slots that
earlier deletions left at its front, ~2 us at 4,096 entries against 0.17 us for ``popitem(last=False)``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remember(table: OrderedDict[K, V], key: K, value: V, size: int) -> V:
    """``table[key] = value``, first dropping the oldest entry when a new key would make it exceed ``size``."""
    if len(table) >= size and key not in table:
        table.popitem(last=False)
    table[key] = value
    return value
