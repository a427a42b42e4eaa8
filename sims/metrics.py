"""Metrics of a finished run: simulated quantities only (no wall time), so a seed gives identical numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandrun_p2p.protocol.pricing import WEI_PER_ETH

if TYPE_CHECKING:
    from .engine import JobRec, Simulator


def quantiles(xs: list[float], qs: tuple[float, ...] = (0.5, 0.9, 0.99)) -> dict[str, float]:
    if not xs:
        return {f"p{int(q * 100)}": 0.0 for q in qs} | {"mean": 0.0, "max": 0.0}
    s = sorted(xs)
    out = {f"p{int(q * 100)}": round(s[min(len(s) - 1, int(q * len(s)))], 6) for q in qs}
    out["mean"] = round(sum(s) / len(s), 6)
    out["max"] = round(s[-1], 6)
    return out


def gini(xs: list[float]) -> float:
    """Gini coefficient (0: perfectly even, 1: one node does everything)."""
    s = sorted(xs)
    n = len(s)
    total = sum(s)
    if n == 0 or total == 0:
        return 0.0
    cum = sum((i + 1) * x for i, x in enumerate(s))
    return round((2 * cum) / (n * total) - (n + 1) / n, 6)


def refund_class(rec: JobRec) -> str:
    d = rec.fail_detail or rec.refund_reason
    if d.startswith("no eligible node"):
        return "no_eligible"
    if d.startswith("deadline passed"):
        return "deadline"
    if d.startswith("no quorum"):
        return "no_quorum"
    return d[:40] or "unknown"


def claim_latencies(sim: Simulator) -> list[float]:
    return [r.claims[0] - r.t_submit for r in sim.jobs if r.check_of is None and r.claims]


def result_times(sim: Simulator) -> list[float]:
    return [
        r.final_at - r.t_submit
        for r in sim.jobs
        if r.check_of is None and r.final_at is not None and r.final_root is not None
    ]


def compute(sim: Simulator) -> dict[str, Any]:
    from .engine import HONEST, correct_root

    prim = [r for r in sim.jobs if r.check_of is None]
    checks = [r for r in sim.jobs if r.check_of is not None]
    accepted = [r for r in prim if r.final_root is not None]
    wrong = [r for r in accepted if r.final_root != correct_root(r.comp)]
    refunded = [r for r in prim if r.final_at is not None and r.final_root is None]
    stuck = [r for r in prim if r.final_at is None]
    reasons: dict[str, int] = {}
    for r in refunded:
        c = refund_class(r)
        reasons[c] = reasons.get(c, 0) + 1
    starts = sum(r.starts for r in sim.jobs)
    dup = sum(max(0, r.starts - r.spec.redundancy) for r in sim.jobs)
    ever = [n for n in sim.nodes if n.core is not None]
    honest = [n for n in ever if n.kind == HONEST]
    cheaters = [n for n in ever if n.kind != HONEST and n.cheated]
    slashed = {nid for nid, w in sim.chain.slashed_wei.items() if w > 0}
    honest_slashed = [n for n in honest if n.nid in slashed]
    rx = [n.rx for n in ever]
    tx = [n.tx for n in ever]
    duration = max(1e-9, sim.now)
    n_nodes = len(sim.nodes)
    per_kind = {k: v for k, v in sorted(sim.kind_counts.items())}
    copies = sim.gossip.table(len(sim.subs[0]) if sim.subs else 1).wire_copies
    out: dict[str, Any] = {
        "scenario": sim.sc.name,
        "seed": sim.sc.seed,
        "nodes": n_nodes,
        "shards": len(sim.subs),
        "sim_seconds": round(sim.now, 3),
        "jobs": {
            "submitted": len(prim),
            "accepted": len(accepted),
            "refunded": len(refunded),
            "stuck": len(stuck),
            "refund_reasons": dict(sorted(reasons.items())),
            "check_jobs": len(checks),
        },
        "claim_latency_s": quantiles(claim_latencies(sim)),
        "time_to_result_s": quantiles(result_times(sim)),
        "executions": {
            "started": starts,
            "completed": sum(r.done for r in sim.jobs),
            "duplicates": dup,
            "per_accepted_job": round(starts / max(1, len(accepted)), 6),
            # stopped before their end (outranked by a later claim, deadline, job closed, node down) and the
            # simulated execution seconds they had run
            "cancelled": dict(sorted(sim.cancelled.items())),
            "cancelled_compute_s": round(sim.cancelled_us / 1e6, 3),
        },
        "wrong_accepted": {"count": len(wrong), "rate": round(len(wrong) / max(1, len(accepted)), 8)},
        "gas": {
            "total": sim.chain.gas_total,
            "per_job": round(sim.chain.gas_total / max(1, len(prim)), 1),
            "txs": dict(sorted(sim.chain.tx_count.items())),
            "reverted": dict(sorted(sim.chain.reverts.items())),
        },
        "stake": {
            "slashed_eth": round(sum(sim.chain.slashed_wei.values()) / WEI_PER_ETH, 6),
            "nodes_slashed": len(slashed),
            "honest_slashed": len(honest_slashed),
            "cheaters": len(cheaters),
            "cheaters_slashed": sum(1 for n in cheaters if n.nid in slashed),
            "adversaries": sum(1 for n in ever if n.kind != HONEST),
        },
        "load": {
            "gini_executions_honest": gini([n.executions for n in honest]),
            "max_executions": max((n.executions for n in ever), default=0),
        },
        "messages": {
            "published": dict(per_kind),
            "delivered_per_node": quantiles([float(x) for x in rx]),
            "published_per_node": quantiles([float(x) for x in tx]),
            "lost": sim.lost,
            "wire_copies_per_delivery": round(copies, 3),
            # adverts are global: the model delivers them only to nodes sharing a shard (the only ones whose
            # NodeCore uses them); a real global topic makes every node receive every advert:
            "advert_rx_per_node_per_s_global_topic": round(n_nodes / sim.cfg.advert_interval, 3),
            "rx_per_node_per_s_mean": round(sum(rx) / max(1, len(ever)) / duration, 4),
        },
        "protocol_events": dict(sorted(sim.job_states.items())),
        "anomalies": dict(sorted(sim.anomalies.items())),
    }
    if sim.client is not None:
        out["verification"] = {
            "checks": sim.client.checks,
            "gated_checks": sim.client.gated,
            "fraud_proofs": sim.client.fraud_proofs,
        }
    return out


def write(sim: Simulator, metrics: dict[str, Any], out: Path) -> None:
    """metrics.json, jobs.csv (one row per job), nodes.csv (one row per node)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    with open(out / "jobs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "i",
                "job_id",
                "check_of",
                "k",
                "q",
                "shard",
                "t_submit",
                "first_claim_s",
                "claims",
                "starts",
                "settled_at",
                "refunded_at",
                "final_at",
                "accepted",
                "correct",
                "refund_reason",
            ]
        )
        from .engine import correct_root

        for r in sim.jobs:
            w.writerow(
                [
                    r.i,
                    r.jid.hex()[:16],
                    r.check_of.i if r.check_of else "",
                    r.spec.redundancy,
                    r.spec.quorum,
                    r.shard,
                    round(r.t_submit, 4),
                    round(r.claims[0] - r.t_submit, 4) if r.claims else "",
                    len(r.claims),
                    r.starts,
                    r.settled_at or "",
                    r.refunded_at or "",
                    r.final_at or "",
                    int(r.final_root is not None),
                    int(r.final_root == correct_root(r.comp)) if r.final_root else "",
                    r.fail_detail or r.refund_reason,
                ]
            )
    with open(out / "nodes.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["idx", "node_id", "kind", "group", "executions", "cheated", "rx", "tx", "slashed_eth"])
        for n in sim.nodes:
            w.writerow(
                [
                    n.idx,
                    n.nid.hex()[:16],
                    n.kind,
                    n.group,
                    n.executions,
                    n.cheated,
                    n.rx,
                    n.tx,
                    sim.chain.slashed_wei.get(n.nid, 0) / WEI_PER_ETH,
                ]
            )
