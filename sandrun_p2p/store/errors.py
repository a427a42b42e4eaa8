"""Errors raised by the content store. Every message names the CID, path or API address it is about."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every content-store error."""


class InvalidCid(StoreError, ValueError):
    """A string that is not a CID this store understands (CIDv0, or CIDv1 raw/dag-pb with sha2-256)."""


class NotFound(StoreError, KeyError):
    """The CID (or one of its blocks) is not in the store and no peer supplied it."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "not found"


class CorruptObject(StoreError):
    """Stored or received bytes do not hash to the CID they are filed under, or a DAG is malformed."""


class TooLarge(StoreError):
    """An object, block, directory or fetch exceeds a configured size limit."""


class UnsafePath(StoreError):
    """A path that would escape its destination (``..``, absolute, symlink, hardlink, device, bad name)."""


class Unsupported(StoreError):
    """A valid IPFS object of a kind this store does not handle (HAMT-sharded directory, UnixFS symlink, ...)."""


class NotAFile(StoreError):
    """``get`` was asked for a directory, or ``get_dir`` for a file."""


class StoreUnavailable(StoreError):
    """The IPFS daemon cannot be reached or answered with an error. The message names the API address."""


class StoreTimeout(StoreUnavailable, TimeoutError):
    """The IPFS daemon (or a peer fetch) did not answer in time. The message names the API address."""


class CidMismatch(StoreError):
    """The IPFS daemon returned a different CID than the one computed locally for the same content."""


class DecryptionError(StoreError):
    """Ciphertext that the given key cannot open (wrong key, tampered or truncated data)."""
