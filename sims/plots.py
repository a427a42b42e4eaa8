"""PNG plots of a run (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .metrics import claim_latencies, result_times  # noqa: E402

if TYPE_CHECKING:
    from .engine import Simulator


def _cdf(ax: Any, xs: list[float], label: str) -> None:
    s = sorted(xs)
    if s:
        ax.step(s, [(i + 1) / len(s) for i in range(len(s))], where="post", label=label)


def write_plots(sim: Simulator, metrics: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    name = sim.sc.name

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    _cdf(ax[0], claim_latencies(sim), "first claim")
    ax[0].set(xlabel="seconds after submission", ylabel="fraction of jobs", title=f"{name}: claim latency CDF")
    _cdf(ax[1], result_times(sim), "result")
    ax[1].set(xlabel="seconds after submission", title="time to result CDF")
    for a in ax:
        a.grid(alpha=0.3)
    paths.append(_save(fig, out / "latency_cdf.png"))

    fig, ax = plt.subplots(1, 3, figsize=(13, 4))
    honest = sorted(n.executions for n in sim.nodes if n.core is not None and n.kind == "honest")
    if honest:
        ax[0].plot(range(len(honest)), honest)
    ax[0].set(xlabel="honest nodes (sorted)", ylabel="executions",
              title=f"load (Gini {metrics['load']['gini_executions_honest']:.2f})")
    ax[1].hist([n.rx for n in sim.nodes if n.core is not None], bins=40)
    ax[1].set(xlabel="messages delivered to a node", ylabel="nodes", title="messages per node")
    reasons = metrics["jobs"]["refund_reasons"]
    bars = {"accepted": metrics["jobs"]["accepted"], **reasons, "stuck": metrics["jobs"]["stuck"]}
    ax[2].bar(list(bars), list(bars.values()))
    ax[2].set(title="job outcomes", ylabel="jobs")
    ax[2].tick_params(axis="x", rotation=30)
    paths.append(_save(fig, out / "load_messages_outcomes.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    ex = metrics["executions"]
    vals = {
        "executions/accepted": ex["per_accepted_job"],
        "duplicates/job": ex["duplicates"] / max(1, metrics["jobs"]["submitted"]),
        "gas/job (100k)": metrics["gas"]["per_job"] / 1e5,
        "wrong accepted %": 100 * metrics["wrong_accepted"]["rate"],
        "slashed ETH": metrics["stake"]["slashed_eth"],
    }
    ax.bar(list(vals), list(vals.values()))
    ax.tick_params(axis="x", rotation=30)
    ax.set(title=f"{name}: cost and safety")
    paths.append(_save(fig, out / "cost_safety.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def verification_plot(rows: list[dict[str, Any]], f: float, path: Path) -> Path:
    """Wrong results accepted vs compute overhead, per scheme, with plain 2-of-3's 3f²-2f³ for reference."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        rate = max(r["wrong_rate"], 1e-6)
        ax.scatter(r["overhead"], rate, s=60)
        ax.annotate(r["label"], (r["overhead"], rate), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.axhline(3 * f**2 - 2 * f**3, ls="--", color="grey", label=f"2-of-3 random committees: 3f²-2f³ (f={f})")
    ax.axhline(1e-4, ls=":", color="red", label="goal 1e-4")
    ax.axvline(1.3, ls=":", color="green", label="goal 1.3x")
    ax.set(xscale="linear", yscale="log", xlabel="executions per accepted job",
           ylabel="wrong results accepted / job (1e-6 = none)", title="Adaptive verification vs plain 2-of-3")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)
