"""``python -m sims run|sweep`` (also ``sandrun-p2p sim ...`` through :func:`add_arguments` / :func:`run`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sandrun_p2p import assignments

from . import scenario as scenario_mod


def _overrides(items: list[str]) -> dict[str, Any]:
    try:
        return assignments.parse(items, "--set")
    except ValueError as e:
        raise SystemExit(str(e)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sim_cmd", required=True)
    r = sub.add_parser("run", help="run one scenario")
    r.add_argument("scenario", type=Path)
    r.add_argument("--out", type=Path, default=None, help="directory for metrics.json, CSVs and plots")
    r.add_argument("--json", action="store_true", help='print {"metrics": ..., "run": ...} on stdout')
    r.add_argument("--no-plots", action="store_true")
    r.add_argument(
        "--workers",
        type=int,
        default=1,
        help="split the run over this many processes by shard group (needs rng_streams = 'node')",
    )
    r.add_argument(
        "--group-nodes",
        type=int,
        default=None,
        help="where the run can be split (rng_streams = 'node'): simulate it in groups of shards of about this "
        "many nodes, one after another (default 30, faster at scale, same metrics; 0: whole)",
    )
    r.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario value, e.g. --set jobs.count=500 --set nodes.0.count=100",
    )
    s = sub.add_parser("sweep", help="run a scenario over a parameter grid on several cores")
    s.add_argument("scenario", type=Path)
    s.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        required=True,
        help="a swept parameter (repeat for a grid), e.g. --param protocol.shard_bits=2,4,6",
    )
    s.add_argument("--seeds", type=int, default=1, help="seeds per grid point (seed, seed+1, ...)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--workers", type=int, default=0, help="processes (default: all cores)")
    s.add_argument("--out", type=Path, required=True, help="directory for sweep.json and sweep.csv")


def run(args: argparse.Namespace) -> int:
    if args.sim_cmd == "run":
        from .runner import run_scenario

        sc = scenario_mod.load(args.scenario, _overrides(args.set))
        if args.workers < 1:
            raise SystemExit(f"--workers must be at least 1, got {args.workers}")
        if args.group_nodes is not None and args.group_nodes < 0:
            raise SystemExit(f"--group-nodes must be 0 or more, got {args.group_nodes}")
        grouping = {} if args.group_nodes is None else {"group_nodes": args.group_nodes}
        try:
            doc = run_scenario(sc, args.out, plots=not args.no_plots, workers=args.workers, **grouping)
        except ValueError as e:
            raise SystemExit(f"{args.scenario}: {e}") from None
        if args.json:
            print(json.dumps(doc, sort_keys=True))
        else:
            m = doc["metrics"]
            print(
                f"{sc.name}: {m['jobs']['accepted']}/{m['jobs']['submitted']} accepted, "
                f"{m['jobs']['refunded']} refunded, {m['jobs']['stuck']} stuck; claim p50 "
                f"{m['claim_latency_s']['p50']}s; wrong {m['wrong_accepted']['count']}; "
                f"{doc['run']['wall_s']}s wall, {doc['run']['events']} events"
                + (f"; written to {args.out}" if args.out else "")
            )
        return 0
    from .sweep import grid, run_sweep

    base = _overrides(args.set)
    params = {}
    for p in args.param:
        key, _, vals = p.partition("=")
        params[key] = [assignments.value(v) for v in vals.split(",")]
    tasks = grid(str(args.scenario), base, params, args.seeds)
    rows = run_sweep(tasks, args.workers or None, args.out)
    print(f"{len(rows)} runs written to {args.out / 'sweep.csv'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sims", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
