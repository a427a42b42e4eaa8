"""Proof-of-compute trace: what an executor commits to, and its root.

The trace is a canonical record of a run (exit status, hashes of stdout/stderr, every output
file, the chain of checkpoint hashes, the environment digest). Resource usage is reported
next to it but is not part of the root: honest nodes differ there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .encoding import sha256, tagged_hash
from .errors import ProtocolError

STATUSES = ("exited", "timeout", "oom", "killed", "error")
MAX_TRACE_OUTPUTS = 4096


@dataclass(frozen=True)
class OutputFile:
    path: str  # relative, '/'-separated
    size: int
    sha256: bytes


@dataclass(frozen=True)
class Trace:
    """The canonical record of one execution of one job."""

    job_id: bytes
    env_digest: bytes
    status: str  # one of STATUSES
    exit_code: int
    stdout_sha256: bytes
    stderr_sha256: bytes
    outputs: tuple[OutputFile, ...] = ()
    checkpoints: tuple[bytes, ...] = ()  # chain of checkpoint hashes, oldest first
    usage: dict[str, Any] = field(default_factory=dict, compare=False)  # not part of the root

    def to_dict(self) -> dict[str, Any]:
        """The rooted part of the trace (usage excluded), canonical-encodable."""
        return {
            "job_id": self.job_id,
            "env": self.env_digest,
            "status": self.status,
            "exit_code": self.exit_code,
            "stdout": self.stdout_sha256,
            "stderr": self.stderr_sha256,
            "outputs": [[o.path, o.size, o.sha256] for o in sorted(self.outputs, key=lambda o: o.path)],
            "checkpoints": list(self.checkpoints),
        }

    @classmethod
    def from_dict(cls, d: Any, usage: dict[str, Any] | None = None) -> Trace:
        try:
            outs = tuple(OutputFile(str(p), int(s), bytes(h)) for p, s, h in d["outputs"])
            t = cls(
                job_id=bytes(d["job_id"]),
                env_digest=bytes(d["env"]),
                status=str(d["status"]),
                exit_code=int(d["exit_code"]),
                stdout_sha256=bytes(d["stdout"]),
                stderr_sha256=bytes(d["stderr"]),
                outputs=outs,
                checkpoints=tuple(bytes(c) for c in d["checkpoints"]),
                usage=dict(usage or {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError("bad-trace", f"trace record is malformed ({e})") from None
        if t.status not in STATUSES:
            raise ProtocolError("bad-trace", f"unknown status {t.status!r}")
        if len(outs) > MAX_TRACE_OUTPUTS:
            raise ProtocolError("bad-trace", "too many outputs")
        return t

    @property
    def root(self) -> bytes:
        return trace_root(self)


def trace_root(trace: Trace) -> bytes:
    """32-byte root of a trace: tagged SHA-256 of its canonical rooted part."""
    return tagged_hash("trace", trace.to_dict())


def computation_digest(trace: Trace) -> bytes:
    """The trace root with the job id left out: equal for two runs of the same code, manifest and inputs.

    A spot check re-runs a computation as a new job (its own id), so checks compare these, not trace roots.
    """
    return tagged_hash("computation", {**trace.to_dict(), "job_id": b""})


def checkpoint_link(previous: bytes, snapshot_sha256: bytes) -> bytes:
    """Next hash in a checkpoint chain: H(previous link || snapshot hash); the first previous is 32 zero bytes."""
    return sha256(b"sandrun-p2p/checkpoint\x00", previous, snapshot_sha256)


def env_digest(env: dict[str, str], runtime: str) -> bytes:
    """Digest of the deterministic environment a job ran in (variables and runtime identity)."""
    return tagged_hash("env", {"env": dict(sorted(env.items())), "runtime": runtime})


_NUMBER = re.compile(rb"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def normalize_numeric(data: bytes, digits: int) -> bytes:
    """Round every decimal number in ``data`` to ``digits`` significant digits.

    Used by a job's declared comparison rule for outputs that are not bit-stable (e.g.
    floating-point results that vary with BLAS kernels): the trace hashes the normalised
    bytes, so honest nodes agree on the root while the raw file is still stored.
    """

    def fmt(m: re.Match[bytes]) -> bytes:
        try:
            x = float(m.group(0))
        except ValueError:
            return m.group(0)
        if x == 0:
            return b"0"
        return (b"%." + str(digits).encode() + b"g") % x

    return _NUMBER.sub(fmt, data)
