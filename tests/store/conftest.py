"""Fixtures for the content-store tests.

Daemon-backed tests are marked ``@pytest.mark.ipfs`` and need ``SANDRUN_IPFS_API`` (the multiaddr that
``scripts/ipfs/start.sh`` prints); without it they are skipped with that reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from store_helpers import FIXTURES

from sandrun_p2p.store import EmbeddedStore


@pytest.fixture(scope="session")
def vectors() -> dict:
    return json.loads((FIXTURES / "cid_vectors.json").read_text())


@pytest.fixture
async def store(tmp_path: Path) -> EmbeddedStore:
    s = EmbeddedStore(tmp_path / "node", gc_grace_s=0)
    yield s
    await s.close()


@pytest.fixture(scope="session")
def ipfs_api() -> str:
    api = os.environ.get("SANDRUN_IPFS_API")
    if not api:
        pytest.skip(
            "SANDRUN_IPFS_API is not set: start a daemon with scripts/ipfs/start.sh (the test target does)"
        )
    return api
