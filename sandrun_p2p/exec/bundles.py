"""The executors' side of :mod:`sandrun_p2p.store.bundle`, the one tar packer/extractor of the project.

This is the one place where a bundle the store refuses (:class:`~sandrun_p2p.store.errors.StoreError`:
unsafe member, over the size/count caps, unreadable archive) becomes the executors' :class:`BundleError`
(reason "bad-bundle"). Packing here is of trees on this host (job directories, checkpoint dirs a job
wrote): symlinks, devices, FIFOs and names a bundle cannot hold are left out, never followed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..store import bundle as store_bundle
from ..store.errors import StoreError
from .errors import BundleError


@contextmanager
def bad_bundle() -> Iterator[None]:
    """Re-raise a :class:`StoreError` from the store's bundle code as :class:`BundleError`."""
    try:
        yield
    except StoreError as e:
        raise BundleError(str(e)) from None


def safe_extract(data: bytes, dest: Path, *, mtime: int = 0, **limits: int) -> list[str]:
    """Extract tar or tar.gz ``data`` into ``dest`` (absent or empty), every mtime set to ``mtime``."""
    with bad_bundle():
        return store_bundle.unpack(bytes(data), dest, mtime=mtime, **limits)


def pack_dir(
    root: Path, *, include: Callable[[str], bool] | None = None, gzip: bool = False, **limits: int
) -> bytes:
    """Deterministic tar (tar.gz with ``gzip``) of the regular files and directories under ``root``."""
    with bad_bundle():
        return store_bundle.pack(root, compress=gzip, include=include, skip_unsafe=True, **limits)
