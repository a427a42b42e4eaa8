"""``sandrun-p2p status``: this node and the mesh as it sees them."""

from __future__ import annotations

import argparse
from typing import Any

from .cli_common import add_common, run_command, wei


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p)


def render_gpus(gpus: list[dict[str, Any]]) -> str:
    """``0 NVIDIA H200 (143771 MB) busy; 1 ...``, or ``none``."""
    return (
        "; ".join(
            f"{g['index']} {g['model']} ({g['vram_mb']} MB) {'busy' if g['busy'] else 'free'}" for g in gpus
        )
        or "none"
    )


def render(s: dict[str, Any]) -> str:
    acct = s.get("account", {})
    lines = [
        f"node      {s['node_id']}",
        f"peer      {s['peer_id']}",
        f"eth       0x{s['eth']}   chain: {s['chain']}",
        f"listen    {' '.join(s['addrs'])}",
        f"uptime    {s['uptime_s']}s",
        f"peers     {len(s['peers'])} connected; mesh "
        + ", ".join(f"{t}: {n}" for t, n in s["mesh"].items()),
        f"jobs      running {s['running']}/{s['max_jobs']}; by state: "
        + (", ".join(f"{k} {v}" for k, v in sorted(s["jobs_by_state"].items())) or "none"),
        f"earnings  earned {wei(acct.get('earned_wei', 0))}, withdrawable {wei(acct.get('withdrawable_wei', 0))}, "
        f"stake {wei(acct.get('stake_wei', 0))}",
        "sandbox   " + ", ".join(f"{k}={v}" for k, v in sorted(s["enforced"].items())),
        "gpus      " + render_gpus(s.get("gpus", [])),
        f"gossip    accepted {s['net']['accepted']}, rejected {sum(s['net']['rejected'].values())} "
        f"{s['net']['rejected'] or ''}, published {s['net']['published']}",
    ]
    for p in s["peers"]:
        lines.append(f"  peer {p['peer_id']}  score {p['score']}  mesh {len(p['mesh_topics'])} topic(s)")
    for executor, why in sorted(s.get("vouchers_blocked", {}).items()):
        lines.append(f"no vouchers for {executor}: {why}")
    if s.get("chain_errors"):
        lines.append("recent chain errors:")
        lines.extend(f"  {e}" for e in s["chain_errors"][-5:])
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    return run_command(args, lambda api: api.status(), render, "status")
