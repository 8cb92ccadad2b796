"""How the report writes numbers: percentages, durations, counts, fitness values;
a missing or non-numeric value is shown as a dash."""

from __future__ import annotations

import math
from typing import Any

from evo.report.data import _num


def pct(value: Any) -> str:
    value = _num(value)
    return "–" if math.isnan(value) else f"{value:.1%}"


def duration(seconds: Any) -> str:
    s = _num(seconds)
    if math.isnan(s):
        return "–"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {s % 60:.0f} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


def count(value: Any) -> str:
    v = _num(value)
    return "–" if math.isnan(v) else f"{int(v):,}"


def fitness(value: Any) -> str:
    v = _num(value)
    return "–" if math.isnan(v) else f"{v:+.4f}"
