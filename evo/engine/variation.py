"""Variation: the initial population, DEAP's varOr with pure genome operators, the
batched LLM rewrite, and injection of trained adapters. A mixin of
:class:`evo.engine.loop.Loop`; all randomness comes from the loop's ``self.rng``."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any

from evo.config.sections import served_models
from genomes.operators import (
    REWRITABLE_SLOTS,
    apply_rewrite,
    cx_strategy,
    fit_lora_to_model,
    mut_strategy,
    paired_up,
    rewrite_messages,
)
from genomes.strategy import Strategy

# Draws per offspring slot before a child that repeats a known genome is accepted
# anyway (a tiny search space can run out of new genomes).
NOVELTY_TRIES = 8


class Variation:
    def initial_population(self, seeds: list[Strategy]) -> list:
        """The seeds, the paired-up seed (``exemplars.pair_up_seed``), its constrained
        twin (:meth:`constrained_seed`), that one's twin on each other model of the run
        (:meth:`model_twins`), then mutants of the seeds (new genomes where
        the tries allow) until the population is full."""
        size = self.config.population.size
        population = [self.new_individual(s, (), "seed", 0) for s in seeds[:size]]
        known = {ind.strategy.content_hash() for ind in population}
        paired = self.paired_seed(population[0]) if len(population) < size else None
        if paired is not None and paired.content_hash() not in known:
            known.add(paired.content_hash())
            population.append(self.new_individual(paired, (population[0].id,), "pair_up", 0))
        parent = population[-1]
        constrained = self.constrained_seed(parent.strategy) if len(population) < size else None
        if constrained is not None and constrained.content_hash() not in known:
            known.add(constrained.content_hash())
            population.append(self.new_individual(constrained, (parent.id,), "constrain", 0))
        parent = population[-1]
        for twin in self.model_twins(parent.strategy)[: max(0, size - len(population))]:
            if twin.content_hash() not in known:
                known.add(twin.content_hash())
                population.append(self.new_individual(twin, (parent.id,), "switch_model", 0))

        def mutant() -> tuple[str, Any]:
            parent = population[self.rng.randrange(len(seeds[:size]))]
            child, op = self.mutate(parent.strategy)
            return "child", (child, (parent.id,), op)

        while len(population) < size:
            _, (child, parents, op) = self.redraw_known(mutant, known)
            known.add(child.content_hash())
            population.append(self.new_individual(child, parents, op, 0))
        return population

    def paired_seed(self, seed) -> Strategy | None:
        """The first seed with no exemplars of its own but two pool exemplars of every
        kind of task, shown ``nearest_two``: on a family no library exemplar covers the
        seeds score about 0 and selection has nothing to choose from, while two worked
        examples of the task's own kind make the model write the answer format."""
        pool = self.exemplars.exemplars()
        if not self.config.exemplars.pair_up_seed or not pool:
            return None
        return paired_up(seed.strategy, pool, self.rng)

    def constrained_seed(self, strategy: Strategy) -> Strategy | None:
        """``strategy`` under the strictest usable constrained decoding ("answer",
        else "structure"; None when only "off" is usable). A model that rarely writes
        the answer block scores 0 whatever its prompt; constrained, it always writes
        one (docs/benchmarks.md), so the search starts with a strategy that scores.
        Draws nothing from the rng."""
        mode = next((m for m in ("answer", "structure") if m in self.constrain_modes), None)
        if mode is None or strategy.decoding.constrain == mode:
            return None
        decoding = dataclasses.replace(strategy.decoding, constrain=mode)
        return dataclasses.replace(strategy, name=f"{strategy.name}+{mode}", decoding=decoding)

    def model_twins(self, strategy: Strategy) -> list[Strategy]:
        """``strategy`` on each other model of the run (none with one model): the
        population starts with every model, so selection compares them from the
        first generation instead of waiting for mutation to try one. Draws nothing
        from the rng."""
        twins = []
        for model in served_models(self.config):
            if model != strategy.decoding.model:
                decoding = dataclasses.replace(strategy.decoding, model=model)
                twins.append(fit_lora_to_model(dataclasses.replace(strategy, name=f"{strategy.name}@{model}",
                                                                   decoding=decoding)))
        return twins

    def vary(self, population: list, gen: int) -> list:
        """DEAP's varOr with pure operators: each child comes from crossover, mutation
        or LLM rewrite of parents drawn with the run rng. A crossover or mutation child
        whose genome the population or an earlier child already has is drawn again (up
        to NOVELTY_TRIES times): crossing two similar parents often gives one of them
        back, and such a copy costs an offspring slot and crowds out diversity."""
        p = self.config.population
        known = {ind.strategy.content_hash() for ind in population}
        offspring, rewrites = [], []
        for _ in range(p.offspring):
            kind, made = self.redraw_known(lambda: self.vary_one(population, known), known)
            if kind == "rewrite":
                rewrites.append(made)
            elif kind == "copy":  # reproduction: a copy keeps its fitness, costs nothing
                offspring.append(self.copy_individual(made))
            else:
                child, parents, op = made
                known.add(child.content_hash())
                offspring.append(self.new_individual(child, parents, op, gen))
        return offspring + self.llm_rewrite(rewrites, gen)

    def redraw_known(self, draw: Callable[[], tuple[str, Any]], known: set[str]) -> tuple[str, Any]:
        """``draw()`` (a ``vary_one``-shaped draw) again, up to NOVELTY_TRIES times in
        all, while it makes a child whose genome is in ``known``."""
        for _ in range(NOVELTY_TRIES):
            kind, made = draw()
            if kind != "child" or made[0].content_hash() not in known:
                break
        return kind, made

    def vary_one(self, population: list, known: set[str]) -> tuple[str, Any]:
        """One varOr draw: ("child", (strategy, parent ids, operator)), ("rewrite",
        (parent, slot)) for the batched LLM rewrite, or ("copy", parent). A child is
        the best of ``population.proposals`` draws (:meth:`best_of`)."""
        p = self.config.population
        roll = self.rng.random()
        if roll < p.crossover_prob and len(population) > 1 and "cx_strategy" in p.operators:
            a, b = self.rng.sample(population, 2)
            child, _ = self.best_of(lambda: (cx_strategy(a.strategy, b.strategy, self.rng)[0], "cx_strategy"), known)
            return "child", (child, (a.id, b.id), "cx_strategy")
        if roll < p.crossover_prob + p.mutation_prob:
            parent = self.rng.choice(population)
            if self.rng.random() < p.llm_rewrite_prob:
                return "rewrite", (parent, self.rng.choice(REWRITABLE_SLOTS))
            child, op = self.best_of(lambda: self.mutate(parent.strategy), known)
            return "child", (child, (parent.id,), op)
        return "copy", self.rng.choice(population)

    def best_of(self, draw: Callable[[], tuple[Strategy, str]], known: set[str]) -> tuple[Strategy, str]:
        """``draw()`` once, or with ``population.proposals = K > 1`` (and enough
        evidence) the best of K draws by one Thompson sample of the surrogate
        (:mod:`evo.engine.surrogate`), among those whose genome is not in ``known``
        when any is new. With K = 1 it draws from the rng exactly as plain variation."""
        first = draw()
        proposals = self.config.population.proposals
        if proposals <= 1 or not self.surrogate.ready():
            return first
        score = self.surrogate.sampler(self.rng)
        drawn = [first] + [draw() for _ in range(proposals - 1)]
        new = [made for made in drawn if made[0].content_hash() not in known] or drawn
        return max(new, key=lambda made: score(made[0]))  # max keeps the first of equals

    def inject(self, genes: Sequence, population: list, gen: int) -> list:
        """New individuals carrying each trained adapter gene (operator ``inject``):
        the canonical prompt, and the current best strategy (its child in the lineage)."""
        from evo.rundir.inject import injected_strategies

        present = {ind.strategy.content_hash() for ind in population}
        best = self.hall[0]
        added = []
        for gene in genes:
            for strategy in injected_strategies(gene, best.strategy):
                if strategy.content_hash() in present:
                    continue
                present.add(strategy.content_hash())
                parents = (best.id,) if strategy.prompt == best.strategy.prompt else ()
                added.append(self.new_individual(strategy, parents, "inject", gen))
        if added and self.show_progress:
            print(f"injected {len(added)} individuals carrying {len(genes)} trained adapter(s): "
                  f"#{', #'.join(str(ind.id) for ind in added)}", file=sys.stderr, flush=True)
        return added

    def mutate(self, strategy: Strategy) -> tuple[Strategy, str]:
        weights = self.config.gene_weights() or {"prompt": 1.0}
        return mut_strategy(strategy, self.rng, models=served_models(self.config), gene_weights=weights,
                            exemplar_pool=self.exemplars.exemplars(),
                            lora_options={"sigmas": self.config.population.lora_sigmas},
                            constrain_modes=self.constrain_modes)

    def llm_rewrite(self, rewrites: list, gen: int) -> list:
        """The model rewrites one instruction slot per chosen parent, in one batched call."""
        if not rewrites:
            return []
        from fitness.backends.base import Request, SamplingParams

        requests = [
            Request(rewrite_messages(getattr(parent.strategy.prompt, slot), slot),
                    SamplingParams(temperature=0.7, top_p=0.95, max_new_tokens=48, seed=self.rng.randrange(2**31)))
            for parent, slot in rewrites
        ]
        children = []
        for (parent, slot), completion in zip(rewrites, self.backend.generate(requests)):
            prompt = apply_rewrite(parent.strategy.prompt, slot, completion.text)
            child = dataclasses.replace(parent.strategy, prompt=prompt)
            children.append(self.new_individual(child, (parent.id,), "mut_llm_rewrite", gen))
        return children
