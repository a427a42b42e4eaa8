"""The committed contract artifacts are exactly what the pinned compiler makes of contracts/*.sol."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from chain_world import ensure_contract_packages

from sandrun_p2p.chain import artifacts

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = ROOT / "contracts"


def test_artifact_settings():
    a = artifacts.load("SandrunMarket")
    assert a["compiler"]["version"].startswith("0.8.37+")
    assert a["settings"]["evmVersion"] == "cancun"
    assert a["settings"]["optimizer"]["enabled"] is True
    assert 0 < (len(a["deployedBytecode"]) - 2) // 2 <= 24576  # EIP-170
    names = {i["name"] for i in a["abi"] if i["type"] == "function"}
    assert {
        "register",
        "postJob",
        "commit",
        "reveal",
        "finalize",
        "slashEquivocation",
        "settleBatch",
    } <= names


def test_artifacts_match_sources():
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is needed to check the contract artifacts")
        pytest.skip("node is not installed: cannot recompile the contracts")
    why = ensure_contract_packages()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"cannot install solc-js to check the contract artifacts: {why}")
        pytest.skip(f"cannot install solc-js: {why}")
    r = subprocess.run(
        [node, "compile.js", "--check"], cwd=CONTRACTS, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout + r.stderr
