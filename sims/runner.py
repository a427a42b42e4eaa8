"""Run one scenario: simulate, compute metrics, write files; returns the ``--json`` document.

A run can be split over processes by groups of shards (``workers``): shards that share no node are
independent (their jobs, messages, executions and chain transactions never meet), so with per-node random
streams (``rng_streams = "node"``) each process simulates its groups exactly as the whole run would, and the
merged metrics are the same for any number of processes (tests/sims check it). The processes only agree on
when the run ends: every job final (in every group) plus the drain.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import resource
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from sandrun_p2p.protocol.node import NodeCore

from . import metrics as metrics_mod
from .engine import JobRec, Simulator
from .scenario import Scenario


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


@contextlib.contextmanager
def no_gc_passes() -> Iterator[None]:
    """Pause the cyclic garbage collector while simulating (restored after).

    A large run holds tens of millions of live objects and creates almost no cycles (peak RSS is the same
    with and without it), yet each full pass re-scans all of them: 20% of the wall time at 10k nodes x 40k
    jobs even with 100x rarer passes, more as the heap grows. Results do not depend on it.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def run_scenario(
    sc: Scenario, out: Path | None = None, plots: bool = True, workers: int = 1
) -> dict[str, Any]:
    """Simulate ``sc`` (in up to ``workers`` processes, see the module docstring) and compute its metrics."""
    t0 = time.perf_counter()
    sim = Simulator(sc)
    run: dict[str, Any] = {}
    if workers > 1:
        check_splittable(sc)
        groups = shard_groups(sim, workers)
        if len(groups) > 1:
            run["processes"] = len(groups)
            run["peak_rss_mb"] = _run_split(sim, groups)
    if not run:
        with no_gc_passes():
            sim.run()
    m = metrics_mod.compute(sim)
    wall = time.perf_counter() - t0
    if out is not None:
        metrics_mod.write(sim, m, out)
        if plots:
            from .plots import write_plots

            write_plots(sim, m, out)
    rss = peak_rss_mb()
    run = {
        "wall_s": round(wall, 3),
        "peak_rss_mb": round(rss + run.get("peak_rss_mb", 0.0), 1),
        "events": sim.events,
        **({"processes": run["processes"]} if "processes" in run else {}),
    }
    return {"metrics": m, "run": run}


def check_splittable(sc: Scenario) -> None:
    """A run can be split by shard only when nothing couples the shards but the arrivals (clear error otherwise)."""
    if sc.rng_streams != "node":
        raise ValueError(
            "splitting a run over processes needs rng_streams = 'node' (per-node random streams)"
        )
    if sc.verification.mode == "adaptive":
        raise ValueError("splitting a run over processes: the adaptive client submits checks across shards")
    if sc.churn.fraction and sc.churn.crash_rate_per_h:
        raise ValueError(
            "splitting a run over processes: with crashes a job whose shard is down is announced "
            "through a node of another shard"
        )


def shard_groups(sim: Simulator, workers: int) -> list[frozenset[int]]:
    """Shards in at most ``workers`` groups that share no node, balanced by node count (deterministic)."""
    n = len(sim.subs)
    root = list(range(n))

    def find(x: int) -> int:
        while root[x] != x:
            root[x] = root[root[x]]
            x = root[x]
        return x

    for node in sim.nodes:
        shards = sorted(node.shards) if node.shards is not None else list(range(n))
        for s in shards[1:]:
            a, b = find(shards[0]), find(s)
            if a != b:
                root[max(a, b)] = min(a, b)
    comps: dict[int, list[int]] = {}
    for s in range(n):
        comps.setdefault(find(s), []).append(s)
    size = {r: len({i for s in c for i in sim.subs[s]}) for r, c in comps.items()}
    groups: list[list[int]] = [[] for _ in range(min(workers, len(comps)))]
    load = [0] * len(groups)
    for r in sorted(comps, key=lambda r: (-size[r], r)):
        g = load.index(min(load))
        groups[g] += comps[r]
        load[g] += size[r]
    return [frozenset(g) for g in groups]


def _run_split(sim: Simulator, groups: list[frozenset[int]]) -> float:
    """Run each group in a forked copy of ``sim`` (built, not run), merge the results into ``sim``.

    Returns the sum of the processes' peak RSS in MB (an upper bound: pages shared after the fork count twice).
    """
    ctx = multiprocessing.get_context("fork")
    pipes, procs = [], []
    for g in groups:
        here, there = ctx.Pipe()
        p = ctx.Process(target=_worker, args=(sim, g, there), daemon=True)
        p.start()
        there.close()  # the worker's end: a worker that dies then reads as EOF here instead of a hang
        pipes.append(here)
        procs.append(p)
    try:
        ends = [c.recv() for c in pipes]
        end = None if any(e is None for e in ends) else max(ends)
        for c in pipes:
            c.send(end)
        parts = [c.recv() for c in pipes]
    except EOFError:
        raise RuntimeError("a simulator process failed (its traceback is above)") from None
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    _merge(sim, parts, end)
    return sum(p["peak_rss_mb"] for p in parts)


def _worker(sim: Simulator, shards: frozenset[int], conn: Connection) -> None:
    sim.restrict(shards)
    with no_gc_passes():
        sim.run()
        conn.send(sim.end_at)
        end = conn.recv()
        if end != sim.end_at:
            sim.end_at = end
            sim.resume()
    ch = sim.chain
    conn.send(
        {
            "jobs": sim.jobs,
            "nodes": [
                (n.idx, n.rx, n.tx, n.executions, n.cheated, n.core is not None) for n in sim.nodes if n.owned
            ],
            "gas_total": ch.gas_total,
            "tx_count": ch.tx_count,
            "reverts": ch.reverts,
            "slashed_wei": ch.slashed_wei,
            "kind_counts": sim.kind_counts,
            "job_states": sim.job_states,
            "anomalies": sim.anomalies,
            "lost": sim.lost,
            "now": sim.now,
            "events": sim.events,
            "shared_events": sim.shared_events,
            "cancelled": sim.cancelled,
            "cancelled_us": sim.cancelled_us,
            "peak_rss_mb": peak_rss_mb(),
        }
    )
    conn.close()


def _add(into: dict[Any, int], more: dict[Any, int]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


def _merge(sim: Simulator, parts: list[dict[str, Any]], end: float | None) -> None:
    """What metrics and plots read, summed over the processes (each node and job belongs to exactly one)."""
    jobs: list[JobRec] = sorted((r for p in parts for r in p["jobs"]), key=lambda r: r.i)
    sim.jobs = jobs
    sim.by_jid = {r.jid: r for r in jobs}
    for p in parts:
        for idx, rx, tx, executions, cheated, booted in p["nodes"]:
            n = sim.nodes[idx]
            n.rx, n.tx, n.executions, n.cheated = rx, tx, executions, cheated
            # an idle core stands in for the one that ran in the worker (metrics count booted nodes)
            if booted:
                n.core = NodeCore(n.nid, n.caps, sim.cfg, n.shards)
        sim.chain.gas_total += p["gas_total"]
        _add(sim.chain.tx_count, p["tx_count"])
        _add(sim.chain.reverts, p["reverts"])
        _add(sim.chain.slashed_wei, p["slashed_wei"])
        _add(sim.kind_counts, p["kind_counts"])
        _add(sim.job_states, p["job_states"])
        _add(sim.anomalies, p["anomalies"])
        _add(sim.cancelled, p["cancelled"])
        sim.cancelled_us += p["cancelled_us"]
        sim.lost += p["lost"]
    sim.now = max(p["now"] for p in parts)
    sim.events = sum(p["events"] for p in parts) - (len(parts) - 1) * parts[0]["shared_events"]
    sim.end_at = end
