"""Results are checked against the accepted trace root before anything is written out."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandrun_p2p.client.errors import ResultRejected
from sandrun_p2p.client.verify import META_DIR, verify_and_write
from sandrun_p2p.protocol.encoding import canonical

from .helpers import make_result, spec_for, tar_of


def test_good_result_is_written_with_its_trace(tmp_path: Path) -> None:
    spec = spec_for()
    stage, trace = make_result(tmp_path, spec)
    dest = tmp_path / "dest"
    got = verify_and_write(tar_of(stage), spec, trace.root, dest)
    assert got.root == trace.root
    assert (dest / "out/a.txt").read_text() == "alpha\n"
    assert (dest / "out/sub/b.txt").read_text() == "beta\n"
    assert (dest / "summary.json").exists() and not (dest / "scratch.tmp").exists()
    assert (dest / META_DIR / "stdout").read_text() == "hello\n"
    assert '"root"' in (dest / META_DIR / "trace.json").read_text()


def test_numeric_compare_rule_applies(tmp_path: Path) -> None:
    """summary.json is hashed rounded to 4 digits: a different last digit still verifies."""
    spec = spec_for()
    stage, trace = make_result(tmp_path, spec)
    (stage / "outputs/summary.json").write_text('{"mean": 3.14159999}\n')
    verify_and_write(tar_of(stage), spec, trace.root, tmp_path / "dest")


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda s: (s / "outputs/out/a.txt").write_text("ALPHA\n"), "out/a.txt' does not match"),
        (
            lambda s: (s / "outputs/summary.json").write_text('{"mean": 2.71}\n'),
            "summary.json' does not match",
        ),
        (lambda s: (s / "outputs/extra.txt").write_text("x"), "extra: ['extra.txt']"),
        (lambda s: (s / "outputs/out/sub/b.txt").unlink(), "missing: ['out/sub/b.txt']"),
        (lambda s: (s / "stdout").write_text("forged\n"), "stdout of the result"),
        (lambda s: (s / "trace.cbor").write_bytes(b"\xa0"), "trace record is malformed"),
        (lambda s: (s / "trace.cbor").unlink(), "no trace.cbor"),
    ],
)
def test_tampered_results_are_refused_and_nothing_is_written(tmp_path: Path, tamper, message: str) -> None:
    spec = spec_for()
    stage, trace = make_result(tmp_path, spec)
    tamper(stage)
    dest = tmp_path / "dest"
    with pytest.raises(ResultRejected, match=message.replace("[", r"\[").replace("]", r"\]")):
        verify_and_write(tar_of(stage), spec, trace.root, dest)
    assert not dest.exists()


def test_trace_rewritten_to_match_tampered_output_is_refused(tmp_path: Path) -> None:
    """Recomputing the trace over altered outputs changes its root: the accepted root no longer matches."""
    spec = spec_for()
    stage, trace = make_result(tmp_path / "a", spec)
    _, forged = make_result(
        tmp_path / "b",
        spec,
        {"out/a.txt": "evil\n", "out/sub/b.txt": "beta\n", "summary.json": '{"mean": 3.14159265}\n'},
    )
    (stage / "outputs/out/a.txt").write_text("evil\n")
    (stage / "trace.cbor").write_bytes(canonical(forged.to_dict()))
    with pytest.raises(ResultRejected, match="not to the accepted root"):
        verify_and_write(tar_of(stage), spec, trace.root, tmp_path / "dest")


def test_result_of_another_job_is_refused(tmp_path: Path) -> None:
    spec = spec_for()
    other = spec_for(nonce=b"\x02" * 16)
    stage, trace = make_result(tmp_path, other)
    with pytest.raises(ResultRejected, match="another job"):
        verify_and_write(tar_of(stage), spec, trace.root, tmp_path / "dest")


def test_unsafe_archive_is_refused(tmp_path: Path) -> None:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ResultRejected, match="unsafe or malformed"):
        verify_and_write(buf.getvalue(), spec_for(), b"\x00" * 32, tmp_path / "dest")
    assert not (tmp_path / "escape.txt").exists()
