"""Parameter sweeps as a flat list of independent tasks.

Each task is a plain dict (scenario path, overrides, seed); :func:`run_task` is a pure function of it.
Locally the list goes to a ``multiprocessing`` pool; the same list can be handed to an existing
cluster engine instead, e.g. ``dask.bag.from_sequence(tasks).map(run_task).compute()`` or
``ray.get([ray.remote(run_task).remote(t) for t in tasks])``.
"""

from __future__ import annotations

import csv
import itertools
import json
import multiprocessing
from pathlib import Path
from typing import Any


def grid(
    scenario: str, base: dict[str, Any], params: dict[str, list[Any]], seeds: int
) -> list[dict[str, Any]]:
    keys = sorted(params)
    tasks = []
    for combo in itertools.product(*(params[k] for k in keys)):
        for s in range(seeds):
            ov = {**base, **dict(zip(keys, combo, strict=True))}
            tasks.append({"scenario": scenario, "overrides": ov, "seed_offset": s})
    return tasks


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """Run one sweep point; returns the overrides and the flattened metrics (no files written)."""
    from . import scenario as scenario_mod
    from .runner import run_scenario

    ov = dict(task["overrides"])
    sc = scenario_mod.load(task["scenario"], ov)
    if task.get("seed_offset"):
        from dataclasses import replace

        sc = replace(sc, seed=sc.seed + task["seed_offset"])
    doc = run_scenario(sc, None, plots=False)
    return {"params": ov, "seed": sc.seed, **flatten(doc["metrics"]), "wall_s": doc["run"]["wall_s"]}


def run_sweep(tasks: list[dict[str, Any]], workers: int | None, out: Path) -> list[dict[str, Any]]:
    ctx = multiprocessing.get_context("spawn")  # no inherited state: each run is as from a fresh process
    with ctx.Pool(workers) as pool:
        rows = pool.map(run_task, tasks, chunksize=1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(rows, indent=1, sort_keys=True, default=str) + "\n")
    cols = sorted({k for r in rows for k in r if k != "params"})
    pkeys = sorted({k for r in rows for k in r["params"]})
    with open(out / "sweep.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(pkeys + cols)
        for r in rows:
            w.writerow(
                [r["params"].get(k, "") for k in pkeys]
                + [json.dumps(r.get(c)) if isinstance(r.get(c), dict | list) else r.get(c, "") for c in cols]
            )
    return rows
