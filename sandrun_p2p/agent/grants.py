"""Bundle keys of encrypted jobs: the origin's key store, GRANT messages, opening a bundle before execution.

The origin of an encrypted job keeps its bundle key in ``<data_dir>/keys/<job_id>.key`` (directory 0700, file
0600), outside every sandbox, until the job settles or is refunded (keys of jobs that ended while the agent was
down are deleted at its next start). On NodeCore's ``RequestGrant`` it seals the key to each winner with
:func:`store.crypto.wrap_key` and publishes GRANT bodies of at most :data:`MAX_GRANTS` grants. A winner unwraps
its grant with its node key and opens the bundle before the executor sees it: only the plaintext tar reaches
the sandbox, never a key.

Results go the other way: when ``spec.result_key`` is set, :func:`seal_result` packs the staged result
directory (``outputs/``, ``stdout``, ``stderr`` and a copy of ``trace.cbor``) into the project's deterministic
tar and seals it to the client's per-job key (:func:`store.crypto.seal_to`); the executor stores only that
ciphertext, so the result CID is of the ciphertext. The trace itself is also stored in the clear under its own
``trace_cid``: peers verify roots against it, and its root hashes the plaintext files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..private_files import write_private
from ..protocol.jobspec import JobSpec
from ..store import bundle as store_bundle
from ..store import crypto
from ..store.errors import DecryptionError

#: grants per GRANT message (the wire format's limit)
MAX_GRANTS = 8


class BundleKeyError(Exception):
    """An encrypted job's bundle cannot be opened on this node (no grant, a wrong grant, altered bytes)."""


class KeyStore:
    """Bundle keys of the jobs this node announced, one 0600 file each under ``<data_dir>/keys``."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir) / "keys"

    def _path(self, job_id: bytes) -> Path:
        return self.dir / f"{job_id.hex()}.key"

    def put(self, job_id: bytes, key: bytes) -> Path:
        if len(key) != crypto.KEY_BYTES:
            raise ValueError(f"a bundle key is {crypto.KEY_BYTES} bytes")
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self._path(job_id)
        write_private(path, key)
        return path

    def get(self, job_id: bytes) -> bytes | None:
        try:
            return self._path(job_id).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, job_id: bytes) -> bool:
        """Forget the key of a job that ended (settled or refunded); True when there was one."""
        try:
            self._path(job_id).unlink()
            return True
        except FileNotFoundError:
            return False

    def sweep(self, open_jobs: set[bytes]) -> int:
        """Delete the keys (and half-written ``.tmp`` files) of every job not in ``open_jobs``: those whose end an
        earlier process did not see through (stopped between the end and the deletion)."""
        if not self.dir.is_dir():
            return 0
        n = 0
        for p in self.dir.iterdir():
            hex_id, _, kind = p.name.partition(".")
            if kind not in ("key", "key.tmp", "tmp"):  # "<job>.tmp": written by earlier versions
                continue
            try:
                job_id = bytes.fromhex(hex_id)
            except ValueError:
                continue
            if kind != "key" or job_id not in open_jobs:
                p.unlink(missing_ok=True)
                n += 1
        return n


def grant_bodies(job_id: bytes, key: bytes, nodes: tuple[bytes, ...] | list[bytes]) -> list[dict[str, Any]]:
    """GRANT message bodies sealing ``key`` to each of ``nodes``, at most :data:`MAX_GRANTS` per body."""
    grants = [[n, crypto.wrap_key(key, n)] for n in nodes]
    return [{"job": job_id, "grants": grants[i : i + MAX_GRANTS]} for i in range(0, len(grants), MAX_GRANTS)]


def open_for_execution(
    bundle: bytes, spec: JobSpec, grant: bytes, node_key: Any, stored: bytes | None
) -> bytes:
    """The plaintext bundle to execute: ``bundle`` itself unless ``spec.encrypted``, else opened with the stored
    key (this node is the origin) or the key unwrapped from ``grant``; :class:`BundleKeyError` says why not."""
    if not spec.encrypted:
        return bundle
    try:
        if stored:
            key = stored
        elif grant:
            key = crypto.unwrap_key(grant, node_key)
        else:
            raise BundleKeyError("encrypted bundle: the origin granted this node no bundle key")
        return crypto.open_bundle(bundle, key)
    except (DecryptionError, ValueError) as e:
        raise BundleKeyError(f"encrypted bundle: {e}") from None


def seal_result(stage: Path, result_key: bytes) -> bytes:
    """The result directory ``stage`` as a deterministic tar sealed to the client's per-job Ed25519 key."""
    return crypto.seal_to(store_bundle.pack(stage), result_key)
