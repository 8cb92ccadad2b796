"""DEAP types: the one place that calls ``creator.create``.

An individual is a DEAP object carrying a :class:`~genomes.strategy.Strategy` and
its lineage (id, parent ids, operator, generation of birth). Two fitness classes:
scalar (maximise -L_total) and multi-objective (maximise accuracy, minimise mean
chain tokens) for NSGA-II.
"""

from __future__ import annotations

from deap import base, creator

from genomes.strategy import Strategy

if not hasattr(creator, "EvoFitnessScalar"):  # creator classes are global: create once per process
    creator.create("EvoFitnessScalar", base.Fitness, weights=(1.0,))
    creator.create("EvoFitnessMulti", base.Fitness, weights=(1.0, -1.0))
    creator.create("EvoIndividualScalar", object, fitness=creator.EvoFitnessScalar)
    creator.create("EvoIndividualMulti", object, fitness=creator.EvoFitnessMulti)


def make_individual(strategy: Strategy, mode: str, ident: int, parents: tuple[int, ...] = (),
                    op: str = "seed", generation: int = 0):
    cls = creator.EvoIndividualMulti if mode == "multi" else creator.EvoIndividualScalar
    ind = cls()
    ind.strategy = strategy
    ind.id = ident
    ind.parents = parents
    ind.op = op
    ind.generation = generation
    ind.loss = None  # LossTerms of its evaluation batch, set by the engine
    ind.scored_on = ()  # batch epochs its fitness covers (current frontier), set by the engine
    ind.accuracy = 0.0
    ind.chain_tokens = 0.0
    return ind


def one_per_genome(individuals, latest_on_tie: bool = False) -> list:
    """One individual per genome (content hash), in first-seen order: the copy scored
    on the most batches (``scored_on``). On a tie the first copy is kept, or with
    ``latest_on_tie`` the last. Copies of one genome scored on the same batches have
    the same results (scoring is deterministic per genome, task and seed), so which
    tied copy is kept changes only the lineage id."""
    chosen: dict[str, object] = {}
    for ind in individuals:
        key = ind.strategy.content_hash()
        held = chosen.get(key)
        if held is None or len(ind.scored_on) > len(held.scored_on) or (
                latest_on_tie and len(ind.scored_on) == len(held.scored_on)):
            chosen[key] = ind
    return list(chosen.values())
