"""Content store: IPFS-compatible CIDs for job bundles, inputs, outputs, traces and checkpoints.

>>> store = open_store(data_dir, ipfs_api=None)        # embedded (default), or "/ip4/127.0.0.1/tcp/5001"
>>> cid = await store.put_bytes(b"...")                 # CIDv1 base32, same as `ipfs add --cid-version 1
...                                                     #   --raw-leaves --chunker size-262144`
>>> data = await store.get(cid)                         # re-hashed on every read

See :class:`ContentStore` for the whole interface; :mod:`.crypto` seals bundles and results,
:mod:`.bundle` packs and safely unpacks code bundles.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import ContentStore, Fetcher, GcStats, Limits, ObjectInfo
from .cid import Cid, normalize_cid, parse_cid
from .embedded import EmbeddedStore
from .errors import (
    CidMismatch,
    CorruptObject,
    DecryptionError,
    InvalidCid,
    NotAFile,
    NotFound,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
    TooLarge,
    UnsafePath,
    Unsupported,
)
from .importer import cid_of_bytes, cid_of_path

__all__ = [
    "Cid",
    "CidMismatch",
    "ContentStore",
    "CorruptObject",
    "DecryptionError",
    "EmbeddedStore",
    "Fetcher",
    "GcStats",
    "InvalidCid",
    "Limits",
    "NotAFile",
    "NotFound",
    "ObjectInfo",
    "StoreError",
    "StoreTimeout",
    "StoreUnavailable",
    "TooLarge",
    "UnsafePath",
    "Unsupported",
    "cid_of_bytes",
    "cid_of_path",
    "normalize_cid",
    "open_store",
    "parse_cid",
]


def open_store(
    data_dir: str | None,
    ipfs_api: str | None = None,
    *,
    fetcher: Fetcher | None = None,
    limits: Limits | None = None,
    **options: object,
) -> ContentStore:
    """The store the configuration asks for: embedded under ``data_dir``, or the IPFS daemon at ``ipfs_api``.

    ``ipfs_api`` is a multiaddr (``/ip4/127.0.0.1/tcp/5001``) or URL (``http://127.0.0.1:5001``).
    The IPFS backend still keeps its bookkeeping (which CIDs it pinned) under ``data_dir``.
    """
    base = Path(data_dir) if data_dir is not None else default_data_dir()
    if ipfs_api:
        from .ipfs import IpfsStore

        return IpfsStore(ipfs_api, base, fetcher=fetcher, limits=limits, **options)  # type: ignore[arg-type]
    return EmbeddedStore(base, fetcher=fetcher, limits=limits, **options)  # type: ignore[arg-type]


def default_data_dir() -> Path:
    """``$SANDRUN_P2P_HOME`` or ``~/.sandrun-p2p``."""
    env = os.environ.get("SANDRUN_P2P_HOME")
    return Path(env).expanduser() if env else Path.home() / ".sandrun-p2p"
