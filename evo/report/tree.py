"""The lineage tree of the best individual: a layout computed on plain rows (tested
without matplotlib) and the plot drawn from it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evo.report.data import RunData, _num
from evo.report.fmt import pct
from evo.report.plots import BEST_COLOR, OP_COLORS, OTHER_OP_COLOR, _figure, _save
from evo.rundir.lineage import _id_key, ancestors


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
    _draw_edges(ax, layout, rows, all_rows, texts)
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
    _legend(fig, rows, layout, width, wide)
    fig.canvas.draw()  # lay the text boxes out once so the arrows clip at their edges
    _save(fig, path)
    return [r["id"] for r in rows]


def _draw_edges(ax, layout: TreeLayout, rows: list[dict[str, Any]], all_rows: list[dict[str, Any]],
                texts: dict[Any, Any]) -> None:
    """Parent → child arrows along the layout's routes (dashed for crossover), and
    dotted stubs where a parent was cut from a long ancestry."""
    from matplotlib.lines import Line2D

    pos = layout.nodes
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


def _legend(fig, rows: list[dict[str, Any]], layout: TreeLayout, width: float, wide: bool) -> None:
    """Operator colours, the best's frame and the two arrow styles, under the plot."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    by_id = {r["id"]: r for r in rows}
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


def _node_label(row: dict[str, Any], mode: str, compact: bool = False) -> str:
    """``#id operator`` then the fitness: -L_total in scalar mode, accuracy and chain
    tokens (the two objectives) in multi mode."""
    op = str(row.get("op", "?"))
    if compact:
        op = op.removeprefix("mut_").replace("cx_strategy", "cx").replace("llm_rewrite", "llm")
    head = f"#{row.get('id')} {op}"
    fitness = row.get("fitness") or []
    acc = pct(row.get("accuracy"))
    if mode == "multi" or len(fitness) == 2:
        tokens = f"{_num(row.get('chain_tokens')):.1f} tok"
        if compact:
            return f"{head}\n{acc} · {tokens}"
        return f"{head}\nacc {acc} · {tokens}\n−L_total {-_num(row.get('l_total')):+.3f}"
    value = _num(fitness[0]) if fitness else -_num(row.get("l_total"))
    if compact:
        return f"{head}\nf {value:+.3f}"
    return f"{head}\nfitness {value:+.3f}\nacc {acc}"


