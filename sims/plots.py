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
    ax[0].set(
        xlabel="seconds after submission", ylabel="fraction of jobs", title=f"{name}: claim latency CDF"
    )
    _cdf(ax[1], result_times(sim), "result")
    ax[1].set(xlabel="seconds after submission", title="time to result CDF")
    for a in ax:
        a.grid(alpha=0.3)
    paths.append(_save(fig, out / "latency_cdf.png"))

    fig, ax = plt.subplots(1, 3, figsize=(13, 4))
    honest = sorted(n.executions for n in sim.nodes if n.core is not None and n.kind == "honest")
    if honest:
        ax[0].plot(range(len(honest)), honest)
    ax[0].set(
        xlabel="honest nodes (sorted)",
        ylabel="executions",
        title=f"load (Gini {metrics['load']['gini_executions_honest']:.2f})",
    )
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
    """Wrong results accepted vs executions per job, per scheme and run length: provisional (hollow) and final
    (filled), with plain 2-of-3's 3f²-2f³ and the goal. A run with no wrong result is drawn at its 95% upper
    bound (3/jobs, the rule of three) with a downward arrow."""
    fig, ax = plt.subplots(figsize=(11, 5.5))
    colors: dict[str, Any] = {}
    for r in rows:
        c = colors.setdefault(r["case"], f"C{len(colors)}")
        pts = [("wrong_provisional", "released", "o", "none"), ("wrong_final", "accepted", "o", c)]
        for key, den, marker, face in pts:
            n, d = r[key], max(1, r[den])
            y = n / d if n else 3.0 / d
            ax.scatter(r["overhead"], y, s=55, marker=marker, facecolors=face, edgecolors=c, zorder=3)
            if not n:
                ax.annotate(
                    "",
                    (r["overhead"], y / 2.5),
                    (r["overhead"], y),
                    arrowprops={"arrowstyle": "->", "color": c, "lw": 1},
                )
        ax.annotate(
            f"{r['jobs']}",
            (r["overhead"], r["wrong_final_rate"] or 3.0 / max(1, r["accepted"])),
            textcoords="offset points",
            xytext=(6, -3),
            fontsize=7,
            color=c,
        )
    for case, c in colors.items():
        label = next(r["label"] for r in rows if r["case"] == case)
        ax.scatter([], [], color=c, label=label)
    ax.scatter([], [], facecolors="none", edgecolors="k", label="provisional (at release)")
    ax.scatter([], [], color="k", label="final (after the window); 0 drawn at 3/jobs ↓")
    ax.axhline(3 * f**2 - 2 * f**3, ls="--", color="grey", label=f"2-of-3 random committees: 3f²-2f³ (f={f})")
    ax.axhline(1e-4, ls=":", color="red", label="goal: 1e-4")
    ax.axvline(1.3, ls=":", color="green", label="goal: 1.3x")
    ax.set(
        yscale="log",
        xlabel="executions per accepted job",
        ylabel="wrong results accepted / job",
        title=f"Adaptive verification vs plain 2-of-3, {f:.0%} colluders (labels: jobs per run)",
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    return _save(fig, path)
