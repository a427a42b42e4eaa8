"""``sandrun-p2p exec`` through its module entry point."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from exec_helpers import make_job

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


def _exec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandrun_p2p.exec.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_json_twice_same_root(tmp_path: Path) -> None:
    job = make_job(tmp_path, "open('o.txt','w').write('1')\nraise SystemExit(3)\n")
    (tmp_path / "job.json").write_text(json.dumps({"entrypoint": "main.py", "outputs": ["*.txt"]}))
    args = [
        "--code",
        str(job),
        "--manifest",
        str(tmp_path / "job.json"),
        "--json",
        "--work-root",
        str(tmp_path / "w"),
    ]
    a, b = _exec(*args), _exec(*args)
    assert a.returncode == 0, a.stderr
    ja, jb = json.loads(a.stdout), json.loads(b.stdout)
    assert ja["trace_root"] == jb["trace_root"] and ja["exit_code"] == 3
    assert set(ja["outputs"]) == {"o.txt"} and ja["timed_out"] is False and ja["oom_killed"] is False
    assert ja["enforced"]["network"] is True and len(ja["stdout_sha256"]) == 64


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ('{"entrypoint": "main.py", "timeout": "ten"}', "timeout"),
        ("{not json", "not valid JSON"),
        ('{"entrypoint": "missing.py"}', "entrypoint 'missing.py'"),
    ],
)
def test_cli_bad_input_exits_2(tmp_path: Path, manifest: str, message: str) -> None:
    job = make_job(tmp_path, "print(1)\n")
    (tmp_path / "job.json").write_text(manifest)
    r = _exec(
        "--code", str(job), "--manifest", str(tmp_path / "job.json"), "--work-root", str(tmp_path / "w")
    )
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
