"""Laying out a run's result for the store: in place when the executor's directory has the layout, else a copy;
the stored result (its CID) is the same either way."""

from __future__ import annotations

from pathlib import Path

from sandrun_p2p.agent.runtime import _stage_result
from sandrun_p2p.exec.result import ExecResult
from sandrun_p2p.store import cid_of_path

TRACE = b"\xa1atb"  # any bytes: the trace as the runtime encoded it


def _run_dir(root: Path) -> Path:
    (root / "outputs" / "sub").mkdir(parents=True)
    (root / "outputs" / "out.txt").write_bytes(b"42\n")
    (root / "outputs" / "sub" / "more.bin").write_bytes(bytes(range(256)))
    (root / "stdout").write_bytes(b"hello\n")
    (root / "stderr").write_bytes(b"")
    return root


def _result(outputs: Path, stdout: Path, stderr: Path) -> ExecResult:
    return ExecResult(trace=None, outputs_dir=outputs, stdout=stdout, stderr=stderr)  # type: ignore[arg-type]


def test_the_sandbox_layout_is_staged_in_place_and_stores_as_a_copy_would(tmp_path: Path) -> None:
    own = _run_dir(tmp_path / "exec" / "results" / "run-1")
    inodes = {p: p.stat().st_ino for p in own.rglob("*")}
    stage = _stage_result(
        tmp_path / "results" / "job", _result(own / "outputs", own / "stdout", own / "stderr"), TRACE
    )
    assert stage == own and not (tmp_path / "results").exists()  # nothing copied
    assert {p: p.stat().st_ino for p in inodes} == inodes
    assert sorted(p.name for p in own.iterdir()) == ["outputs", "stderr", "stdout", "trace.cbor"]
    assert (own / "trace.cbor").read_bytes() == TRACE

    # another executor's layout (streams kept apart from the outputs) is copied into the stage
    other = _run_dir(tmp_path / "other")
    (other / "streams").mkdir()
    (other / "stdout").rename(other / "streams" / "out")
    (other / "stderr").rename(other / "streams" / "err")
    copied = _stage_result(
        tmp_path / "results" / "job",
        _result(other / "outputs", other / "streams" / "out", other / "streams" / "err"),
        TRACE,
    )
    assert copied == tmp_path / "results" / "job"
    assert cid_of_path(copied) == cid_of_path(stage)  # the same result, stored the same


def test_a_directory_with_anything_else_in_it_is_copied_not_stored_whole(tmp_path: Path) -> None:
    own = _run_dir(tmp_path / "run")
    (own / "scratch").write_bytes(b"not part of the result")
    stage = _stage_result(tmp_path / "stage", _result(own / "outputs", own / "stdout", own / "stderr"), TRACE)
    assert stage == tmp_path / "stage"
    assert sorted(p.name for p in stage.iterdir()) == ["outputs", "stderr", "stdout", "trace.cbor"]
