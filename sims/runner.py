"""Run one scenario: simulate, compute metrics, write files; returns the ``--json`` document."""

from __future__ import annotations

import contextlib
import gc
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import metrics as metrics_mod
from .engine import Simulator
from .scenario import Scenario


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


@contextlib.contextmanager
def fewer_gc_passes(gen0: int = 100_000) -> Iterator[None]:
    """Collect young objects less often while simulating (restored after).

    A large run holds tens of millions of live objects and creates almost no cycles; with the default
    thresholds the cyclic collector's full passes re-scan all of them (a quarter of the CPU time at 10k nodes x
    4k jobs, more as the heap grows). Results do not depend on when it runs.
    """
    old = gc.get_threshold()
    gc.set_threshold(gen0, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)


def run_scenario(sc: Scenario, out: Path | None = None, plots: bool = True) -> dict[str, Any]:
    t0 = time.perf_counter()
    sim = Simulator(sc)
    with fewer_gc_passes():
        sim.run()
    m = metrics_mod.compute(sim)
    wall = time.perf_counter() - t0
    if out is not None:
        metrics_mod.write(sim, m, out)
        if plots:
            from .plots import write_plots

            write_plots(sim, m, out)
    return {"metrics": m, "run": {"wall_s": round(wall, 3), "peak_rss_mb": peak_rss_mb(), "events": sim.events}}
