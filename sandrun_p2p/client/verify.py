"""Check a fetched result against the accepted trace root before anything is written out.

A result (what an executor stored under its ``result_cid``) is a directory: ``outputs/`` (raw output
files), ``stdout``, ``stderr`` and ``trace.cbor`` (the canonical trace). It is accepted only when the
trace hashes to the root the quorum agreed on, belongs to this job, and every file hashes to what the
trace says (with the manifest's numeric compare rule applied, as the executor did).

When the spec has a ``result_key``, what is stored under ``result_cid`` is not the directory but that
directory's deterministic tar sealed to the client's per-job key (``store.crypto.seal_to``; the CID is of the
ciphertext). :func:`open_result` opens it with the seed kept in the job record; the checks above then run on the
plaintext, whose trace root is what the quorum agreed on.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from nacl.signing import SigningKey

from ..exec.tracing import hash_file, walk_files
from ..protocol.encoding import decode_canonical
from ..protocol.errors import ProtocolError
from ..protocol.jobspec import JobSpec
from ..protocol.trace import Trace
from ..store import bundle as store_bundle
from ..store import crypto
from ..store.errors import DecryptionError, StoreError
from .errors import ResultRejected

META_DIR = ".sandrun"  # stdout, stderr and the trace go here, beside the outputs


def check_result_dir(src: Path, spec: JobSpec, accepted_root: bytes) -> Trace:
    """Verify an unpacked result directory; return its trace or raise :class:`ResultRejected`."""
    try:
        trace_bytes = (src / "trace.cbor").read_bytes()
    except FileNotFoundError:
        raise ResultRejected("the result has no trace.cbor; refusing it") from None
    try:
        trace = Trace.from_dict(decode_canonical(trace_bytes, max_bytes=1 << 24))
    except ProtocolError as e:
        raise ResultRejected(f"the result's trace record is malformed ({e}); refusing it") from None
    if trace.root != accepted_root:
        raise ResultRejected(
            f"the result's trace hashes to {trace.root.hex()[:16]}..., not to the accepted root "
            f"{accepted_root.hex()[:16]}...; it was altered after verification. Nothing was written"
        )
    if trace.job_id != spec.job_id:
        raise ResultRejected("the result's trace belongs to another job; refusing it")
    for name, want in (("stdout", trace.stdout_sha256), ("stderr", trace.stderr_sha256)):
        p = src / name
        if not p.is_file() or hash_file(p)[1] != want:
            raise ResultRejected(f"{name} of the result does not match the accepted trace; refusing it")
    out_dir = src / "outputs"
    present = walk_files(out_dir) if out_dir.is_dir() else []
    listed = {o.path: o for o in trace.outputs}
    extra = sorted(set(present) - set(listed))
    missing = sorted(set(listed) - set(present))
    if extra or missing:
        raise ResultRejected(
            f"the result's files differ from the accepted trace (extra: {extra or 'none'}, missing: "
            f"{missing or 'none'}); refusing it"
        )
    rounded = set(spec.manifest.compare.round_files)
    for path, o in sorted(listed.items()):
        digits = spec.manifest.compare.digits if path in rounded else None
        size, digest = hash_file(out_dir / path, normalize_digits=digits)
        if size != o.size or digest != o.sha256:
            raise ResultRejected(
                f"output {path!r} does not match the accepted trace root (sha256 {digest.hex()[:16]}... "
                f"instead of {o.sha256.hex()[:16]}...); it was altered after verification. Nothing was written"
            )
    return trace


def open_result(data: bytes, spec: JobSpec, result_seed: bytes) -> bytes:
    """The plaintext result tar of a job whose results are sealed to ``spec.result_key``.

    ``result_seed`` is the Ed25519 seed kept in the job record; :class:`ResultRejected` when it is not the key
    the spec names, or the stored bytes are not a result sealed to it (altered, truncated, or plaintext)."""
    if len(result_seed) != 32 or bytes(SigningKey(result_seed).verify_key) != spec.result_key:
        raise ResultRejected(
            "the job record's result key is not the one the job spec names; this record cannot open the "
            "result (was it submitted from another client home?)"
        )
    try:
        return crypto.open_sealed(data, result_seed)
    except DecryptionError as e:
        raise ResultRejected(
            f"the sealed result cannot be opened with this job's result key ({e}); refusing it"
        ) from None


def verify_and_write(result_tar: bytes, spec: JobSpec, accepted_root: bytes, dest: Path) -> Trace:
    """Unpack a result tar, verify it, then move the outputs into ``dest`` (stdout/stderr/trace under
    ``dest/.sandrun/``). Nothing is written to ``dest`` unless every check passes."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".sandrun-result-", dir=dest.parent) as td:
        staged = Path(td) / "r"
        try:
            store_bundle.unpack(result_tar, staged)
        except StoreError as e:
            raise ResultRejected(f"the result archive is unsafe or malformed ({e}); refusing it") from None
        trace = check_result_dir(staged, spec, accepted_root)
        dest.mkdir(parents=True, exist_ok=True)
        outs = staged / "outputs"
        for rel in walk_files(outs) if outs.is_dir() else []:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(outs / rel, target)
        meta = dest / META_DIR
        meta.mkdir(exist_ok=True)
        for name in ("stdout", "stderr", "trace.cbor"):
            shutil.copyfile(staged / name, meta / name)
        (meta / "trace.json").write_text(json.dumps(trace_json(trace), indent=1) + "\n")
    return trace


def trace_json(trace: Trace) -> dict:
    return {
        "root": trace.root.hex(),
        "job_id": trace.job_id.hex(),
        "status": trace.status,
        "exit_code": trace.exit_code,
        "stdout_sha256": trace.stdout_sha256.hex(),
        "stderr_sha256": trace.stderr_sha256.hex(),
        "outputs": [{"path": o.path, "size": o.size, "sha256": o.sha256.hex()} for o in trace.outputs],
        "checkpoints": [c.hex() for c in trace.checkpoints],
    }
