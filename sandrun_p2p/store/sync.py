"""A blocking facade over any :class:`ContentStore`, for scripts, notebooks and non-trio callers.

Each call runs the async method in its own ``trio.run`` (about 0.1 ms of overhead), so it must not be
used from inside a trio task - there, await the store directly.

>>> with open_store_sync("/tmp/node") as s:
...     cid = s.put_bytes(b"hello")
...     assert s.get(cid) == b"hello"
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import trio

from . import open_store
from .base import ContentStore


class SyncStore:
    """Same methods as the wrapped store, minus ``async``."""

    def __init__(self, store: ContentStore) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            return trio.run(functools.partial(attr, *args, **kwargs))

        return call

    def __enter__(self) -> SyncStore:
        return self

    def __exit__(self, *exc: object) -> None:
        trio.run(self.store.close)


def open_store_sync(data_dir: str | None, ipfs_api: str | None = None, **options: Any) -> SyncStore:
    """:func:`open_store`, blocking."""
    return SyncStore(open_store(data_dir, ipfs_api, **options))
