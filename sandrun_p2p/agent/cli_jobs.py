"""``sandrun-p2p jobs``: the job queue as this node sees it, with what each unfinished job waits for."""

from __future__ import annotations

import argparse
from typing import Any

from .cli_common import add_common, run_command


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("job_id", nargs="?", help="show one job in detail")


def render_list(d: dict[str, Any]) -> str:
    jobs = d["jobs"]
    if not jobs:
        return "no jobs known to this node"
    lines = [f"{'job':18} {'state':10} {'k':>2} {'claims':>6} {'commits':>7}  reason"]
    for j in jobs:
        lines.append(
            f"{j['job_id'][:16]:18} {j.get('state', '?'):10} {j.get('redundancy') or '-':>2} "
            f"{j.get('claims', '-'):>6} {j.get('commits', '-'):>7}  {j.get('reason', '')}"
        )
    return "\n".join(lines)


def render_one(j: dict[str, Any]) -> str:
    lines = [f"job       {j['job_id']}", f"state     {j.get('state')}  {j.get('reason', '')}"]
    for key in ("origin", "redundancy", "quorum", "deadline", "accepted_root"):
        if j.get(key) is not None:
            lines.append(f"{key:9} {j[key]}")
    for n, r in (j.get("reveals") or {}).items():
        lines.append(f"reveal    {n[:12]} root {r['root'][:16]} result {r['result_cid']}")
    for e in j.get("events", []):
        lines.append(f"  {e['at']:.3f} {e['state']:10} {e['node'][:12]:12} {e['detail']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.job_id:
        return run_command(args, lambda api: api.job(args.job_id), render_one, "jobs")
    return run_command(args, lambda api: {"jobs": api.jobs()}, render_list, "jobs")
