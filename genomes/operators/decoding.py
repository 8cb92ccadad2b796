"""The decoding gene's operators: temperature, top-p, max new tokens, votes, model."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import fields, replace
from typing import Any

from genomes.operators.limits import (
    GREEDY_SNAP,
    MIN_VOTING_TEMPERATURE,
    TEMPERATURE_RANGE,
    TEMPERATURE_SIGMA,
    TOKEN_GRID,
    TOP_P_RANGE,
    TOP_P_SIGMA,
    VOTES,
    _clip,
    _mutate_until_changed,
    _repair_votes,
)
from genomes.strategy import DecodingGene


# ---- decoding gene ---------------------------------------------------------------
def mut_decoding(gene: DecodingGene, rng: random.Random, models: Sequence[str] = ("default",),
                 constrain_modes: Sequence[str] = ("off",)) -> DecodingGene:
    """One change: temperature (Gaussian step clipped to TEMPERATURE_RANGE, or a
    jump to 0 = greedy), top_p (Gaussian step in TOP_P_RANGE), max_new_tokens (a
    neighbour on TOKEN_GRID), votes (another of VOTES), the model (another of
    ``models``) or the constrained-decoding mode (another of ``constrain_modes``;
    with one mode this option is off and the rng is drawn from as without it). Votes and temperature are repaired together: votes > 1 raises the
    temperature to at least MIN_VOTING_TEMPERATURE, greedy decoding sets votes to 1."""
    models = tuple(models)
    if not models:
        raise ValueError("mut_decoding: models must not be empty")

    def temperature() -> DecodingGene:
        t = gene.temperature
        if t > 0 and rng.random() < GREEDY_SNAP:
            new = 0.0
        else:
            step = rng.gauss(0.0, TEMPERATURE_SIGMA)
            # From greedy only an upward step is a change; elsewhere reflect at the bounds.
            if t <= 0 or not TEMPERATURE_RANGE[0] <= t + step <= TEMPERATURE_RANGE[1]:
                step = abs(step) if t <= 0 else -step
            new = round(_clip(t + step, *TEMPERATURE_RANGE), 2)  # 2 decimals: stable JSON and hashes
        return replace(gene, temperature=new)

    def top_p() -> DecodingGene:
        step = rng.gauss(0.0, TOP_P_SIGMA)
        if not TOP_P_RANGE[0] <= gene.top_p + step <= TOP_P_RANGE[1]:
            step = -step
        return replace(gene, top_p=round(_clip(gene.top_p + step, *TOP_P_RANGE), 2))

    def max_new_tokens() -> DecodingGene:
        here = min(range(len(TOKEN_GRID)), key=lambda i: abs(TOKEN_GRID[i] - gene.max_new_tokens))
        there = int(_clip(here + rng.choice((-2, -1, 1, 2)), 0, len(TOKEN_GRID) - 1))
        return replace(gene, max_new_tokens=TOKEN_GRID[there])

    def votes() -> DecodingGene:
        v = rng.choice([v for v in VOTES if v != gene.votes])
        t = max(gene.temperature, MIN_VOTING_TEMPERATURE) if v > 1 else gene.temperature
        return replace(gene, votes=v, temperature=t)

    def model() -> DecodingGene:
        return replace(gene, model=rng.choice([m for m in models if m != gene.model]))

    other_modes = [m for m in constrain_modes if m != gene.constrain]

    def constrain() -> DecodingGene:
        return replace(gene, constrain=rng.choice(other_modes))

    out = _mutate_until_changed(gene, rng, [
        (True, temperature),
        (True, top_p),
        (True, max_new_tokens),
        (True, votes),
        (any(m != gene.model for m in models), model),
        (bool(other_modes), constrain),
    ])
    return _repair_votes(out)


def cx_decoding(a: DecodingGene, b: DecodingGene, rng: random.Random) -> tuple[DecodingGene, DecodingGene]:
    """Uniform crossover per field, then votes set to 1 where the child is greedy.
    A greedy child's temperature came from a greedy parent, whose votes is 1, so
    with valid parents every child field still comes from one of them. The
    ``constrain`` field draws only where the parents differ, so parents without
    constrained decoding cross exactly as before the field existed."""
    kw1: dict[str, Any] = {}
    kw2: dict[str, Any] = {}
    for f in fields(DecodingGene):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "constrain" and x == y:
            kw1[f.name] = kw2[f.name] = x
            continue
        if rng.random() < 0.5:
            x, y = y, x
        kw1[f.name], kw2[f.name] = x, y
    return _repair_votes(replace(a, **kw1)), _repair_votes(replace(b, **kw2))
