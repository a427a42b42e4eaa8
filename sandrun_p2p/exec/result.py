"""What an executor returns for one run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..protocol.trace import Trace
from .checkpoint import Checkpoint


@dataclass
class ExecResult:
    """A finished run: its trace, where its outputs and captured streams are, and what it used."""

    trace: Trace
    outputs_dir: Path  # copies of the matched output files (raw bytes, before any compare rule)
    stdout: Path
    stderr: Path
    usage: dict[str, Any] = field(default_factory=dict)
    timed_out: bool = False
    oom_killed: bool = False
    checkpoint: Checkpoint | None = None  # final snapshot of the checkpoint dir, when it has entries

    @property
    def root(self) -> bytes:
        return self.trace.root

    def summary(self, enforced: dict[str, Any] | None = None) -> dict[str, Any]:
        """JSON-ready summary (hashes in hex)."""
        t = self.trace
        return {
            "job_id": t.job_id.hex(),
            "trace_root": self.root.hex(),
            "status": t.status,
            "exit_code": t.exit_code,
            "stdout_sha256": t.stdout_sha256.hex(),
            "stderr_sha256": t.stderr_sha256.hex(),
            "outputs": {o.path: o.sha256.hex() for o in t.outputs},
            "checkpoints": [c.hex() for c in t.checkpoints],
            "env_digest": t.env_digest.hex(),
            "timed_out": self.timed_out,
            "oom_killed": self.oom_killed,
            "usage": self.usage,
            "outputs_dir": str(self.outputs_dir),
            "stdout_path": str(self.stdout),
            "stderr_path": str(self.stderr),
            "enforced": dict(enforced or {}),
        }
