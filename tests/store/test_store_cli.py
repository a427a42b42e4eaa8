"""`sandrun-p2p store add | cat | get` through the CLI module (argparse + run)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
from store_helpers import ROOT, build_tree, content, tree_of

from sandrun_p2p.store import cli


def run_cli(*argv: str, env_home: Path) -> subprocess.CompletedProcess[bytes]:
    import os

    env = dict(os.environ, SANDRUN_P2P_HOME=str(env_home))
    return subprocess.run(
        [sys.executable, "-m", "sandrun_p2p.store.cli", *argv],
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


def test_add_cat_get_file_and_dir(tmp_path: Path, vectors: dict) -> None:
    home = tmp_path / "home"
    f = tmp_path / "hello.txt"
    f.write_bytes(b"hello world")
    r = run_cli("add", str(f), env_home=home)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    r = run_cli("cat", r.stdout.decode().strip(), env_home=home)
    assert r.returncode == 0 and r.stdout == b"hello world"

    spec = vectors["dirs"][0]
    src = build_tree(tmp_path / "src", spec["entries"])
    r = run_cli("add", str(src), env_home=home)
    assert r.returncode == 0 and r.stdout.decode().strip() == spec["cid"]
    assert (home / "store" / "pins" / spec["cid"]).exists()  # `store add` pins by default
    r = run_cli("get", spec["cid"], str(tmp_path / "out"), env_home=home)
    assert r.returncode == 0, r.stderr
    assert tree_of(tmp_path / "out") == tree_of(src)
    r = run_cli("add", "--only-hash", str(src), "--data-dir", str(tmp_path / "elsewhere"), env_home=home)
    assert r.stdout.decode().strip() == spec["cid"] and not (tmp_path / "elsewhere").exists()


def test_errors_exit_1_with_message(tmp_path: Path) -> None:
    home = tmp_path / "h"
    r = run_cli("cat", "not-a-cid", env_home=home)
    assert r.returncode == 1 and b"not a CID" in r.stderr
    r = run_cli("cat", "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyka", env_home=home)
    assert r.returncode == 1 and b"not in the store" in r.stderr
    r = run_cli("add", str(tmp_path / "missing"), env_home=home)
    assert r.returncode == 1 and b"missing" in r.stderr
    r = run_cli("add", str(tmp_path), "--ipfs-api", "/ip4/127.0.0.1/tcp/1", env_home=home)
    assert r.returncode == 1 and b"/ip4/127.0.0.1/tcp/1" in r.stderr and b"not reachable" in r.stderr


def test_add_arguments_composes_with_a_parent_parser(tmp_path: Path) -> None:
    top = argparse.ArgumentParser(prog="sandrun-p2p")
    top.add_argument("--data-dir")
    sub = top.add_subparsers(dest="command")
    cli.add_arguments(sub.add_parser("store"))
    args = top.parse_args(["--data-dir", str(tmp_path / "d"), "store", "add", str(tmp_path)])
    assert args.data_dir == str(tmp_path / "d")  # not clobbered by the sub-parser
    assert args.store_command == "add" and args.path == str(tmp_path)
    args = top.parse_args(["store", "get", "bafy", "dest", "--ipfs-api", "/ip4/127.0.0.1/tcp/5001"])
    assert args.ipfs_api == "/ip4/127.0.0.1/tcp/5001"
    with pytest.raises(SystemExit):
        top.parse_args(["store"])


def test_run_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "x"
    f.write_bytes(content({"seed": "cli", "size": 300_000}))
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    assert cli.run(p.parse_args(["add", str(f), "--data-dir", str(tmp_path / "d")])) == 0
    cid = capsys.readouterr().out.strip()
    assert cid.startswith("bafybei")
    assert cli.run(p.parse_args(["get", cid, str(tmp_path / "y"), "--data-dir", str(tmp_path / "d")])) == 0
    assert (tmp_path / "y").read_bytes() == f.read_bytes()
