"""Shared plumbing of the read-only CLI commands (status, nodes, jobs): find the agent, print JSON or text."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir", type=Path, help="the agent's data dir (default $SANDRUN_P2P_HOME or ~/.sandrun-p2p)"
    )
    p.add_argument("--json", action="store_true", help="print the control API's JSON answer")


def client(args: argparse.Namespace) -> Any:
    from ..client.peer import ControlClient
    from .build import data_dir_default

    return ControlClient.from_data_dir(args.data_dir or data_dir_default(), timeout=15)


def run_command(args: argparse.Namespace, fetch: Any, render: Any, prog: str) -> int:
    from ..client.errors import PeerUnavailable

    try:
        api = client(args)
        try:
            data = fetch(api)
        finally:
            api.close()
    except PeerUnavailable as e:
        print(f"sandrun-p2p {prog}: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(render(data))
    return 0


def wei(n: Any) -> str:
    try:
        return f"{int(n) / 1e18:.6f} ETH"
    except (TypeError, ValueError):
        return str(n)
