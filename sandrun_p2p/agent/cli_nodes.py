"""``sandrun-p2p nodes``: known nodes with their capabilities and last advert."""

from __future__ import annotations

import argparse
from typing import Any

from .cli_common import add_common, run_command


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p)


def render(d: dict[str, Any]) -> str:
    lines = [f"{'node':14} {'cpus':>4} {'mem MB':>8} {'gpus':18} {'staked':6} {'advert':>8}  enforced"]
    for n in d["nodes"]:
        c = n["caps"]
        gpus = ",".join(f"{g['model']}/{g['vram_mb']}MB" for g in c["gpus"]) or "-"
        age = "self" if n["self"] else (f"{n['last_advert_s']}s" + ("" if n["fresh"] else " stale"))
        lines.append(
            f"{n['node_id'][:12]:14} {c['cpus']:>4} {c['mem_mb']:>8} {gpus[:18]:18} "
            f"{'yes' if n['staked'] else 'no':6} {age:>8}  {','.join(c['enforced'])}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    return run_command(args, lambda api: {"nodes": api.nodes()}, render, "nodes")
