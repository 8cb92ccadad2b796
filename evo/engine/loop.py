"""The evolution loop: DEAP's (mu + lambda), or NSGA-II in multi-objective mode.

Per generation, in the order of ``deap.algorithms.eaMuPlusLambda``::

    offspring = vary(population)                     # pure genome operators, run rng
    evaluate(individuals without a valid fitness)     # one backend call, journal-cached
    population = select(population + offspring, mu)
    hall of fame, held-out score of the best, curriculum update, logbook, metrics

The training batch is a function of the curriculum frontier, the batch *epoch* and
the run seed. With ``tasks.rotate_every = 0`` the epoch is always 0: while the
frontier stays, every individual is scored on the same tasks, so fitnesses compare
fairly and only new individuals are evaluated. With ``rotate_every = N`` the epoch is
``generation // N``: each new epoch draws a fresh batch, the survivors (and
hall-of-fame members) are scored on it too, and an individual's fitness covers every
batch it has been scored on since the frontier last moved (``ind.scored_on``; the
older batches come back from the journal at no cost). A strategy that was lucky on
one small batch is thus re-tested instead of being kept for good, and long-lived
individuals carry more evidence; with ``population.hall_min_batches = K`` the hall
ranks strategies with K batches of evidence above those with fewer, so the reported
best has been re-tested. When the frontier moves the fitness function has
changed, so the survivors' fitnesses are invalidated and they are scored again on
the new batch only, and so are the hall-of-fame and Pareto-front members (both rank
on current-frontier scores only; old completions stay in the journal). A genome is
in the population and the hall once (``individuals.one_per_genome``: the copy with
the most evidence), and variation draws again rather than repeat one. All variation
randomness flows from one
``random.Random(config.run.seed)``. Held-out results are reported, never used for
selection.
"""

from __future__ import annotations

import dataclasses
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deap import tools

from evo.rundir import checkpoint
from evo.config.sections import RunConfig
from evo.rundir.faults import maybe_crash
from evo.engine.individuals import make_individual, one_per_genome
from evo.engine.loop_state import (
    IndividualTable,
    global_rng_arrays,
    individual_from_json,
    individual_to_json,
    restore_global_rngs,
    rng_from_json,
    rng_to_json,
)
from evo.rundir.files import RunDir
from evo.engine.task_pool import TaskPool
from fitness.backends.base import Backend
from fitness.backends.factory import BackendSpec, build_backend_from_spec
from fitness.curriculum import Curriculum
from fitness.tasks import Task
from fitness.journal import Journal, evaluate_with_journal
from fitness.loss import LossWeights, individual_loss, multi_objective
from genomes.errors import InputError
from genomes.operators import REWRITABLE_SLOTS, apply_rewrite, cx_strategy, mut_strategy, rewrite_messages
from genomes.strategy import Strategy


GenerationCallback = Callable[[dict[str, Any]], None]

# Draws per offspring slot before a child that repeats a known genome is accepted
# anyway (a tiny search space can run out of new genomes).
NOVELTY_TRIES = 8


@dataclass
class RunResult:
    run_dir: str
    hall_of_fame: list[dict[str, Any]]
    metrics: list[dict[str, Any]]
    best: Strategy
    training_batches: list[list[Task]]  # in the order the frontier states were first met


@dataclass
class _Counters:
    next_id: int = 0
    rollouts: int = 0
    heldout_rollouts: int = 0  # part of rollouts spent on reporting, not on search
    reused: int = 0
    tokens: int = 0
    backend_s: float = 0.0
    evaluated: int = 0  # individuals evaluated in the current generation
    started: float = field(default_factory=time.perf_counter)


class _TimedBackend:
    """Counts time spent inside the backend (for the overhead figure)."""

    def __init__(self, backend: Backend, counters: _Counters) -> None:
        self.backend, self.counters = backend, counters

    def generate(self, requests, progress=None):
        started = time.perf_counter()
        try:
            return self.backend.generate(requests, progress=progress)
        finally:
            self.counters.backend_s += time.perf_counter() - started

    def count_tokens(self, text: str) -> int:
        return self.backend.count_tokens(text)

    def __getattr__(self, name: str):  # optional backend features (materialise_lora) pass through
        return getattr(self.backend, name)


def backend_spec(config: RunConfig) -> BackendSpec:
    """What ``config.model`` asks for, as a picklable spec (Ray actors build from it)."""
    m, p = config.model, config.population
    common = {"model": m.name, "cache_dir": m.cache_dir or None, "adapter_store": str(config.run_dir / "adapters")}
    if m.backend == "vllm":
        # every individual of a generation (and the held-out top) may carry its own adapter
        max_loras = m.max_loras or p.size + p.offspring + config.tasks.heldout_top
        return BackendSpec("vllm", {**common, "max_loras": max_loras, "max_lora_rank": m.max_lora_rank,
                                    "gpu_memory_utilization": m.gpu_memory_utilization, "seed": config.run.seed,
                                    "batch_invariant": m.batch_invariant})
    return BackendSpec("hf", {**common, "device": m.device, "token_budget": m.token_budget})


def build_backend(config: RunConfig) -> Backend:
    """The configured backend: hf or vllm, in this process or sharded over Ray actors."""
    m = config.model
    spec = backend_spec(config)
    if m.ray_actors:
        from fitness.backends.ray_pool import RayBackend

        return RayBackend(spec, actors=m.ray_actors, address=m.ray_address or None,
                          cpus_per_actor=m.cpus_per_actor, gpus_per_actor=m.gpus_per_actor)
    return build_backend_from_spec(spec)


def run_evolution(config: RunConfig, backend: Backend | None = None, show_progress: bool = True,
                  overwrite: bool = False, on_generation: GenerationCallback | None = None) -> RunResult:
    """Run ``config.run.generations`` generations in ``config.run_dir``; see module doc.

    Refuses (InputError) to start in a directory that already holds a run, unless
    ``overwrite``, which deletes it first. ``on_generation(record)`` is called with
    each generation's metrics record after its checkpoint is written; an exception it
    raises (e.g. an Optuna prune) stops the run there and propagates.
    """
    from evo.config.sections import check_tasks

    check_tasks(config)
    seeds = [Strategy.load(s) for s in config.population.seeds]
    run_dir = RunDir(config.run_dir)
    run_dir.create(config.to_dict(), overwrite=overwrite)
    counters = _Counters()
    backend = _TimedBackend(backend or build_backend(config), counters)
    loop = _Loop(config, backend, run_dir, counters, show_progress, on_generation)
    with Journal(run_dir.journal_path) as journal:
        loop.journal = journal
        return loop.run(seeds)


def resume_evolution(run_dir: str | Path, generations: int | None = None, backend: Backend | None = None,
                     show_progress: bool = True, on_generation: GenerationCallback | None = None,
                     inject_adapters: Sequence[str | Path] = ()) -> RunResult:
    """Continue a run from its last complete checkpoint, up to ``generations`` in total
    (default: the configured number). Completions already in the journal are reused.

    ``inject_adapters``: PEFT adapter directories (e.g. from ``evo distill --train``)
    imported into the run's adapter store and added to the population as new
    individuals (see :mod:`evo.rundir.inject`); they are scored in the next generation. The
    injection lives in the checkpoints from that generation on: a run killed before
    it needs the flag again."""
    from evo.config.sections import RunConfig
    from evo.rundir.inject import import_adapter

    run = RunDir(run_dir)
    saved = checkpoint.load_latest(run.path)
    config = RunConfig.from_dict(saved.state["config"], where="checkpoint config")
    if generations is not None:
        if generations < saved.generation:
            raise InputError(f"--generations {generations}: the run already has {saved.generation} generations")
        config = dataclasses.replace(config, run=dataclasses.replace(config.run, generations=generations))
    if inject_adapters and config.run.generations <= saved.generation:
        raise InputError(f"--inject-adapter: the run already has all its {saved.generation} generations; pass "
                         f"--generations {saved.generation + 1} or more so the injected individuals are scored")
    genes = [import_adapter(run.path, path) for path in inject_adapters]  # refuse bad adapters before the model loads
    if generations is not None:
        run.write_json("config.json", config.to_dict())
    counters = _Counters()
    backend = _TimedBackend(backend or build_backend(config), counters)
    loop = _Loop(config, backend, run, counters, show_progress, on_generation)
    with Journal(run.journal_path) as journal:
        loop.journal = journal
        population = loop.restore(saved)
        population = population + loop.inject(genes, population, saved.generation + 1)
        if show_progress:
            print(f"resuming {run.path} after generation {saved.generation} "
                  f"({journal.count() - saved.state['journal_rows']} journaled completions past the checkpoint will be reused)",
                  file=sys.stderr, flush=True)
        return loop.continue_from(population, saved.generation + 1)


def make_curriculum(config: RunConfig, pool: TaskPool) -> Curriculum:
    c = config.curriculum
    curriculum = Curriculum(pool.levels(), start_level=0, up_threshold=c.up_threshold,
                            down_threshold=c.down_threshold, spread=c.spread)
    curriculum.frontier.update(pool.start_levels())
    return curriculum


class _Loop:
    def __init__(self, config: RunConfig, backend, run_dir: RunDir, counters: _Counters, show_progress: bool,
                 on_generation: GenerationCallback | None = None) -> None:
        self.config, self.backend, self.run_dir, self.counters = config, backend, run_dir, counters
        self.show_progress, self.on_generation = show_progress, on_generation
        self.rng = random.Random(config.run.seed)
        self.pool = TaskPool(config)
        self.curriculum = make_curriculum(config, self.pool)
        self.heldout_tasks = self.pool.heldout()
        self.exemplar_pool = self.pool.exemplar_pool()  # what mut_prompt adds and swaps in
        self.weights = LossWeights(config.loss.alpha, config.loss.beta, config.loss.gamma, config.loss.delta)
        self.mode = config.population.mode
        self.hall: list = []  # best unique individuals by -L_total, both modes
        self.pareto = tools.ParetoFront(similar=_same_genome) if self.mode == "multi" else None
        self.logbook = tools.Logbook()
        self.metrics: list[dict[str, Any]] = []
        self.journal: Journal | None = None
        self.batches: dict[tuple, list] = {}  # (frontier state, epoch) -> training tasks
        self.frontier_moved = False

    # ---- the loop ----------------------------------------------------------------------
    def run(self, seeds: list[Strategy]) -> RunResult:
        self.counters.started = time.perf_counter()  # model loading is not the loop's time
        population = self.initial_population(seeds)
        self.evaluate(population, generation=0)
        population = self.select(population, self.config.population.size)
        self.end_generation(0, population)
        return self.continue_from(population, 1)

    def continue_from(self, population: list, first_generation: int) -> RunResult:
        for gen in range(first_generation, self.config.run.generations + 1):
            offspring = self.vary(population, gen)
            self.evaluate(population + offspring, generation=gen)
            population = self.select(population + offspring, self.config.population.size)
            self.end_generation(gen, population)
        return self.finish()

    def end_generation(self, gen: int, population: list) -> None:
        self.record(gen, population)
        self.checkpoint(gen, population)
        if self.on_generation:
            self.on_generation(self.metrics[-1])

    def initial_population(self, seeds: list[Strategy]) -> list:
        """The seeds, then mutants of them (new genomes where the tries allow) until the
        population is full."""
        size = self.config.population.size
        population = [self.new_individual(s, (), "seed", 0) for s in seeds[:size]]
        known = {ind.strategy.content_hash() for ind in population}

        def mutant() -> tuple[str, Any]:
            parent = population[self.rng.randrange(len(seeds[:size]))]
            child, op = self.mutate(parent.strategy)
            return "child", (child, (parent.id,), op)

        while len(population) < size:
            _, (child, parents, op) = self.redraw_known(mutant, known)
            known.add(child.content_hash())
            population.append(self.new_individual(child, parents, op, 0))
        return population

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
            kind, made = self.redraw_known(lambda: self.vary_one(population), known)
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

    def vary_one(self, population: list) -> tuple[str, Any]:
        """One varOr draw: ("child", (strategy, parent ids, operator)), ("rewrite",
        (parent, slot)) for the batched LLM rewrite, or ("copy", parent)."""
        p = self.config.population
        roll = self.rng.random()
        if roll < p.crossover_prob and len(population) > 1 and "cx_strategy" in p.operators:
            a, b = self.rng.sample(population, 2)
            child, _ = cx_strategy(a.strategy, b.strategy, self.rng)
            return "child", (child, (a.id, b.id), "cx_strategy")
        if roll < p.crossover_prob + p.mutation_prob:
            parent = self.rng.choice(population)
            if self.rng.random() < p.llm_rewrite_prob:
                return "rewrite", (parent, self.rng.choice(REWRITABLE_SLOTS))
            child, op = self.mutate(parent.strategy)
            return "child", (child, (parent.id,), op)
        return "copy", self.rng.choice(population)

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
        return mut_strategy(strategy, self.rng, models=self.config.model.models, gene_weights=weights,
                            exemplar_pool=self.exemplar_pool,
                            lora_options={"sigmas": self.config.population.lora_sigmas})

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

    def evaluate(self, individuals: Sequence, generation: int) -> None:
        """Score, on this generation's batch, the individuals without a valid fitness
        and those not yet scored on it (a rotated batch; see the module docstring)."""
        individuals = list(individuals)
        epoch = self.batch_epoch(generation)
        batch_changed = self.frontier_moved or any(ind.fitness.valid and epoch not in ind.scored_on
                                                   for ind in individuals)
        if batch_changed:
            # Hall-of-fame (and Pareto front) members outside the population are scored
            # again too: kept with scores from an older batch they would outrank every
            # newcomer for good.
            individuals += self.archive_outside(individuals)
        if self.frontier_moved:  # scored on the previous frontier's batches: no longer comparable
            for ind in individuals:
                del ind.fitness.values
                ind.scored_on = ()
            self.frontier_moved = False
        scored = [ind for ind in individuals if not ind.fitness.valid or epoch not in ind.scored_on]
        self.counters.evaluated = len(scored)
        if not scored:
            return
        evidence = [(*ind.scored_on, epoch) if ind.fitness.valid else (epoch,) for ind in scored]
        jobs = [(ind.strategy, self.evidence_tasks(epochs)) for ind, epochs in zip(scored, evidence)]
        per_ind = self.generate(jobs, generation, "generation %d" % generation)
        maybe_crash("after-evaluate", generation)
        for ind, epochs, (_, tasks), results in zip(scored, evidence, jobs, per_ind):
            ind.scored_on = epochs
            self.assign_fitness(ind, results, tasks)
            self.run_dir.append("lineage.jsonl", self.lineage_record(ind))
        best = max(scored, key=lambda ind: -ind.l_total)
        self.update_hall(scored, rebuild_pareto=batch_changed)
        current = {task.id for task in self.training_batch(epoch)}
        before = dict(self.curriculum.frontier)
        # only this batch's outcomes: older ones were counted when their batch was new
        self.frontier_moved = self.curriculum.update([r for r in best.results if r.task_id in current]) != before

    def archive_outside(self, individuals: Sequence) -> list:
        """Hall-of-fame and Pareto-front members whose genome is not in ``individuals``."""
        present = {ind.strategy.content_hash() for ind in individuals}
        outside = []
        # the front's own order depends on insertion history (ties): sort for a resume-exact order
        front = sorted(self.pareto or [], key=lambda ind: (ind.id, ind.strategy.content_hash()))
        for ind in [*self.hall, *front]:
            if ind.strategy.content_hash() not in present:
                present.add(ind.strategy.content_hash())
                outside.append(ind)
        return outside

    def batch_epoch(self, generation: int) -> int:
        every = self.config.tasks.rotate_every
        return generation // every if every else 0

    def training_batch(self, epoch: int) -> list:
        """The batch for the current frontier and ``epoch`` (see the module docstring)."""
        key = (tuple(sorted(self.curriculum.frontier.items())), epoch)
        if key not in self.batches:
            self.batches[key] = self.draw_batch(*key, index=len(self.batches))
        return self.batches[key]

    def evidence_tasks(self, epochs: Sequence[int]) -> list:
        """The tasks of the current frontier's batches ``epochs``, each task once."""
        tasks = {task.id: task for epoch in epochs for task in self.training_batch(epoch)}
        return list(tasks.values())

    def draw_batch(self, state: tuple, epoch: int, index: int) -> list:
        """Levels drawn around frontier ``state`` with an rng seeded by the state (and
        the epoch, from epoch 1 on), tasks drawn from the train split: a pure function
        of its arguments."""
        curriculum = Curriculum.from_state(self.curriculum.to_state())
        curriculum.frontier.update(dict(state))
        rng = random.Random(f"{self.config.run.seed}/{state}" + (f"/{epoch}" if epoch else ""))
        slots = curriculum.sample_levels(rng, self.config.tasks.per_family)
        return self.pool.training_batch(slots, generation=index)

    # ---- checkpoints ---------------------------------------------------------------------
    def checkpoint(self, gen: int, population: list) -> None:
        table = IndividualTable()
        arrays, global_scalars = global_rng_arrays()
        state = {
            "config": self.config.to_dict(),
            "population": table.refs(population),
            "hall": table.refs(self.hall),
            "pareto": table.refs(self.pareto) if self.pareto is not None else None,
            "individuals": table.rows,
            "metrics": self.metrics,
            "curriculum": self.curriculum.to_state(),
            "batch_states": [[list(item) for item in state] for state, _ in self.batches],
            "batch_epochs": [epoch for _, epoch in self.batches],
            "frontier_moved": self.frontier_moved,
            "rng": rng_to_json(self.rng.getstate()),
            "global_rngs": global_scalars,
            "counters": {k: v for k, v in vars(self.counters).items() if k != "started"},
            "wall_s": time.perf_counter() - self.counters.started,
            "journal_rows": self.journal.count(),
            "log_lines": {name: self.run_dir.lines[name] for name in ("metrics.jsonl", "lineage.jsonl")},
        }
        checkpoint.write(self.run_dir.path, gen, state, arrays,
                         before_rename=lambda: maybe_crash("checkpoint-write", gen))

    def restore(self, saved: checkpoint.Checkpoint) -> list:
        """Put the loop back where ``saved`` left it; returns the population."""
        s = saved.state
        individuals = [individual_from_json(row, self.mode) for row in s["individuals"]]
        self.hall = [individuals[i] for i in s["hall"]]
        if self.pareto is not None:
            for i in s["pareto"] or []:
                self.pareto.insert(individuals[i])
        self.metrics = list(s["metrics"])
        for record in self.metrics:
            self.logbook.record(**record)
        self.curriculum = Curriculum.from_state(s["curriculum"])
        epochs = s.get("batch_epochs") or [0] * len(s["batch_states"])  # format 1 checkpoints never rotated
        for index, (state, epoch) in enumerate(zip(s["batch_states"], epochs)):
            key = (tuple((family, level) for family, level in state), epoch)
            self.batches[key] = self.draw_batch(*key, index=index)
        self.frontier_moved = s["frontier_moved"]
        self.rng.setstate(rng_from_json(s["rng"]))
        restore_global_rngs(saved.arrays, s["global_rngs"])
        for name, value in s["counters"].items():
            setattr(self.counters, name, value)
        self.counters.started = time.perf_counter() - s["wall_s"]
        for name, lines in s["log_lines"].items():  # drop rows of the generation that did not finish
            self.run_dir.truncate_jsonl(name, lines)
        return [individuals[i] for i in s["population"]]

    def generate(self, jobs, generation: int, label: str, heldout: bool = False):
        from tqdm import tqdm

        total = sum(len(tasks) * s.decoding.votes for s, tasks in jobs)
        with tqdm(total=total, desc=label, unit="req", file=sys.stderr, leave=False,
                  disable=not self.show_progress or None) as bar:
            results, new, reused = evaluate_with_journal(jobs, self.backend, self.journal, self.config.run.seed,
                                                         generation, progress=bar.update)
        self.counters.rollouts += new
        self.counters.heldout_rollouts += new if heldout else 0
        self.counters.reused += reused
        return results

    def assign_fitness(self, ind, results, tasks) -> None:
        d_model = self.curriculum.estimate_ability(results)
        l_total, terms = individual_loss(results, tasks, d_model, self.weights, self.config.loss.reference_tokens)
        accuracy, chain_tokens = multi_objective(results)
        ind.results, ind.loss, ind.l_total = results, terms, l_total
        ind.accuracy, ind.chain_tokens, ind.d_model = accuracy, chain_tokens, d_model
        ind.fitness.values = (accuracy, chain_tokens) if self.mode == "multi" else (-l_total,)
        self.counters.tokens += sum(r.completion_tokens for r in results)

    def select(self, candidates: list, k: int) -> list:
        """The next population: ``k`` distinct genomes (each as its copy with the most
        evidence), ranked by fitness or NSGA-II; copies fill in only when fewer than
        ``k`` genomes are distinct. Several copies of one strategy would otherwise take
        half a small population (copies of a good seed survive side by side)."""
        unique = one_per_genome(candidates)
        if len(unique) >= k:
            return self.rank(unique, k)
        copies = [ind for ind in candidates if not any(ind is u for u in unique)]
        return unique + self.rank(copies, k - len(unique))

    def rank(self, candidates: list, k: int) -> list:
        if self.mode == "multi":
            return tools.selNSGA2(candidates, k)
        # ties broken by age then id, so selection is a pure function of the fitnesses
        return sorted(candidates, key=lambda ind: (-ind.fitness.values[0], ind.id))[:k]

    def update_hall(self, individuals: Sequence, rebuild_pareto: bool = False) -> None:
        """Merge newly scored individuals into the hall (and Pareto front), one entry per
        genome: the copy with the most batches of evidence, the latest on a tie (a
        re-scored member keeps its new score; a newer copy of the same strategy with one
        batch must not replace the re-tested one). After a batch change every archive
        member is among ``individuals`` (re-scored), so the Pareto front, which holds
        copies, is rebuilt from them alone."""
        merged = one_per_genome([*self.hall, *individuals], latest_on_tie=True)
        self.hall = sorted(merged, key=self.hall_rank)[: self.config.population.hall_of_fame]
        if self.pareto is not None:
            if rebuild_pareto:
                self.pareto = tools.ParetoFront(similar=_same_genome)
            self.pareto.update(list(individuals))

    def hall_rank(self, ind) -> tuple:
        """Sort key of the hall: strategies with ``population.hall_min_batches`` batches
        of evidence first, then lower L_total, then older. Ranking on fitness alone would
        crown any newcomer that was lucky on its one small batch; under the rule it
        leads only once re-tested (or while nobody has the evidence, e.g. just after the
        frontier moved)."""
        short_of_evidence = len(ind.scored_on) < self.config.population.hall_min_batches
        return (short_of_evidence, ind.l_total, ind.id)

    # ---- bookkeeping ---------------------------------------------------------------------
    def new_individual(self, strategy: Strategy, parents: tuple[int, ...], op: str, gen: int):
        ident = self.counters.next_id
        self.counters.next_id += 1
        return make_individual(strategy, self.mode, ident, parents, op, gen)

    def copy_individual(self, parent):
        child = make_individual(parent.strategy, self.mode, parent.id, parent.parents, parent.op, parent.generation)
        for name in ("results", "loss", "l_total", "accuracy", "chain_tokens", "d_model", "scored_on"):
            setattr(child, name, getattr(parent, name))
        child.fitness.values = parent.fitness.values
        return child

    def heldout_accuracy(self, gen: int) -> float:
        top = self.hall[: self.config.tasks.heldout_top]
        per_ind = self.generate([(ind.strategy, self.heldout_tasks) for ind in top], gen, "held-out", heldout=True)
        accuracies = [sum(r.correct for r in results) / len(results) for results in per_ind]
        return accuracies[0] if accuracies else 0.0

    def record(self, gen: int, population: list) -> None:
        heldout = self.heldout_accuracy(gen)
        best = self.hall[0]
        record = {
            "generation": gen,
            "evaluated": self.counters.evaluated,
            "best_fitness": -best.l_total,
            "best_accuracy": best.accuracy,
            "best_batches": len(best.scored_on),  # training batches the best's fitness covers
            "mean_fitness": sum(-ind.l_total for ind in population) / len(population),
            "mean_accuracy": sum(ind.accuracy for ind in population) / len(population),
            "mean_chain_tokens": sum(ind.chain_tokens for ind in population) / len(population),
            "heldout_accuracy": heldout,
            "best_hash": best.strategy.content_hash(),
            "frontier": dict(self.curriculum.frontier),
            "rollouts": self.counters.rollouts,
            "heldout_rollouts": self.counters.heldout_rollouts,
            "reused": self.counters.reused,
            "tokens": self.counters.tokens,
            "backend_s": round(self.counters.backend_s, 3),
            "wall_s": round(time.perf_counter() - self.counters.started, 3),
        }
        self.logbook.record(**record)
        self.metrics.append(record)
        self.run_dir.append("metrics.jsonl", record)
        if self.show_progress:
            print(
                f"gen {gen:>3}/{self.config.run.generations}  rollouts {record['rollouts']:>5} (+{record['reused']} reused)  "
                f"best {record['best_fitness']:+.3f}  train acc {best.accuracy:5.1%}  held-out acc {heldout:5.1%}  "
                f"tokens {record['tokens']:,}  {record['wall_s']:.0f}s",
                file=sys.stderr, flush=True,
            )

    def lineage_record(self, ind) -> dict[str, Any]:
        return {**individual_to_json(ind), "hash": ind.strategy.content_hash()}

    def finish(self) -> RunResult:
        hall = [{"rank": i + 1, **self.lineage_record(ind)} for i, ind in enumerate(self.hall)]
        summary: dict[str, Any] = {"hall_of_fame": hall}
        if self.pareto is not None:
            summary["pareto_front"] = [self.lineage_record(ind) for ind in self.pareto]
        summary["curriculum_history"] = self.curriculum.history
        self.run_dir.write_json("best.json", summary)
        return RunResult(str(self.run_dir.path), hall, self.metrics, self.hall[0].strategy, list(self.batches.values()))


def _same_genome(a, b) -> bool:
    return a.strategy.content_hash() == b.strategy.content_hash()
