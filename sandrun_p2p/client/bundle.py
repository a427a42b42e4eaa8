"""Pack a job's code (a file or a directory) and seal it, checking the manifest against it first."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..protocol.jobspec import Manifest
from ..store import bundle as store_bundle
from ..store import crypto
from ..store.errors import StoreError
from .errors import BadJob


@dataclass(frozen=True)
class PreparedBundle:
    data: bytes  # what goes to the store (ciphertext when encrypted)
    key: bytes  # the bundle key, b"" when not encrypted
    members: tuple[str, ...]
    plain_size: int


def prepare(code: Path, manifest: Manifest, *, encrypt: bool = True) -> PreparedBundle:
    """Deterministic tar of ``code`` (a single file is packed under its base name), sealed when ``encrypt``.

    Raises :class:`BadJob` when the code cannot be packed or the manifest's entrypoint is not in it.
    """
    code = Path(code)
    if not code.exists():
        raise BadJob(f"code {code} does not exist; give a script file or a job directory with --code")
    try:
        tar = store_bundle.pack(code)
        members = tuple(m for m in store_bundle.list_members(tar) if not m.endswith("/"))
    except StoreError as e:
        raise BadJob(f"cannot pack {code}: {e}") from None
    if manifest.entrypoint not in members:
        shown = ", ".join(members[:8]) + (" ..." if len(members) > 8 else "")
        raise BadJob(
            f"manifest.entrypoint {manifest.entrypoint!r} is not in the code bundle (it holds: {shown or 'nothing'}); "
            "a single --code file is packed under its base name"
        )
    if not encrypt:
        return PreparedBundle(tar, b"", members, len(tar))
    key = crypto.new_bundle_key()
    return PreparedBundle(crypto.seal_bundle(tar, key), key, members, len(tar))
