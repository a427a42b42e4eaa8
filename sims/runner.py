"""Run one scenario: simulate, compute metrics, write files; returns the ``--json`` document.

A run can be split by groups of shards: shards that share no node are independent (their jobs, messages,
executions and chain transactions never meet), so with per-node random streams (``rng_streams = "node"``)
each group can be simulated on its own exactly as the whole run would simulate it, and the merged metrics are
the same however the run is cut (tests/sims check it). The groups only agree on when the run ends: every job
final (in every group) plus the drain; a group that reaches its own end first resumes up to the run's.

Such a run is cut into groups of about ``group_nodes`` nodes (``GROUP_NODES``), simulated one after another
(``Simulator.piece``), in each of up to ``workers`` forked processes, each taking the next group as it frees
up: a small group's state stays in the CPU's caches while it runs (at 10k nodes the CPU per event fell from
~29 to ~13 us; docs/performance.md), and the memory is the whole run's. The shared draws (arrivals, partitions) are made once and replayed
(``engine.SharedDraws``).
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import resource
import time
from collections.abc import Iterable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from sandrun_p2p.protocol.node import NodeCore

from . import metrics as metrics_mod
from .engine import JobRec, SharedDraws, Simulator
from .scenario import Scenario

#: nodes per group of a split run (see the module docstring); measured, docs/performance.md
GROUP_NODES = 15


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
    sc: Scenario,
    out: Path | None = None,
    plots: bool = True,
    workers: int = 1,
    group_nodes: int = GROUP_NODES,
) -> dict[str, Any]:
    """Simulate ``sc`` and compute its metrics: in up to ``workers`` processes, cut into groups of about
    ``group_nodes`` nodes where the scenario allows it (0: never cut a process's part; module docstring)."""
    t0 = time.perf_counter()
    sim = Simulator(sc)
    why = unsplittable(sc)
    if workers > 1 and why:
        raise ValueError(f"splitting a run over processes: {why}")
    run: dict[str, Any] = {}
    if why is None and (workers > 1 or group_nodes > 0):
        nodes = sum(1 for n in sim.nodes if n.shards is not None)
        cut = -(-nodes // group_nodes) if group_nodes > 0 else 1
        groups = shard_groups(sim, max(workers, cut))
        if len(groups) > 1:
            pieces = _pieces(sim, groups)
            processes = min(workers, len(pieces))
            run = {"processes": processes, "groups": len(groups)}
            with no_gc_passes():  # (receiving the processes' summaries: ~3x faster without the collector)
                run["children_rss_mb"] = _run_split(sim, pieces, processes)
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
    return {
        "metrics": m,
        "run": {
            "wall_s": round(wall, 3),
            "peak_rss_mb": round(rss + run.get("children_rss_mb", 0.0), 1),
            "events": sim.events,
            **({k: run[k] for k in ("processes", "groups") if k in run}),
        },
    }


def unsplittable(sc: Scenario) -> str | None:
    """Why a run cannot be split by shard (None: it can): something couples the shards beyond the arrivals."""
    if sc.rng_streams != "node":
        return "needs rng_streams = 'node' (per-node random streams)"
    if sc.verification.mode == "adaptive":
        return "the adaptive client submits checks across shards"
    if sc.churn.fraction and sc.churn.crash_rate_per_h:
        return "with crashes a job whose shard is down is announced through a node of another shard"
    return None


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


Piece = tuple[frozenset[int], list[int]]  # a group of shards and the nodes serving them


def _pieces(sim: Simulator, groups: list[frozenset[int]]) -> list[Piece]:
    """The groups with their nodes, the largest first (so that the last ones taken are small)."""
    group_of = {shard: i for i, g in enumerate(groups) for shard in g}
    members: list[list[int]] = [[] for _ in groups]
    for n in sim.nodes:  # (one pass: a node's shards all lie in one group, shard_groups)
        if n.shards:
            members[group_of[min(n.shards)]].append(n.idx)
    return sorted(zip(groups, members, strict=True), key=lambda p: (-len(p[1]), min(p[0])))


def shared_draws(sc: Scenario) -> SharedDraws:
    """The whole run's shared draws, recorded by a run that simulates no shard (arrivals only: cheap)."""
    pre = Simulator(sc)
    pre.restrict(frozenset(), [])
    pre.recording = SharedDraws()
    with no_gc_passes():
        pre.run()
    return pre.recording


def _run_split(sim: Simulator, pieces: list[Piece], processes: int) -> float:
    """Simulate the pieces (in this process, or in ``processes`` forked ones, each taking the next piece not yet
    taken until none is left), merge into ``sim``. Which process simulates which piece does not change the
    results (each piece is simulated as the whole run would); taking them as the processes free up keeps both
    busy to the end (a fixed deal by node count left one idle for up to 3 s of ~60 at 10k x 100k).

    Returns the sum of the forked processes' peak RSS in MB (an upper bound: pages shared after the fork
    count twice), 0 when none was forked.
    """
    draws = shared_draws(sim.sc)
    if processes <= 1:
        with no_gc_passes():
            parts = _simulate(sim, pieces, draws)
            end = _end(parts)
            _finish(parts, end)
        _merge(sim, [_summary(parts)], end)
        return 0.0
    ctx = multiprocessing.get_context("fork")
    taken = ctx.Value("i", 0)
    pipes, procs = [], []
    for _ in range(processes):
        here, there = ctx.Pipe()
        p = ctx.Process(target=_worker, args=(sim, _Takes(pieces, taken), draws, there), daemon=True)
        p.start()
        there.close()  # the worker's end: a worker that dies then reads as EOF here instead of a hang
        pipes.append(here)
        procs.append(p)
    try:
        end = _latest([e for c in pipes if (e := c.recv()) != _NO_PIECE])
        for c in pipes:
            c.send(end)
        summaries = [c.recv() for c in pipes]
    except EOFError:
        raise RuntimeError("a simulator process failed (its traceback is above)") from None
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    _merge(sim, summaries, end, draws)
    return sum(s["peak_rss_mb"] for s in summaries)


class _Takes:
    """The pieces, each taken by one process: the next index comes from a counter the processes share."""

    def __init__(self, pieces: list[Piece], taken: Any) -> None:
        self.pieces, self.taken = pieces, taken

    def __iter__(self) -> Iterator[Piece]:
        while True:
            with self.taken.get_lock():
                i = self.taken.value
                self.taken.value = i + 1
            if i >= len(self.pieces):
                return
            yield self.pieces[i]


#: What a process that took no piece (the others took them all first) reports as its end.
_NO_PIECE = "no piece"


def _simulate(sim: Simulator, pieces: Iterable[Piece], draws: SharedDraws) -> list[Simulator]:
    """Each piece simulated up to its own end, one after another."""
    parts = []
    for shards, members in pieces:
        part = sim.piece(shards, members, draws.only(shards))
        part.run()
        parts.append(part)
    return parts


def _end(parts: list[Simulator]) -> float | None:
    """The latest end of these pieces (None: one has not ended by the horizon)."""
    return _latest([p.end_at for p in parts])


def _latest(ends: list[float | None]) -> float | None:
    return None if any(e is None for e in ends) else max(ends)  # type: ignore[type-var]


def _finish(parts: list[Simulator], end: float | None) -> None:
    """Resume each piece up to the run's end."""
    for p in parts:
        if end != p.end_at:
            p.end_at = end
            p.resume()


def _worker(sim: Simulator, pieces: Iterable[Piece], draws: SharedDraws, conn: Connection) -> None:
    # The collector stays paused to the end (the process exits then): once re-enabled, its first passes scan
    # the millions of objects the run created, ~5 s at 10k x 100k before the summary was sent.
    with no_gc_passes():
        parts = _simulate(sim, pieces, draws)
        conn.send(_end(parts) if parts else _NO_PIECE)
        _finish(parts, conn.recv())
        summary = _summary(parts)
        for r in summary["jobs"]:
            r.spec = None  # type: ignore[assignment]  # (the parent has every spec: _merge; ~40% of the bytes)
        conn.send({**summary, "peak_rss_mb": peak_rss_mb()})
    conn.close()


def _summary(parts: list[Simulator]) -> dict[str, Any]:
    """What metrics and plots read, summed over pieces (each node and job belongs to exactly one); the
    events every piece handled (partitions) are counted once."""
    out: dict[str, Any] = {
        "jobs": [r for p in parts for r in p.jobs],
        "nodes": [
            (n.idx, n.rx, n.tx, n.executions, n.cheated, n.core is not None)
            for p in parts
            for n in (p.nodes[i] for i in p.members or ())
        ],
        "gas_total": sum(p.chain.gas_total for p in parts),
        "lost": sum(p.lost for p in parts),
        "cancelled_us": sum(p.cancelled_us for p in parts),
        "now": max((p.now for p in parts), default=0.0),
        "pieces": len(parts),
        "shared_events": parts[0].shared_events if parts else 0,
        "events": sum(p.events for p in parts),  # (the shared events are in each piece's: see _merge)
    }
    for key, of in (
        ("tx_count", lambda p: p.chain.tx_count),
        ("reverts", lambda p: p.chain.reverts),
        ("slashed_wei", lambda p: p.chain.slashed_wei),
        ("kind_counts", lambda p: p.kind_counts),
        ("job_states", lambda p: p.job_states),
        ("anomalies", lambda p: p.anomalies),
        ("cancelled", lambda p: p.cancelled),
    ):
        out[key] = {}
        for p in parts:
            _add(out[key], of(p))
    return out


def _add(into: dict[Any, int], more: dict[Any, int]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


def _merge(
    sim: Simulator, parts: list[dict[str, Any]], end: float | None, draws: SharedDraws | None = None
) -> None:
    """What metrics and plots read, summed over the processes (each node and job belongs to exactly one); a
    forked process's jobs come without their specs, which are the ``draws``' (job i is arrival i)."""
    jobs: list[JobRec] = sorted((r for p in parts for r in p["jobs"]), key=lambda r: r.i)
    if draws is not None:
        for r in jobs:
            if r.spec is None:
                r.spec = draws.arrivals[r.i].spec
    sim.jobs = jobs
    sim.by_jid = {r.jid: r for r in jobs}
    for p in parts:
        for idx, rx, tx, executions, cheated, booted in p["nodes"]:
            n = sim.nodes[idx]
            n.rx, n.tx, n.executions, n.cheated = rx, tx, executions, cheated
            # an idle core stands in for the one that ran in the worker (metrics count booted nodes)
            if booted and n.core is None:
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
    pieces = sum(p["pieces"] for p in parts)
    shared = max(p["shared_events"] for p in parts)  # (the same in every piece; 0 from a process with none)
    sim.events = sum(p["events"] for p in parts) - (pieces - 1) * shared  # each piece counted the shared ones
    sim.end_at = end
