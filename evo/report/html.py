"""The run report: PNG plots and one ``index.html`` for a run directory.

    write_report(RUN_DIR)             # -> RUN_DIR/report/index.html
    write_report(RUN_DIR, "out/rep")  # -> out/rep/index.html

Files written in the output directory:

    fitness.png     best / mean fitness (-L_total) per generation, and best train,
                    mean train and held-out accuracy of the best
    cost.png        mean chain tokens per generation, cumulative rollouts (new,
                    held-out share, reused from the journal) and generated tokens
    pareto.png      every evaluated individual, accuracy against chain tokens, the
                    non-dominated ones (max accuracy, min tokens) highlighted
    lineage.png     the best individual and all its ancestors, generation on the x axis
    curriculum.png  the curriculum frontier level of each family per generation
    index.html      summary table, the plots, the hall of fame, the best strategy's
                    rendered system prompt and the per-generation metrics

Works on finished runs, runs killed mid-way (no ``best.json``: the best comes from
the latest checkpoint), runs that only reached generation 0, scalar and multi mode.
Torn or unparsable lines in the JSONL files are skipped. Matplotlib is imported only
when plots are drawn, and through its object API on the Agg canvas (no pyplot, so
the caller's pyplot backend and global state are left alone).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genomes.errors import InputError

PLOTS = ("fitness.png", "cost.png", "pareto.png", "lineage.png", "curriculum.png")
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
}
OTHER_OP_COLOR = "#8c8c8c"
BEST_COLOR = "#e6a800"


# ---- reading a run directory ------------------------------------------------------------
def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file, one per line; a line that does not parse (a
    torn last line from a crash, a stray fragment) or is not an object is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def last_row_per_id(rows: Iterable[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """id -> the last row with that id (an individual is logged again when it is
    re-evaluated after the curriculum frontier moved); rows without an id are dropped."""
    out: dict[Any, dict[str, Any]] = {}
    for row in rows:
        if row.get("id") is not None:
            out[row["id"]] = row
    return out


@dataclass
class RunData:
    path: Path
    name: str
    config: dict[str, Any]
    mode: str
    metrics: list[dict[str, Any]]  # one per generation, sorted by generation
    lineage: dict[Any, dict[str, Any]]  # id -> last lineage row
    best: dict[str, Any] | None  # lineage-like row of the best individual
    best_source: str  # where ``best`` came from, for the report
    hall: list[dict[str, Any]]
    finished: bool  # best.json present
    checkpoint_generation: int | None
    notes: list[str] = field(default_factory=list)  # warnings shown in the report


def load_run(run_dir: str | Path) -> RunData:
    """Everything the report needs from ``run_dir``; InputError if it holds no metrics."""
    path = Path(run_dir)
    if not path.is_dir():
        raise InputError(f"not a run directory: {path} (no such directory)")
    by_generation: dict[Any, dict[str, Any]] = {}
    for row in read_jsonl(path / "metrics.jsonl"):
        if isinstance(row.get("generation"), int):
            by_generation[row["generation"]] = row  # a rerun generation keeps its last record
    metrics = [by_generation[g] for g in sorted(by_generation)]
    if not metrics:
        raise InputError(f"no metrics in {path}: metrics.jsonl is missing or holds no complete generation "
                         "(is it a run directory, and has generation 0 finished?)")
    notes: list[str] = []
    config = _read_json(path / "config.json", notes) or {}
    lineage = last_row_per_id(read_jsonl(path / "lineage.jsonl"))
    summary = _read_json(path / "best.json", notes) if (path / "best.json").exists() else None
    finished = isinstance(summary, dict)

    hall: list[dict[str, Any]] = []
    best_source = ""
    checkpoint_generation = None
    state = _latest_checkpoint_state(path, notes)
    if state is not None:
        checkpoint_generation = state.get("generation")
        if not config:
            config = state.get("config") or {}
        individuals = state.get("individuals") or []
        hall = [individuals[i] for i in state.get("hall") or [] if isinstance(i, int) and 0 <= i < len(individuals)]
        best_source = f"latest checkpoint (generation {checkpoint_generation})"
    if not hall and finished:
        hall = [row for row in summary.get("hall_of_fame") or [] if isinstance(row, dict)]
        best_source = "best.json"
    if not hall:  # no checkpoint yet (killed while writing the first one): use the metrics
        wanted = metrics[-1].get("best_hash")
        rows = sorted(lineage.values(), key=lambda r: _num(r.get("l_total"), math.inf))
        hall = [r for r in rows if r.get("hash") == wanted][:1] or rows[:1]
        best_source = "lineage.jsonl (no checkpoint or best.json)"
    hall = [_with_hash(row) for row in hall]
    best = hall[0] if hall else None
    if best is not None and best.get("id") is not None and best["id"] not in lineage:
        lineage[best["id"]] = best
    mode = (config.get("population") or {}).get("mode")
    if mode not in ("scalar", "multi"):
        mode = "multi" if any(len(r.get("fitness") or []) == 2 for r in lineage.values()) else "scalar"
    name = (config.get("run") or {}).get("name") or path.name
    return RunData(path, name, config, mode, metrics, lineage, best, best_source, hall, finished,
                   checkpoint_generation, notes)


def _read_json(path: Path, notes: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        notes.append(f"{path.name} is unreadable ({e}); ignored")
        return None


def _latest_checkpoint_state(path: Path, notes: list[str]) -> dict[str, Any] | None:
    from evo.rundir import checkpoint
    if not checkpoint.checkpoint_dir(path).is_dir():
        return None
    try:
        return checkpoint.load_latest(path, warn=notes.append).state
    except InputError as e:
        notes.append(f"no usable checkpoint: {e}")
        return None


def _with_hash(row: dict[str, Any]) -> dict[str, Any]:
    """Checkpoint rows carry no genome hash: compute it from the strategy."""
    if row.get("hash") or not isinstance(row.get("strategy"), dict):
        return row
    from genomes.strategy import Strategy

    try:
        return {**row, "hash": Strategy.decode(row["strategy"]).content_hash()}
    except InputError:
        return row


def _num(value: Any, default: float = math.nan) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


# ---- pure helpers (tested on hand-built data) ---------------------------------------------
def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices (ascending) of the non-dominated points among ``(accuracy, chain_tokens)``
    pairs, maximising accuracy and minimising tokens. A point is dominated when another
    is at least as good on both and strictly better on one, so equal points are all on
    the front. Points with a missing (None/NaN) coordinate are never on it. O(n log n)."""
    valid = [i for i, (acc, tok) in enumerate(points) if not (math.isnan(_num(acc)) or math.isnan(_num(tok)))]
    order = sorted(valid, key=lambda i: (points[i][1], -points[i][0]))
    front: list[int] = []
    best_before = -math.inf  # best accuracy among points with strictly fewer tokens
    k = 0
    while k < len(order):
        tokens = points[order[k]][1]
        group = []
        while k < len(order) and points[order[k]][1] == tokens:
            group.append(order[k])
            k += 1
        top = points[group[0]][0]
        if top > best_before:
            front += [i for i in group if points[i][0] == top]
        best_before = max(best_before, top)
    return sorted(front)


def ancestors(lineage_rows: Iterable[dict[str, Any]], best_id: Any, include_self: bool = True) -> list[dict[str, Any]]:
    """The rows of ``best_id``'s ancestors (parents, their parents, ...), found through
    the ``parents`` ids; the last row per id counts. Sorted by (generation, id); the
    individual itself is included unless ``include_self=False``. Parent ids with no
    row (a torn log) are skipped; cycles cannot loop."""
    rows = lineage_rows if isinstance(lineage_rows, dict) else last_row_per_id(lineage_rows)
    if best_id not in rows:
        return []
    seen = {best_id}
    stack = [best_id]
    while stack:
        for parent in rows[stack.pop()].get("parents") or []:
            if parent in rows and parent not in seen:
                seen.add(parent)
                stack.append(parent)
    if not include_self:
        seen.discard(best_id)
    return sorted((rows[i] for i in seen), key=lambda r: (_num(r.get("generation"), 0), _id_key(r.get("id"))))


def _id_key(ident: Any) -> tuple:
    return (0, ident, "") if isinstance(ident, (int, float)) else (1, 0, str(ident))


@dataclass
class TreeLayout:
    """Where :func:`tree_layout` puts the lineage DAG. ``nodes``: id -> (x, y);
    ``routes``: (parent id, child id) -> the points an edge passes between the two
    (empty for neighbouring columns); ``column_generation``: x -> generation."""

    nodes: dict[Any, tuple[float, float]]
    routes: dict[tuple[Any, Any], list[tuple[float, float]]]
    column_generation: dict[float, int]


NODE_GAP, MIXED_GAP, ROUTE_GAP = 1.0, 0.62, 0.3  # vertical distances: box-box, box-edge, edge-edge


def tree_layout(rows: Sequence[dict[str, Any]], best_id: Any) -> TreeLayout:
    """A layered drawing of the lineage DAG (parents -> children). x is a column
    index: one column per generation that holds a node, in order, plus an extra column
    to the right for each child born in its parent's generation (the mutants of
    generation 0's seeds), so every edge points right. An edge that spans several
    columns passes through a reserved point in each column between, so it never runs
    under a box. y: the best at 0, every other node or edge point near the mean height
    of what it leads to, in column order, kept apart by the gaps above."""
    by_id = {r["id"]: r for r in rows}
    gen = {i: int(_num(r.get("generation"), 0)) for i, r in by_id.items()}
    depth: dict[Any, int] = {}

    def local_depth(i: Any, trail: frozenset = frozenset()) -> int:
        if i not in depth:
            same = [p for p in by_id[i].get("parents") or [] if p in by_id and gen[p] == gen[i] and p not in trail]
            depth[i] = 1 + max((local_depth(p, trail | {i}) for p in same), default=-1)
        return depth[i]

    for i in by_id:
        local_depth(i)
    keys = sorted({(gen[i], depth[i]) for i in by_id})
    layer = {i: keys.index((gen[i], depth[i])) for i in by_id}
    # the augmented graph: real nodes ("n", id) and route points ("r", parent, child, layer)
    members: dict[int, list[tuple]] = {k: [] for k in range(len(keys))}
    successors: dict[tuple, list[tuple]] = {}
    for i in by_id:
        members[layer[i]].append(("n", i))
        successors.setdefault(("n", i), [])
    chains: dict[tuple[Any, Any], list[tuple]] = {}
    for child, r in by_id.items():
        for parent in dict.fromkeys(r.get("parents") or []):
            if parent not in by_id or parent == child:
                continue
            points = [("r", parent, child, k) for k in range(layer[parent] + 1, layer[child])]
            chain = [("n", parent), *points, ("n", child)]
            for a, b in zip(chain, chain[1:]):
                successors.setdefault(a, []).append(b)
            for point in points:
                members[point[3]].append(point)
            chains[(parent, child)] = points
    y: dict[tuple, float] = {}
    for k in sorted(members, reverse=True):  # the best's column first, then back in time
        items = members[k]
        wanted = {}
        for item in items:
            placed = [y[s] for s in successors.get(item, []) if s in y]
            wanted[item] = sum(placed) / len(placed) if placed else (0.0 if item == ("n", best_id) else math.inf)
        finite = [v for v in wanted.values() if v != math.inf]
        centre = sum(finite) / len(finite) if finite else 0.0
        items.sort(key=lambda item: (wanted[item] if wanted[item] != math.inf else centre, item[0] == "n",
                                     _id_key(item[1])))
        targets = [wanted[item] if wanted[item] != math.inf else centre for item in items]
        gaps = [NODE_GAP if a[0] == b[0] == "n" else ROUTE_GAP if a[0] == b[0] == "r" else MIXED_GAP
                for a, b in zip(items, items[1:])]
        y.update(zip(items, _spread(targets, gaps)))
    nodes = {i: (float(layer[i]), y[("n", i)]) for i in by_id}
    routes = {edge: [(float(p[3]), y[p]) for p in points] for edge, points in chains.items()}
    return TreeLayout(nodes, routes, {float(k): key[0] for k, key in enumerate(keys)})


def _spread(wanted: list[float], gaps: Sequence[float]) -> list[float]:
    """Sorted targets -> positions with at least ``gaps[k]`` between neighbours k and
    k+1, as close to the targets as a push-down-then-recentre pass gets."""
    if not wanted:
        return []
    out = [wanted[0]]
    for w, gap in zip(wanted[1:], gaps):
        out.append(max(w, out[-1] + gap))
    shift = (sum(wanted) - sum(out)) / len(out)
    return [v + shift for v in out]


# ---- plots ------------------------------------------------------------------------------
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

    # equal values would hide each other: held-out as open squares over filled train dots
    for key, label, style in (("best_accuracy", "best: train", dict(color="#1f77b4", marker="o", markersize=big, linewidth=2.2)),
                              ("mean_accuracy", "population mean: train", dict(color="#555555", marker=".", linestyle="--")),
                              ("heldout_accuracy", "best: held-out", dict(color="#d62728", marker="s", markersize=big * 1.4,
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
                              ("heldout_rollouts", "of which held-out", dict(color="#d62728", marker="s", markersize=ms, linestyle="--")),
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


MAX_TREE_NODES = 120  # a longer ancestry is cut to the generations nearest the best


def _nearest(rows: list[dict[str, Any]], best_id: Any, limit: int) -> list[dict[str, Any]]:
    """The ancestors within the largest number of parent steps from the best that
    keeps at most ``limit`` rows (at least the best and its parents)."""
    by_id = {r["id"]: r for r in rows}
    distance = {best_id: 0}
    frontier = [best_id]
    while frontier:
        nxt = []
        for i in frontier:
            for p in by_id[i].get("parents") or []:
                if p in by_id and p not in distance:
                    distance[p] = distance[i] + 1
                    nxt.append(p)
        frontier = nxt
    reach = 1
    while reach < max(distance.values()) and sum(d <= reach + 1 for d in distance.values()) <= limit:
        reach += 1
    return [r for r in rows if distance.get(r["id"], math.inf) <= reach]


def _light(color: str, amount: float = 0.25) -> tuple[float, float, float]:
    """``color`` mixed into white: an opaque pastel, so edges never show through a box."""
    from matplotlib.colors import to_rgb

    return tuple(1 - amount + amount * c for c in to_rgb(color))


def plot_lineage(run: RunData, path: Path) -> list[Any]:
    """Draw the best's lineage DAG into ``path``; returns the ids drawn."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    all_rows = ancestors(run.lineage, run.best.get("id")) if run.best is not None else []
    if not all_rows:
        fig, (ax,) = _figure(7, 3)
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no best individual found in this run", ha="center", va="center", transform=ax.transAxes)
        _save(fig, path)
        return []
    best_id = run.best["id"]
    rows = _nearest(all_rows, best_id, MAX_TREE_NODES) if len(all_rows) > MAX_TREE_NODES else all_rows
    layout = tree_layout(rows, best_id)
    pos = layout.nodes
    ys = [p[1] for p in pos.values()] + [q[1] for route in layout.routes.values() for q in route]
    span_y = max(ys) - min(ys) + 1
    n_cols = len(layout.column_generation)
    compact = n_cols > 24
    width = min(max(7.0, (1.45 if compact else 2.0) * n_cols + 1.5), 160.0)
    height = min(max(3.2, 0.62 * span_y + 1.8), 160.0)
    font = 7 if compact else 8
    fig, (ax,) = _figure(width, height)
    texts = {}
    for r in rows:
        i = r["id"]
        color = OP_COLORS.get(r.get("op"), OTHER_OP_COLOR)
        texts[i] = ax.text(*pos[i], _node_label(r, run.mode, compact), ha="center", va="center", fontsize=font, zorder=3,
                           bbox=dict(boxstyle="round,pad=0.35", facecolor=_light(color),
                                     edgecolor=BEST_COLOR if i == best_id else color,
                                     linewidth=2.6 if i == best_id else 1.2))
    by_id = {r["id"]: r for r in rows}
    for (parent, child), route in layout.routes.items():
        style = "--" if len(set(by_id[child].get("parents") or [])) > 1 else "-"
        points = [pos[parent], *route]
        if route:  # the part before the last column runs under the parent's (opaque) box
            ax.add_line(Line2D([p[0] for p in points], [p[1] for p in points], color="#555555", linewidth=1.0,
                               linestyle=style, zorder=1))
        ax.annotate("", xy=pos[child], xytext=points[-1], zorder=1,
                    arrowprops=dict(arrowstyle="-|>", color="#555555", linewidth=1.0, mutation_scale=11, linestyle=style,
                                    patchA=None if route else texts[parent].get_bbox_patch(),
                                    patchB=texts[child].get_bbox_patch(), shrinkA=0 if route else 2, shrinkB=2))
    all_ids = {r["id"] for r in all_rows}
    for r in rows:  # parents left out of a cut ancestry: a dotted stub from the left
        if any(p in all_ids and p not in by_id for p in r.get("parents") or []):
            ax.annotate("", xy=pos[r["id"]], xytext=(pos[r["id"]][0] - 0.5, pos[r["id"]][1]), zorder=1,
                        arrowprops=dict(arrowstyle="-|>", color="#999999", linewidth=1.0, mutation_scale=9,
                                        linestyle=":", patchB=texts[r["id"]].get_bbox_patch(), shrinkB=2))
    column_gen = layout.column_generation
    xs = sorted(column_gen)
    ax.set_xlim(min(xs) - 0.55, max(xs) + 0.55)
    ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
    ax.set_xticks(xs, [str(column_gen[x]) for x in xs])
    for k, g in enumerate(sorted(set(column_gen.values()))):  # shade every other generation
        if k % 2:
            cols = [x for x in xs if column_gen[x] == g]
            ax.axvspan(min(cols) - 0.5, max(cols) + 0.5, color="#000000", alpha=0.035, zorder=0, linewidth=0)
    ax.set_xlabel("generation of birth (only generations holding an ancestor)")
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    title = f"lineage of the best, #{best_id}: {len(all_rows) - 1} ancestor{'s' if len(all_rows) != 2 else ''}"
    if len(rows) < len(all_rows):
        title += f" (the {len(rows) - 1} nearest drawn; dotted: earlier ancestors left out)"
    wide = width > 16  # scrolled sideways in the page: keep title and legend at the left, in view
    ax.set_title(title, loc="left" if wide else "center")
    ops = sorted({r.get("op") for r in rows}, key=lambda o: (o not in OP_COLORS, list(OP_COLORS).index(o) if o in OP_COLORS else 0, str(o)))
    handles = [Patch(facecolor=_light(OP_COLORS.get(o, OTHER_OP_COLOR)), edgecolor=OP_COLORS.get(o, OTHER_OP_COLOR), label=str(o))
               for o in ops]
    handles.append(Patch(facecolor="white", edgecolor=BEST_COLOR, linewidth=2.6, label="best"))
    styles = {len(set(by_id[child].get("parents") or [])) > 1 for _, child in layout.routes}
    if False in styles:
        handles.append(Line2D([], [], color="#555555", marker=">", label="parent → child"))
    if True in styles:
        handles.append(Line2D([], [], color="#555555", linestyle="--", marker=">", label="crossover parents → child"))
    per_row = max(3, int(min(width, 16) / 1.55))
    n_rows = math.ceil(len(handles) / per_row)
    fig.legend(handles=handles, loc="outside lower left" if wide else "outside lower center",
               ncols=math.ceil(len(handles) / n_rows),
               fontsize="small", title="box colour: the operator that made the individual")
    fig.canvas.draw()  # lay the text boxes out once so the arrows clip at their edges
    _save(fig, path)
    return [r["id"] for r in rows]


def _node_label(row: dict[str, Any], mode: str, compact: bool = False) -> str:
    """``#id operator`` then the fitness: -L_total in scalar mode, accuracy and chain
    tokens (the two objectives) in multi mode."""
    op = str(row.get("op", "?"))
    if compact:
        op = op.removeprefix("mut_").replace("cx_strategy", "cx").replace("llm_rewrite", "llm")
    head = f"#{row.get('id')} {op}"
    fitness = row.get("fitness") or []
    acc = _pct(row.get("accuracy"))
    if mode == "multi" or len(fitness) == 2:
        tokens = f"{_num(row.get('chain_tokens')):.1f} tok"
        if compact:
            return f"{head}\n{acc} · {tokens}"
        return f"{head}\nacc {acc} · {tokens}\n−L_total {-_num(row.get('l_total')):+.3f}"
    value = _num(fitness[0]) if fitness else -_num(row.get("l_total"))
    if compact:
        return f"{head}\nf {value:+.3f}"
    return f"{head}\nfitness {value:+.3f}\nacc {acc}"


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
def _pct(value: Any) -> str:
    value = _num(value)
    return "–" if math.isnan(value) else f"{value:.1%}"


def _duration(seconds: Any) -> str:
    s = _num(seconds)
    if math.isnan(s):
        return "–"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {s % 60:.0f} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


def _int(value: Any) -> str:
    v = _num(value)
    return "–" if math.isnan(v) else f"{int(v):,}"


def _fit(value: Any) -> str:
    v = _num(value)
    return "–" if math.isnan(v) else f"{v:+.4f}"


def system_prompt(row: dict[str, Any] | None) -> str | None:
    """The rendered system prompt of a lineage row's strategy (None if it has none)."""
    if not row or not isinstance(row.get("strategy"), dict):
        return None
    from genomes.strategy import Strategy

    return Strategy.decode(row["strategy"]).render("{question}").messages[0]["content"]


def summary_rows(run: RunData) -> list[tuple[str, str]]:
    last = run.metrics[-1]
    configured = (run.config.get("run") or {}).get("generations")
    status = "finished (best.json written)" if run.finished else "not finished (killed, or still running): no best.json"
    heldout = [(m["generation"], _num(m.get("heldout_accuracy"))) for m in run.metrics
               if not math.isnan(_num(m.get("heldout_accuracy")))]
    best_heldout = max(heldout, key=lambda gv: (gv[1], -gv[0])) if heldout else None
    best = run.best or {}
    rollouts = f"{_int(last.get('rollouts'))} new (of which {_int(last.get('heldout_rollouts'))} held-out), " \
               f"{_int(last.get('reused'))} reused from the journal"
    return [
        ("run", run.name),
        ("directory", str(run.path)),
        ("status", status),
        ("selection mode", run.mode),
        ("generations", f"{last['generation']} of {configured if configured is not None else '?'} configured, "
                        f"after generation 0"
                        + ("" if len(run.metrics) == last["generation"] + 1 else f" ({len(run.metrics)} recorded)")),
        ("best strategy hash", str(best.get("hash") or last.get("best_hash") or "–")),
        ("best individual", f"#{best.get('id', '–')} · {best.get('op', '–')} · born in generation "
                            f"{best.get('generation', '–')} · from {run.best_source or '–'}"),
        ("best fitness (−L_total)", _fit(-_num(best["l_total"]) if "l_total" in best else last.get("best_fitness"))),
        ("best train accuracy", _pct(best.get("accuracy", last.get("best_accuracy")))),
        ("held-out accuracy, last generation", _pct(last.get("heldout_accuracy"))),
        ("held-out accuracy, best", f"{_pct(best_heldout[1])} (generation {best_heldout[0]})" if best_heldout else "–"),
        ("rollouts", rollouts),
        ("tokens generated", _int(last.get("tokens"))),
        ("wall time", f"{_duration(last.get('wall_s'))} (backend {_duration(last.get('backend_s'))})"),
        ("curriculum frontier", ", ".join(f"{k} {v}" for k, v in (last.get("frontier") or {}).items()) or "–"),
    ]


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>\n" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>"


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1500px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
table.summary th { width: 16em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f7f7f7; border: 1px solid #ddd; padding: 0.8em; white-space: pre-wrap; max-width: 110ch; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.3em 0 1.2em; }
div.scroll { overflow-x: auto; }
div.scroll img { max-width: none; }
.note { color: #8a5a00; }
"""


def render_html(run: RunData, plots: dict[str, str | None]) -> str:
    e = html.escape
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
             f"<title>evo run report: {e(run.name)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
             f"<h1>Run report: {e(run.name)}</h1>\n"]
    for note in run.notes:
        parts.append(f"<p class=\"note\">{e(note)}</p>\n")
    summary = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>\n" for k, v in summary_rows(run))
    parts.append(f"<h2>Summary</h2>\n<table class=\"summary\">\n{summary}</table>\n")
    captions = {
        "fitness.png": "Fitness and accuracy per generation (held-out: the best individual on the fixed held-out set, reported only)",
        "cost.png": "Chain length and cumulative cost per generation",
        "pareto.png": "All evaluated individuals: accuracy against chain tokens; the non-dominated front in red",
        "lineage.png": "Lineage of the best individual",
        "curriculum.png": "Curriculum frontier level over time",
    }
    for name in PLOTS:
        parts.append(f"<h2>{e(captions[name])}</h2>\n")
        error = plots.get(name)
        if error:
            parts.append(f"<p class=\"note\">this plot could not be drawn: {e(error)}</p>\n")
        else:
            img = f"<img src=\"{e(name)}\" alt=\"{e(captions[name])}\">"
            if name == "lineage.png":  # a long ancestry is wide: scroll rather than shrink its labels
                img = f"<div class=\"scroll\"><a href=\"{e(name)}\">{img}</a></div>"
            parts.append(img + "\n")
    best = run.best
    parts.append("<h2>Best strategy</h2>\n")
    if best is None:
        parts.append("<p>no best individual found</p>\n")
    else:
        strategy = best.get("strategy") or {}
        parts.append(f"<p>#{e(str(best.get('id')))} <code>{e(str(best.get('hash', '')))}</code> "
                     f"named <code>{e(str(strategy.get('name', '')))}</code>; rendered system prompt:</p>\n")
        try:
            prompt = system_prompt(best)
        except InputError as err:
            prompt, err_text = None, str(err)
        else:
            err_text = "the row carries no strategy"
        parts.append(f"<pre>{e(prompt)}</pre>\n" if prompt is not None else f"<p class=\"note\">{e(err_text)}</p>\n")
        details = {k: strategy.get(k) for k in ("chain", "decoding") if k in strategy}
        if details:
            parts.append(f"<details><summary>chain and decoding genes</summary><pre>{e(json.dumps(details, indent=2))}</pre></details>\n")
    if run.hall:
        parts.append("<h2>Hall of fame</h2>\n")
        parts.append(_table(("rank", "id", "hash", "operator", "born", "fitness (−L_total)", "train accuracy", "chain tokens",
                             "batches"),
                            ((k + 1, r.get("id"), r.get("hash", ""), r.get("op", ""), r.get("generation", ""),
                              _fit(-_num(r.get("l_total"))), _pct(r.get("accuracy")),
                              f"{_num(r.get('chain_tokens')):.1f}", len(r.get("scored_on") or []))
                             for k, r in enumerate(run.hall))))
    parts.append("\n<h2>Per generation</h2>\n<details open><summary>metrics.jsonl</summary>\n")
    parts.append(_table(("gen", "evaluated", "best fitness", "mean fitness", "best acc", "mean acc", "held-out acc",
                         "mean chain tokens", "rollouts", "reused", "tokens", "wall", "best hash", "frontier"),
                        ((m["generation"], _int(m.get("evaluated")), _fit(m.get("best_fitness")), _fit(m.get("mean_fitness")),
                          _pct(m.get("best_accuracy")), _pct(m.get("mean_accuracy")), _pct(m.get("heldout_accuracy")),
                          f"{_num(m.get('mean_chain_tokens')):.1f}", _int(m.get("rollouts")), _int(m.get("reused")),
                          _int(m.get("tokens")), _duration(m.get("wall_s")), m.get("best_hash", ""),
                          ", ".join(f"{k} {v}" for k, v in (m.get("frontier") or {}).items()))
                         for m in run.metrics)))
    parts.append("\n</details>\n</body>\n</html>\n")
    return "".join(parts)


# ---- entry point --------------------------------------------------------------------------
PLOTTERS = {
    "fitness.png": plot_fitness,
    "cost.png": plot_cost,
    "pareto.png": plot_pareto,
    "lineage.png": plot_lineage,
    "curriculum.png": plot_curriculum,
}


def write_report(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write the plots and ``index.html`` for ``run_dir`` into ``out_dir`` (default
    ``RUN_DIR/report``); returns the path of ``index.html``. InputError if the
    directory holds no metrics. A plot that fails to draw is named in the page
    instead of stopping the report."""
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    errors: dict[str, str | None] = {}
    for name, plot in PLOTTERS.items():
        target = out / name
        try:
            plot(run, target)
            errors[name] = None
        except Exception as err:  # a plot is not worth losing the rest of the report
            target.unlink(missing_ok=True)
            errors[name] = f"{type(err).__name__}: {err}"
    page = out / "index.html"
    tmp = page.with_suffix(".html.tmp")
    tmp.write_text(render_html(run, errors), encoding="utf-8")
    tmp.replace(page)
    return page
