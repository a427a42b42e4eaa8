"""Run one scenario: simulate, compute metrics, write files; returns the ``--json`` document."""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

from . import metrics as metrics_mod
from .engine import Simulator
from .scenario import Scenario


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_scenario(sc: Scenario, out: Path | None = None, plots: bool = True) -> dict[str, Any]:
    t0 = time.perf_counter()
    sim = Simulator(sc)
    sim.run()
    m = metrics_mod.compute(sim)
    wall = time.perf_counter() - t0
    if out is not None:
        metrics_mod.write(sim, m, out)
        if plots:
            from .plots import write_plots

            write_plots(sim, m, out)
    return {"metrics": m, "run": {"wall_s": round(wall, 3), "peak_rss_mb": peak_rss_mb(), "events": sim.events}}
