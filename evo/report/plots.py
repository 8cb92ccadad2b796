"""The report's plots of per-generation figures: fitness, cost, Pareto front,
curriculum. Matplotlib's object API on the Agg canvas only (no pyplot)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evo.report.data import RunData, _num, pareto_front

PLOTS = ("fitness.png", "cost.png", "pareto.png", "lineage.png", "curriculum.png")
MODELS_PLOT = "models.png"  # drawn only for a run whose individuals used several models
MODEL_COLORS = ("#3b6e8f", "#d95f02", "#1b9e77", "#7570b3", "#e7298a", "#66a61e")
DPI = 110
OP_COLORS = {  # operator -> node colour in the lineage tree
    "seed": "#4c72b0",
    "mut_prompt": "#dd8452",
    "mut_chain": "#55a868",
    "mut_decoding": "#c44e52",
    "cx_strategy": "#8172b3",
    "mut_llm_rewrite": "#937860",
    "mut_lora": "#da8bc3",
    "inject": "#2a9d8f",  # a distilled adapter put into the population
    "pair_up": "#b5a000",  # the first seed given two exemplars of every kind from the run's pool
}
OTHER_OP_COLOR = "#8c8c8c"
BEST_COLOR = "#e6a800"


def _figure(width: float, height: float, ncols: int = 1, nrows: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    return fig, axes


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=DPI, facecolor="white")


def _generation_axis(ax, generations: Sequence[int]) -> None:
    from matplotlib.ticker import MaxNLocator

    if generations and max(generations) - min(generations) <= 12:
        ax.set_xticks(range(min(generations), max(generations) + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("generation")
    if generations:
        lo, hi = min(generations), max(generations)
        pad = 0.5 if hi == lo else 0.03 * (hi - lo)
        ax.set_xlim(lo - pad, hi + pad)
    ax.grid(True, alpha=0.3)


def _series(metrics: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for row in metrics:
        value = _num(row.get(key))
        if not math.isnan(value):
            xs.append(row["generation"])
            ys.append(value)
    return xs, ys


def _frontier_moves(metrics: Sequence[dict[str, Any]]) -> list[int]:
    moves = []
    for before, after in zip(metrics, metrics[1:]):
        if isinstance(before.get("frontier"), dict) and isinstance(after.get("frontier"), dict) \
                and before["frontier"] != after["frontier"]:
            moves.append(after["generation"])
    return moves


def _marker_sizes(n_generations: int) -> tuple[float, float]:
    """Markers that stay apart: (main series, minor series) in points."""
    if n_generations <= 15:
        return 8.0, 5.0
    if n_generations <= 40:
        return 5.0, 3.0
    return 0.0, 0.0


def plot_fitness(run: RunData, path: Path) -> None:
    fig, (ax_fit, ax_acc) = _figure(11, 4.2, ncols=2)
    generations = [m["generation"] for m in run.metrics]
    big, small = _marker_sizes(len(generations))
    for key, label, style in (("best_fitness", "best", dict(color="#1f77b4", marker="o", markersize=big, linewidth=2.2)),
                              ("mean_fitness", "population mean", dict(color="#555555", marker=".", linestyle="--"))):
        xs, ys = _series(run.metrics, key)
        ax_fit.plot(xs, ys, label=label, **style)
    for k, g in enumerate(_frontier_moves(run.metrics)):
        # the frontier moved during generation g: generation g+1 is scored on a new batch
        ax_fit.axvline(g + 0.5, color="#2ca02c", linestyle=":", alpha=0.8,
                       label="curriculum frontier moved (new batch after it)" if k == 0 else None)
    ax_fit.set_title("fitness per generation")
    ax_fit.set_ylabel("fitness (−L_total, higher is better)")
    _generation_axis(ax_fit, generations)
    ax_fit.legend(loc="best", fontsize="small")

    # equal values would hide each other: validation as open squares over filled train dots
    for key, label, style in (("best_accuracy", "best: train", dict(color="#1f77b4", marker="o", markersize=big, linewidth=2.2)),
                              ("mean_accuracy", "population mean: train", dict(color="#555555", marker=".", linestyle="--")),
                              ("heldout_accuracy", "best: validation", dict(color="#d62728", marker="s", markersize=big * 1.4,
                                                                           markerfacecolor="none", markeredgewidth=1.6,
                                                                           linestyle=(0, (6, 3)), linewidth=1.4))):
        xs, ys = _series(run.metrics, key)
        ax_acc.plot(xs, ys, label=label, **style)
    from matplotlib.ticker import PercentFormatter

    ax_acc.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax_acc.set_ylim(-0.04, 1.04)
    ax_acc.set_title("accuracy per generation")
    ax_acc.set_ylabel("accuracy")
    _generation_axis(ax_acc, generations)
    ax_acc.legend(loc="best", fontsize="small")
    _save(fig, path)


def plot_cost(run: RunData, path: Path) -> None:
    fig, (ax_chain, ax_roll, ax_tok) = _figure(14, 4.2, ncols=3)
    generations = [m["generation"] for m in run.metrics]
    ms = _marker_sizes(len(generations))[1] + 1 if len(generations) <= 40 else 0
    xs, ys = _series(run.metrics, "mean_chain_tokens")
    ax_chain.plot(xs, ys, marker="o", markersize=ms, color="#9467bd", label="population mean")
    ax_chain.set_title("chain length")
    ax_chain.set_ylabel("mean chain tokens per answer")
    ax_chain.set_ylim(bottom=0)
    ax_chain.legend(loc="best", fontsize="small")
    _generation_axis(ax_chain, generations)

    for key, label, style in (("rollouts", "new rollouts (all)", dict(color="#1f77b4", marker="o", markersize=ms)),
                              ("heldout_rollouts", "of which validation", dict(color="#d62728", marker="s", markersize=ms, linestyle="--")),
                              ("reused", "reused from the journal", dict(color="#2ca02c", marker="^", markersize=ms, linestyle=":"))):
        xs, ys = _series(run.metrics, key)
        ax_roll.plot(xs, ys, label=label, **style)
    ax_roll.set_title("rollouts (cumulative)")
    ax_roll.set_ylabel("rollouts")
    ax_roll.set_ylim(bottom=0)
    ax_roll.legend(loc="best", fontsize="small")
    _generation_axis(ax_roll, generations)

    xs, ys = _series(run.metrics, "tokens")
    ax_tok.plot(xs, ys, marker="o", markersize=ms, color="#ff7f0e", label="generated tokens")
    ax_tok.set_title("tokens spent (cumulative)")
    ax_tok.set_ylabel("completion tokens")
    ax_tok.set_ylim(bottom=0)
    from matplotlib.ticker import EngFormatter

    ax_tok.yaxis.set_major_formatter(EngFormatter(sep=""))  # 25k, 1.2M
    ax_tok.legend(loc="best", fontsize="small")
    _generation_axis(ax_tok, generations)
    _save(fig, path)


def plot_pareto(run: RunData, path: Path) -> None:
    from matplotlib.colors import Normalize
    from matplotlib.ticker import PercentFormatter

    rows = [r for r in run.lineage.values()
            if not math.isnan(_num(r.get("accuracy"))) and not math.isnan(_num(r.get("chain_tokens")))]
    fig, (ax,) = _figure(9, 6)
    ax.set_title(f"accuracy vs chain tokens ({len(rows)} evaluated individuals, {run.mode} mode)")
    ax.set_xlabel("mean chain tokens per answer (fewer is better)")
    ax.set_ylabel("train accuracy (higher is better)")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(True, alpha=0.3)
    if not rows:
        ax.text(0.5, 0.5, "no evaluated individuals in lineage.jsonl", ha="center", va="center", transform=ax.transAxes)
        _save(fig, path)
        return
    points = [(_num(r["accuracy"]), _num(r["chain_tokens"])) for r in rows]
    front = pareto_front(points)
    # identical points stack up (many genomes score the same): size a marker by its count
    counts: dict[tuple[float, float], list[dict[str, Any]]] = {}
    for r, p in zip(rows, points):
        counts.setdefault(p, []).append(r)
    keys = list(counts)
    gens = [max(_num(r.get("generation"), 0) for r in counts[k]) for k in keys]
    sizes = [30 + 25 * (len(counts[k]) - 1) ** 0.8 for k in keys]
    if min(gens) == max(gens):  # one generation: nothing for a colour scale to say
        ax.scatter([k[1] for k in keys], [k[0] for k in keys], color="#3b6e8f", s=sizes, alpha=0.75,
                   edgecolors="#00000055", linewidths=0.5, zorder=2)
    else:
        from matplotlib.ticker import MaxNLocator

        sc = ax.scatter([k[1] for k in keys], [k[0] for k in keys], c=gens, cmap="viridis",
                        norm=Normalize(vmin=min(gens), vmax=max(gens)), s=sizes, alpha=0.75, edgecolors="#00000055",
                        linewidths=0.5, zorder=2)
        cbar = fig.colorbar(sc, ax=ax, pad=0.01)
        cbar.set_label("generation of birth (the latest, where several share a point)")
        cbar.locator = MaxNLocator(integer=True)
        cbar.update_ticks()
    _draw_front(ax, run, points, front, counts)
    xs = [p[1] for p in points]
    lo, hi = min(xs), max(xs)
    pad = max(0.06 * (hi - lo), 0.5)
    ax.set_xlim(max(lo - pad, 0) if lo >= 0 else lo - pad, hi + 2.5 * pad)
    ax.set_ylim(-0.05, 1.08)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], linestyle="none", marker="o", color="#6b8fa8", markersize=7,
                      label="evaluated (bigger: several at one point)"), *ax.get_legend_handles_labels()[0]]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize="small", markerscale=0.7)
    _save(fig, path)



def run_models(run: RunData) -> list[str]:
    """The ``decoding.model`` values of the run's evaluated individuals, sorted."""
    return sorted({str(((r.get("strategy") or {}).get("decoding") or {}).get("model", "default"))
                   for r in run.lineage.values() if not math.isnan(_num(r.get("accuracy")))})


def plot_models(run: RunData, path: Path) -> None:
    """Accuracy against cost (mean generated tokens x the model's cost factor), one
    colour per model, with the non-dominated front across models."""
    from matplotlib.ticker import PercentFormatter

    rows = [r for r in run.lineage.values() if not math.isnan(_num(r.get("accuracy")))
            and not math.isnan(_num(r.get("cost")))]
    models = run_models(run)
    fig, (ax,) = _figure(9, 6)
    ax.set_title(f"accuracy vs cost across {len(models)} models ({len(rows)} evaluated individuals)")
    ax.set_xlabel("cost: mean generated tokens x the model's cost factor (lower is better)")
    ax.set_ylabel("train accuracy (higher is better)")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(True, alpha=0.3)
    points = [(_num(r["accuracy"]), _num(r["cost"])) for r in rows]
    for i, model in enumerate(models):
        mine = [p for r, p in zip(rows, points) if ((r.get("strategy") or {}).get("decoding") or {}).get("model",
                                                                                                     "default") == model]
        ax.scatter([p[1] for p in mine], [p[0] for p in mine], color=MODEL_COLORS[i % len(MODEL_COLORS)], s=40,
                   alpha=0.7, edgecolors="#00000055", linewidths=0.5, zorder=2, label=f"{model}: {len(mine)}")
    if points:
        front = sorted({points[i] for i in pareto_front(points)}, key=lambda p: p[1])
        ax.step([p[1] for p in front], [p[0] for p in front], where="post", color="#d62728", linewidth=1.2, zorder=3,
                label="non-dominated front")
    ax.set_ylim(-0.05, 1.08)
    ax.legend(loc="best", fontsize="small")
    _save(fig, path)


def plot_curriculum(run: RunData, path: Path) -> None:
    from matplotlib.ticker import MaxNLocator

    families: list[str] = []
    for m in run.metrics:
        for family in m.get("frontier") or {}:
            if family not in families:
                families.append(family)
    fig, (ax,) = _figure(9, max(3.6, 2.6 + 0.22 * len(families)))
    generations = [m["generation"] for m in run.metrics]
    ax.set_title("curriculum frontier level per family")
    ax.set_ylabel("frontier level")
    _generation_axis(ax, generations)
    if not families:
        ax.text(0.5, 0.5, "no curriculum frontier recorded", ha="center", va="center", transform=ax.transAxes)
        _save(fig, path)
        return
    # families at the same level would hide each other: offset each line a little
    offsets = [0.0] if len(families) == 1 else [0.16 * (k / (len(families) - 1) - 0.5) for k in range(len(families))]
    markers = "osD^vP*Xh<>"
    ms = _marker_sizes(len(generations))[1] + 1 if len(generations) <= 40 else 0
    levels = []
    for k, family in enumerate(families):
        xs, ys = [], []
        for m in run.metrics:
            level = (m.get("frontier") or {}).get(family)
            if isinstance(level, (int, float)):
                xs.append(m["generation"])
                ys.append(level + offsets[k])
                levels.append(level)
        ax.step(xs, ys, where="post", marker=markers[k % len(markers)], markersize=ms, label=family,
                linewidth=1.6, alpha=0.9)
    if levels and max(levels) - min(levels) <= 12:
        ax.set_yticks(range(int(min(levels)), int(max(levels)) + 1))
    else:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if levels:
        ax.set_ylim(min(levels) - 0.5, max(levels) + 0.5)
    if len(families) == 1:
        ax.legend(loc="best", fontsize="small", title="family")
    else:  # beside the axes: several lines fill the plot, a legend inside would cover one
        fig.legend(loc="outside right upper", fontsize="small", title="family (lines offset a\nlittle to stay visible)")
    _save(fig, path)


# ---- HTML ---------------------------------------------------------------------------------


def _draw_front(ax, run: RunData, points: list[tuple[float, float]], front: list[int],
                counts: dict[tuple[float, float], list[dict[str, Any]]]) -> None:
    """The non-dominated front as a red step line with rings (labelled by id when
    few), and the best individual as a star."""
    front_points = sorted({points[i] for i in front}, key=lambda p: p[1])
    fx = [p[1] for p in front_points]
    fy = [p[0] for p in front_points]
    ax.step(fx, fy, where="post", color="#d62728", linewidth=1.2, alpha=0.8, zorder=3)
    ax.scatter(fx, fy, s=[30 + 25 * (len(counts[p]) - 1) ** 0.8 + 50 for p in front_points], facecolors="none",
               edgecolors="#d62728", linewidths=1.8, zorder=4, label=f"non-dominated: {len(front)}")
    if run.best is not None and not math.isnan(_num(run.best.get("accuracy"))):
        ax.scatter([_num(run.best.get("chain_tokens"))], [_num(run.best["accuracy"])], marker="*", s=260,
                   color=BEST_COLOR, edgecolors="black", linewidths=0.8, zorder=5,
                   label=f"best (lowest L_total): #{run.best.get('id')}")
    if len(front_points) <= 12:
        for p in front_points:
            ids = sorted(counts[p], key=lambda r: _num(r.get("l_total"), math.inf))
            text = ", ".join(f"#{r.get('id')}" for r in ids[:3]) + (f" +{len(ids) - 3}" if len(ids) > 3 else "")
            radius = math.sqrt(30 + 25 * (len(counts[p]) - 1) ** 0.8 + 50) / 2  # of the red ring, in points
            ax.annotate(text, (p[1], p[0]), xytext=(radius + 3, -radius * 0.7 - 4), textcoords="offset points",
                        fontsize=8, color="#a01010", zorder=6,
                        bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none", alpha=0.8))
