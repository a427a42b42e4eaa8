"""mDNS discovery: nodes on one network find each other without bootstrap addresses; ``--no-mdns`` stays silent.

Multicast needs an interface that carries it, so the probe runs in a private network namespace whose loopback
has multicast turned on: nothing leaves the machine. Needs root (unshare); skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETUP = "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo"


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"),
    reason="needs root, unshare and ip for a private network namespace",
)
def test_mdns_nodes_find_each_other_and_no_mdns_node_is_not_found() -> None:
    cmd = f'{SETUP} && exec "{sys.executable}" -m tests.net.mdns_probe'
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run(
        ["unshare", "--net", "sh", "-c", cmd], cwd=ROOT, env=env, capture_output=True, text=True, timeout=90
    )
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["found"], "two mDNS nodes did not discover each other within 30 s"
    assert out["off_peers"] == 0, "a node with mDNS off was found by the others"
