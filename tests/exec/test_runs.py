"""Deterministic runs, traces, output matching, bad bundles and unmet requirements."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from exec_helpers import JOB_ID, make_job, manifest

from sandrun_p2p.exec import BundleError, ExecError, LocalExecutor
from sandrun_p2p.exec.bundles import pack_dir, safe_extract
from sandrun_p2p.exec.capabilities import capabilities, check_gpu
from sandrun_p2p.exec.tracing import match_outputs
from sandrun_p2p.protocol.jobspec import GpuRequirement, Manifest, SpecError

ENVY = """
    import os, socket, time
    print(hash("abc"), socket.gethostname(), os.getcwd(), os.getpid(), time.tzname)
    print(sorted(os.environ.items()))
    with open("out/a.txt", "w") as f:
        f.write("a")
    os.symlink("/etc/hostname", "out/link.txt")
    with open("out/sum.csv", "w") as f:
        f.write(os.environ.get("X", "1.0000001") + "\\n")
"""


async def test_same_job_twice_same_root(executor: LocalExecutor, tmp_path: Path) -> None:
    job = make_job(tmp_path, ENVY)
    (job / "out").mkdir()
    m = manifest(outputs=["out/**"], env={"FOO": "bar"})
    a = await executor.run(job, m, JOB_ID)
    b = await executor.run(job, m, JOB_ID)
    assert a.trace.exit_code == 0, a.stderr.read_text()
    assert a.root == b.root
    assert a.stdout.read_bytes() == b.stdout.read_bytes()
    out = a.stdout.read_text()
    assert "sandrun /work 2" in out and "('FOO', 'bar')" in out and "PYTHONHASHSEED" in out
    assert [o.path for o in a.trace.outputs] == ["out/a.txt", "out/sum.csv"]  # the symlink is not an output
    assert (a.outputs_dir / "out" / "a.txt").read_text() == "a"


async def test_compare_rule_rounds_listed_files(executor: LocalExecutor, tmp_path: Path) -> None:
    job = make_job(tmp_path, ENVY)
    (job / "out").mkdir()
    rule = {"round_files": ["out/sum.csv"], "digits": 6}
    a = await executor.run(job, manifest(outputs=["out/*.csv"], env={"X": "1.0000001"}, compare=rule), JOB_ID)
    b = await executor.run(job, manifest(outputs=["out/*.csv"], env={"X": "1.0000002"}, compare=rule), JOB_ID)
    assert a.trace.outputs[0].sha256 == b.trace.outputs[0].sha256
    assert (a.outputs_dir / "out/sum.csv").read_bytes() != (b.outputs_dir / "out/sum.csv").read_bytes()


def test_glob_matching(tmp_path: Path) -> None:
    for rel in ("a.txt", "b.log", "d/c.txt", "d/e/f.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    os.symlink(tmp_path / "a.txt", tmp_path / "l.txt")
    assert match_outputs(tmp_path, ("*.txt",)) == ["a.txt"]
    assert match_outputs(tmp_path, ("**/*.txt",)) == ["a.txt", "d/c.txt", "d/e/f.txt"]
    assert match_outputs(tmp_path, ("d/*",)) == ["d/c.txt"]


def _tar(members: list[tarfile.TarInfo], data: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for m in members:
            tf.addfile(m, io.BytesIO(data) if m.isreg() else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.linkname, m.size = kind, link, 1 if kind == tarfile.REGTYPE else 0
    return m


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_member("../evil.py"), "escapes"),
        (_member("a/../../evil.py"), "escapes"),
        (_member("/etc/evil.py"), "absolute"),
        (_member("link", tarfile.SYMTYPE, "/etc/passwd"), "link"),
        (_member("hard", tarfile.LNKTYPE, "main.py"), "link"),
        (_member("dev", tarfile.CHRTYPE), "device"),
        (_member("fifo", tarfile.FIFOTYPE), "device"),
    ],
)
async def test_bad_bundles_are_refused(
    executor: LocalExecutor, tmp_path: Path, member: tarfile.TarInfo, message: str
) -> None:
    data = _tar([_member("main.py"), member])
    with pytest.raises(BundleError, match=message):
        await executor.run(data, manifest(), JOB_ID)
    dest = tmp_path / "x"
    dest.mkdir()
    with pytest.raises(BundleError):
        safe_extract(data, dest)
    assert list(dest.iterdir()) == [] and not (tmp_path / "evil.py").exists()


def test_garbage_bundle_and_file_inside_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a readable tar"):
        safe_extract(b"not a tar", tmp_path)
    with pytest.raises(BundleError, match="inside a file"):
        safe_extract(_tar([_member("a"), _member("a/b")]), tmp_path)


async def test_bundle_bytes_run_and_pack_roundtrip(executor: LocalExecutor, tmp_path: Path) -> None:
    job = make_job(tmp_path, "print('from bundle')\n")
    data = pack_dir(job, gzip=True)
    assert data == pack_dir(job, gzip=True)
    r = await executor.run(data, manifest(), JOB_ID)
    assert r.stdout.read_text() == "from bundle\n"


async def test_missing_entrypoint(executor: LocalExecutor, tmp_path: Path) -> None:
    job = make_job(tmp_path, "print(1)\n", name="other.py")
    with pytest.raises(BundleError, match="entrypoint 'main.py'"):
        await executor.run(job, manifest(), JOB_ID)


def test_manifest_with_wrong_types() -> None:
    with pytest.raises(SpecError, match="timeout"):
        Manifest.from_dict({"entrypoint": "main.py", "timeout": "10"})


async def test_unmet_gpu_requirement_is_never_started(executor: LocalExecutor, tmp_path: Path) -> None:
    job = make_job(tmp_path, "open('started', 'w').write('x')\n")
    with pytest.raises(ExecError, match="needs 1 GPU"):
        await executor.run(job, manifest(gpu={"required": True, "min_vram_gb": 8}), JOB_ID)
    gpu = {"model": "X", "vram_mb": 16384, "compute_capability": "8.0", "cuda_version": "12.2"}
    check_gpu(GpuRequirement(required=True, min_vram_gb=16, compute_capability="7.5"), [gpu])
    with pytest.raises(ExecError):
        check_gpu(GpuRequirement(required=True, compute_capability="9.0"), [gpu])


def test_capabilities_shape(executor: LocalExecutor) -> None:
    caps = capabilities(executor)
    assert caps["cpus"] >= 1 and caps["mem_mb"] > 0 and isinstance(caps["cpu_model"], str)
    assert isinstance(caps["gpus"], list) and caps["executor"] == "local"
    assert caps["enforced"]["network"] is True and caps["enforced"]["filesystem"] is True


def test_refuses_without_network_isolation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(ExecError, match="allow-unsafe"):
        LocalExecutor(work_root=tmp_path, detect_gpus=False)
    ex = LocalExecutor(work_root=tmp_path, detect_gpus=False, allow_unsafe=True)
    assert ex.enforced["network"] is False and ex.unsafe


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([_member("C:/evil.py")], "absolute"),
        ([_member("a\\..\\evil.py")], "unsafe name"),
        ([_member("dup"), _member("dup")], "twice"),
        ([_member("a/b"), _member("a")], "inside a file"),
    ],
)
def test_store_side_checks_hold_for_exec(
    tmp_path: Path, members: list[tarfile.TarInfo], message: str
) -> None:
    """Checks that only store.bundle had before the merge refuse bundles with exec's BundleError too."""
    with pytest.raises(BundleError, match=message) as e:
        safe_extract(_tar([_member("main.py"), *members]), tmp_path)
    assert e.value.reason == "bad-bundle" and list(tmp_path.iterdir()) == []


def test_exec_limits_and_gzip_garbage_are_bad_bundles(tmp_path: Path) -> None:
    import gzip

    with pytest.raises(BundleError, match="more than 2"):
        safe_extract(_tar([_member("a"), _member("b"), _member("c")]), tmp_path / "a", max_entries=2)
    with pytest.raises(BundleError, match="decompresses to more than"):
        safe_extract(gzip.compress(b"\0" * (4 << 20)), tmp_path / "b", max_bytes=1024)
    with pytest.raises(BundleError, match="not a readable tar"):
        safe_extract(b"\x1f\x8b not really gzip", tmp_path / "c")
    assert list(tmp_path.iterdir()) == []


def test_bundle_files_get_the_given_mtime(tmp_path: Path) -> None:
    job = make_job(tmp_path, "print(1)\n")
    (job / "sub").mkdir()
    (job / "sub" / "x.txt").write_text("x")
    safe_extract(pack_dir(job, gzip=True), tmp_path / "o", mtime=1234)
    assert {os.lstat(p).st_mtime for p in (tmp_path / "o").rglob("*")} == {1234}
