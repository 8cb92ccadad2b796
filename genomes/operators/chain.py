"""The chain gene's operators: step hints, maximum steps, self-check, prefill."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from genomes.fragments import STEP_HINTS
from genomes.operators.limits import (
    MAX_HINTS,
    STEPS_RANGE,
    _clip,
    _mutate_until_changed,
    _one_point,
)
from genomes.strategy import ChainGene


# ---- chain gene ------------------------------------------------------------------
def mut_chain(gene: ChainGene, rng: random.Random) -> ChainGene:
    """One change: insert (at most MAX_HINTS), delete, replace or swap step hints,
    move ``max_steps`` by 1 or 2 within STEPS_RANGE, or toggle ``self_check``.
    ``prefill`` is never changed: it is how the format is entered, not a strategy
    choice worth searching."""
    hints = gene.step_hints
    lo, hi = STEPS_RANGE

    def insert() -> ChainGene:
        at = rng.randint(0, len(hints))
        return replace(gene, step_hints=hints[:at] + (rng.choice(STEP_HINTS),) + hints[at:])

    def delete() -> ChainGene:
        at = rng.randrange(len(hints))
        return replace(gene, step_hints=hints[:at] + hints[at + 1:])

    def replace_hint() -> ChainGene:
        at = rng.randrange(len(hints))
        new = rng.choice([h for h in STEP_HINTS if h != hints[at]])
        return replace(gene, step_hints=hints[:at] + (new,) + hints[at + 1:])

    def swap() -> ChainGene:
        i, j = sorted(rng.sample(range(len(hints)), 2))
        return replace(gene, step_hints=hints[:i] + (hints[j],) + hints[i + 1:j] + (hints[i],) + hints[j + 1:])

    def steps() -> ChainGene:
        return replace(gene, max_steps=int(_clip(gene.max_steps + rng.choice((-2, -1, 1, 2)), lo, hi)))

    def self_check() -> ChainGene:
        return replace(gene, self_check=not gene.self_check)

    return _mutate_until_changed(gene, rng, [
        (len(hints) < MAX_HINTS, insert),
        (len(hints) > 0, delete),
        (len(hints) > 0, replace_hint),
        (len(hints) > 1, swap),
        (True, steps),
        (True, self_check),
    ])


def cx_chain(a: ChainGene, b: ChainGene, rng: random.Random) -> tuple[ChainGene, ChainGene]:
    """One-point crossover of the step hints (cut to MAX_HINTS; repeated hints are
    kept, "Apply the next operation." twice can be the point); ``max_steps`` and
    ``self_check`` are each swapped with probability 0.5; each child keeps its own
    parent's ``prefill``."""
    h1, h2 = _one_point(a.step_hints, b.step_hints, rng, MAX_HINTS, dedupe=False)
    kw1: dict[str, Any] = {"step_hints": h1}
    kw2: dict[str, Any] = {"step_hints": h2}
    for name in ("max_steps", "self_check"):
        x, y = getattr(a, name), getattr(b, name)
        if rng.random() < 0.5:
            x, y = y, x
        kw1[name], kw2[name] = x, y
    return replace(a, **kw1), replace(b, **kw2)
