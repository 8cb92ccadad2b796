"""Lineage of a run: the rows of ``lineage.jsonl`` by individual and the walk from
an individual to its ancestors, for the report's tree and the export's model card."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def last_row_per_id(rows: Iterable[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """id -> the last row with that id (an individual is logged again when it is
    re-evaluated after the curriculum frontier moved); rows without an id are dropped."""
    out: dict[Any, dict[str, Any]] = {}
    for row in rows:
        if row.get("id") is not None:
            out[row["id"]] = row
    return out




def walk(rows: dict[Any, dict[str, Any]], ident: Any) -> list[Any]:
    """``ident`` and every ancestor reachable through ``parents`` ids, breadth first
    (the individual first); ids with no row (a torn log) are skipped, cycles cannot loop."""
    seen, queue, order = set(), [ident], []
    while queue:
        current = queue.pop(0)
        if current in seen or current not in rows:
            continue
        seen.add(current)
        order.append(current)
        queue += list(rows[current].get("parents") or [])
    return order


def ancestors(lineage_rows: Iterable[dict[str, Any]], best_id: Any, include_self: bool = True) -> list[dict[str, Any]]:
    """The rows of ``best_id``'s ancestors (parents, their parents, ...), found through
    the ``parents`` ids; the last row per id counts. Sorted by (generation, id); the
    individual itself is included unless ``include_self=False``. Parent ids with no
    row (a torn log) are skipped; cycles cannot loop."""
    rows = lineage_rows if isinstance(lineage_rows, dict) else last_row_per_id(lineage_rows)
    seen = set(walk(rows, best_id))
    if not include_self:
        seen.discard(best_id)
    return sorted((rows[i] for i in seen), key=lambda r: (_num(r.get("generation"), 0), _id_key(r.get("id"))))


def _id_key(ident: Any) -> tuple:
    return (0, ident, "") if isinstance(ident, (int, float)) else (1, 0, str(ident))



def _num(value: Any, default: float = math.nan) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default
