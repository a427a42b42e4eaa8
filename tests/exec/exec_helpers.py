"""Helpers shared by the executor tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

from sandrun_p2p.protocol.jobspec import Manifest

JOB_ID = bytes(range(32))


def make_job(tmp_path: Path, code: str, name: str = "main.py", **files: str) -> Path:
    d = tmp_path / "job"
    d.mkdir(exist_ok=True)
    (d / name).write_text(textwrap.dedent(code))
    for k, v in files.items():
        (d / k).write_text(v)
    return d


def manifest(**kw: object) -> Manifest:
    d: dict[str, object] = {"entrypoint": "main.py", "timeout": 20, "memory_mb": 128}
    d.update(kw)
    return Manifest.from_dict(d)
