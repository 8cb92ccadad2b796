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
