"""Individuals: a strategy with its lineage and its scores, as one typed class.

DEAP's selection and archives (``selNSGA2``, ``ParetoFront``) need only an object
with a ``fitness`` attribute, so an individual is a plain dataclass whose ``fitness``
is an instance of one of the two DEAP fitness classes made here, the one place that
calls ``creator.create``: scalar (maximise -L_total) and multi-objective (maximise
accuracy, minimise mean chain tokens, or cost where the run has several models) for
NSGA-II.

Identity matters: individuals compare by identity (``eq=False``), and the same
object may sit in the population and the hall of fame at once (checkpoints keep that
sharing, see :mod:`evo.engine.loop_state`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deap import base, creator

from fitness.loss import LossTerms
from genomes.strategy import Strategy

if not hasattr(creator, "EvoFitnessScalar"):  # creator classes are global: create once per process
    creator.create("EvoFitnessScalar", base.Fitness, weights=(1.0,))
    creator.create("EvoFitnessMulti", base.Fitness, weights=(1.0, -1.0))

MODES = ("scalar", "multi")


def new_fitness(mode: str) -> base.Fitness:
    """An empty (invalid) fitness of the class ``mode`` selects on."""
    return creator.EvoFitnessMulti() if mode == "multi" else creator.EvoFitnessScalar()


@dataclass(eq=False)
class Individual:
    """One member of the population. Lineage fields are fixed at birth; the score
    fields are set by the engine when the individual is evaluated (and cleared with
    ``fitness`` when the frontier moves)."""

    strategy: Strategy
    id: int
    fitness: base.Fitness
    parents: tuple[int, ...] = ()
    op: str = "seed"  # the operator that made it ("seed", "mut_prompt", "cx_strategy", "inject", ...)
    generation: int = 0  # generation of birth
    results: list[Any] | None = None  # ExampleResults of its last evaluation (not checkpointed: journaled)
    loss: LossTerms | None = None  # loss terms over the batches it was scored on
    l_total: float | None = None
    accuracy: float = 0.0
    chain_tokens: float = 0.0  # mean chain tokens per task
    cost: float = 0.0  # mean generated tokens per task x its model's cost factor (models.NAME.cost)
    d_model: float | None = None  # estimated ability on the normalised difficulty scale
    scored_on: tuple[int, ...] = field(default=())  # batch epochs its fitness covers (current frontier)


def make_individual(strategy: Strategy, mode: str, ident: int, parents: tuple[int, ...] = (),
                    op: str = "seed", generation: int = 0) -> Individual:
    return Individual(strategy, ident, new_fitness(mode), tuple(parents), op, generation)


def one_per_genome(individuals, latest_on_tie: bool = False) -> list[Individual]:
    """One individual per genome (content hash), in first-seen order: the copy scored
    on the most batches (``scored_on``). On a tie the first copy is kept, or with
    ``latest_on_tie`` the last. Copies of one genome scored on the same batches have
    the same results (scoring is deterministic per genome, task and seed), so which
    tied copy is kept changes only the lineage id."""
    chosen: dict[str, Individual] = {}
    for ind in individuals:
        key = ind.strategy.content_hash()
        held = chosen.get(key)
        if held is None or len(ind.scored_on) > len(held.scored_on) or (
                latest_on_tie and len(ind.scored_on) == len(held.scored_on)):
            chosen[key] = ind
    return list(chosen.values())
