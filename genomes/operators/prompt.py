"""The prompt gene's operators: mutation (fragments, exemplars, exemplar choice),
pair-up of exemplars, crossover."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from genomes.exemplar_choice import EXEMPLAR_CHOICES, choice_matters
from genomes.fragments import EXEMPLARS, SLOT_FRAGMENTS
from genomes.operators.limits import (
    MAX_EXEMPLARS,
    PROMPT_SLOTS,
    REWRITABLE_SLOTS,
    _dedupe,
    _kind_count,
    _mutate_until_changed,
    _one_point,
    _tidy_choice,
)
from genomes.strategy import Exemplar, PromptGene


# ---- prompt gene -----------------------------------------------------------------
def mut_prompt(gene: PromptGene, rng: random.Random, exemplar_pool: Sequence[Exemplar] = EXEMPLARS) -> PromptGene:
    """One change: a slot gets another library fragment, or an exemplar from
    ``exemplar_pool`` is added (at most MAX_EXEMPLARS, no duplicates), dropped,
    swapped for another, or the exemplars are reordered, or ``exemplar_choice`` takes
    another value (only with two exemplars or more: with fewer it changes nothing
    the model sees), or the exemplars are paired up (:func:`pair_up_exemplars`).
    ``exemplar_pool`` must hold valid exemplars (the engine passes the library
    exemplars that fit the run's tasks)."""
    current = gene.exemplars
    unused = [e for e in _dedupe(tuple(exemplar_pool)) if e not in current]

    def new_slot() -> PromptGene:
        slot = rng.choice(REWRITABLE_SLOTS)
        options = [f for f in SLOT_FRAGMENTS[slot] if f != getattr(gene, slot)]
        return replace(gene, **{slot: rng.choice(options)})

    def add() -> PromptGene:
        at = rng.randint(0, len(current))
        return replace(gene, exemplars=current[:at] + (rng.choice(unused),) + current[at:])

    def drop() -> PromptGene:
        at = rng.randrange(len(current))
        return _tidy_choice(replace(gene, exemplars=current[:at] + current[at + 1:]))

    def swap() -> PromptGene:
        at = rng.randrange(len(current))
        return replace(gene, exemplars=current[:at] + (rng.choice(unused),) + current[at + 1:])

    def reorder() -> PromptGene:
        order = list(current)
        rng.shuffle(order)
        if tuple(order) == current:  # a shuffle of few items often is the identity
            order.reverse()
        return replace(gene, exemplars=tuple(order))

    def choice() -> PromptGene:
        return replace(gene, exemplar_choice=rng.choice([c for c in EXEMPLAR_CHOICES if c != gene.exemplar_choice]))

    def pair_up() -> PromptGene:
        return pair_up_exemplars(gene, unused, rng)

    return _mutate_until_changed(gene, rng, [
        (True, new_slot),
        (len(current) < MAX_EXEMPLARS and bool(unused), add),
        (len(current) > 0, drop),
        (len(current) > 0 and bool(unused), swap),
        (len(current) > 1, reorder),
        (choice_matters(current), choice),
        (len(current) < MAX_EXEMPLARS and any(_kind_count(e, current) < 2 for e in unused), pair_up),
    ])


def pair_up_exemplars(gene: PromptGene, pool: Sequence[Exemplar], rng: random.Random) -> PromptGene:
    """The gene with two exemplars of every kind of task (:func:`same_kind`) in
    ``pool``, shown ``nearest_two``: each question then sees two worked examples of
    its own kind and nothing else. A compound step because that strategy is several
    single mutations away from any seed, each too small to survive selection on a
    12-task batch, while together they gave the largest gain measured on the search
    benchmark (hand-built from ``fewshot``: +5.9 points on seed 0's held-out tasks,
    +4.2 on seed 1's; one exemplar of the kind, or exemplars of other kinds, mostly
    hurt). Exemplars the gene holds stay first, in order; pool exemplars are taken in
    random order while their kind has fewer than two and there is room (MAX_EXEMPLARS),
    so with more than three kinds some stay unpaired. Pure: returns a new gene."""
    exemplars = list(gene.exemplars)
    candidates = [e for e in _dedupe(tuple(pool)) if e not in exemplars]
    rng.shuffle(candidates)
    for exemplar in candidates:
        if len(exemplars) >= MAX_EXEMPLARS:
            break
        if _kind_count(exemplar, exemplars) < 2:
            exemplars.append(exemplar)
    # with one exemplar in all the choice changes nothing: keep one hash per behaviour
    return _tidy_choice(replace(gene, exemplars=tuple(exemplars), exemplar_choice="nearest_two"))


def cx_prompt(a: PromptGene, b: PromptGene, rng: random.Random) -> tuple[PromptGene, PromptGene]:
    """Uniform crossover of the text slots (each child takes every slot from one
    parent, the other child from the other) and of ``exemplar_choice``; one-point
    crossover of the exemplar tuples, deduplicated and cut to MAX_EXEMPLARS."""
    kw1: dict[str, Any] = {}
    kw2: dict[str, Any] = {}
    for slot in (*PROMPT_SLOTS, "exemplar_choice"):
        x, y = getattr(a, slot), getattr(b, slot)
        if rng.random() < 0.5:
            x, y = y, x
        kw1[slot], kw2[slot] = x, y
    kw1["exemplars"], kw2["exemplars"] = _one_point(a.exemplars, b.exemplars, rng, MAX_EXEMPLARS, dedupe=True)
    return _tidy_choice(replace(a, **kw1)), _tidy_choice(replace(b, **kw2))
