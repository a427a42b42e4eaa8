"""Shared helpers for the client tests: results built the way the agent stores them."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from sandrun_p2p.exec.tracing import build_trace, collect_outputs
from sandrun_p2p.protocol.encoding import canonical
from sandrun_p2p.protocol.jobspec import JobSpec, Manifest
from sandrun_p2p.protocol.trace import Trace
from sandrun_p2p.store.bundle import pack

MANIFEST = {
    "entrypoint": "main.py",
    "outputs": ["out/**", "summary.json"],
    "timeout": 20,
    "memory_mb": 128,
    "compare": {"round_files": ["summary.json"], "digits": 4},
}


def spec_for(manifest: dict | None = None, **kw: object) -> JobSpec:
    d = {
        "code_cid": "bafkreiabcdefgh",
        "manifest": manifest or MANIFEST,
        "redundancy": 1,
        "deadline": int(time.time()) + 600,
        "nonce": b"\x01" * 16,
        "payment_wei": 10**15,
    }
    d.update(kw)
    return JobSpec.from_dict(d)


def make_result(tmp: Path, spec: JobSpec, files: dict[str, str] | None = None) -> tuple[Path, Trace]:
    """A result directory (outputs/, stdout, stderr, trace.cbor) as the agent stores it, and its trace."""
    files = files or {
        "out/a.txt": "alpha\n",
        "out/sub/b.txt": "beta\n",
        "summary.json": '{"mean": 3.14159265}\n',
        "scratch.tmp": "not an output\n",
    }
    work = tmp / "work"
    for rel, text in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
    stage = tmp / "stage"
    (stage / "outputs").mkdir(parents=True)
    m: Manifest = spec.manifest
    outs = collect_outputs(work, m, stage / "outputs")
    (stage / "stdout").write_text("hello\n")
    (stage / "stderr").write_text("")
    trace = build_trace(
        spec.job_id,
        m,
        status="exited",
        exit_code=0,
        stdout=stage / "stdout",
        stderr=stage / "stderr",
        outputs=outs,
    )
    (stage / "trace.cbor").write_bytes(canonical(trace.to_dict()))
    shutil.rmtree(work)
    return stage, trace


def tar_of(stage: Path) -> bytes:
    return pack(stage)
