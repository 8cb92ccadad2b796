"""A run directory read back for the report: metrics, lineage, hall of fame and the
best individual, from a finished run or one killed mid-way (the best then comes from
the latest checkpoint). Torn or unparsable lines are skipped."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evo.rundir.files import read_log
from evo.rundir.lineage import last_row_per_id
from genomes.errors import InputError


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
    for row in read_log(path / "metrics.jsonl"):
        if isinstance(row.get("generation"), int):
            by_generation[row["generation"]] = row  # a rerun generation keeps its last record
    metrics = [by_generation[g] for g in sorted(by_generation)]
    if not metrics:
        raise InputError(f"no metrics in {path}: metrics.jsonl is missing or holds no complete generation "
                         "(is it a run directory, and has generation 0 finished?)")
    notes: list[str] = []
    config = _read_json(path / "config.json", notes) or {}
    lineage = last_row_per_id(read_log(path / "lineage.jsonl"))
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

