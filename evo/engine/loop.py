"""The evolution loop: DEAP's (mu + lambda), or NSGA-II in multi-objective mode
(accuracy against mean chain tokens; against cost when the run has several models).

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
on current-frontier scores only; old completions stay in the journal). So the
frontier moves only on ``curriculum.min_evidence`` outcomes, and never in the last
generations whose batches the final hall needs (:meth:`Loop.may_move`). A genome is
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
from dataclasses import dataclass
from typing import Any

from deap import tools

from evo.config.sections import RunConfig, model_entry, served_models
from evo.engine.backend import Counters
from evo.engine.exemplar_pool import build_pool
from evo.engine.individuals import make_individual, new_fitness
from evo.engine.loop_state import individual_to_json
from evo.engine.progress import RequestProgress, generation_line
from evo.engine.racing import BudgetExhausted, Racing
from evo.engine.validation import Validation, pick_order
from evo.engine.routing import Routing
from evo.engine.selection import Selection, same_genome
from evo.engine.snapshot import Snapshot
from evo.engine.surrogate import Surrogate
from evo.engine.task_pool import TaskPool
from evo.engine.variation import Variation
from evo.rundir.faults import maybe_crash
from fitness.backends import grammar_rows
from evo.rundir.files import RunDir
from fitness.curriculum import Curriculum
from fitness.journal import Journal, evaluate_with_journal
from fitness.loss import generation_cost, individual_loss, multi_objective
from fitness.tasks import Task
from genomes.strategy import Strategy

GenerationCallback = Callable[[dict[str, Any]], None]


@dataclass
class RunResult:
    run_dir: str
    hall_of_fame: list[dict[str, Any]]
    metrics: list[dict[str, Any]]
    best: Strategy  # the pick by validation (tasks.pick): what export puts first
    training_batches: list[list[Task]]  # in the order the frontier states were first met


def usable_constrain_modes(config: RunConfig, pool: TaskPool, show_progress: bool) -> tuple[str, ...]:
    """``population.constrain_modes``, less what this environment or these tasks
    cannot do, each said in one line: without llguidance only "off" is left (the run
    goes on unconstrained); a family whose training answers fit no answer pattern is
    constrained in structure only under "answer"."""
    modes = config.population.constrain_modes
    if modes == ("off",):
        return modes
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if show_progress else (lambda line: None)
    if not grammar_rows.available():
        say(f"population.constrain_modes: {grammar_rows.MISSING}; evolving without constrained decoding")
        return ("off",)
    if "answer" in modes:
        for family in pool.specs:
            if not pool.answer_pattern(family):
                say(f"tasks: {family}: its training answers fit no answer pattern; constrain=answer constrains "
                    "its format only")
    return modes


def make_curriculum(config: RunConfig, pool: TaskPool) -> Curriculum:
    c = config.curriculum
    curriculum = Curriculum(pool.levels(), start_level=0, up_threshold=c.up_threshold,
                            down_threshold=c.down_threshold, spread=c.spread, min_evidence=c.min_evidence)
    curriculum.frontier.update(pool.start_levels())
    return curriculum


class Loop(Variation, Selection, Racing, Validation, Routing, Snapshot):
    def __init__(self, config: RunConfig, backend, run_dir: RunDir, counters: Counters, show_progress: bool,
                 on_generation: GenerationCallback | None = None) -> None:
        self.config, self.backend, self.run_dir, self.counters = config, backend, run_dir, counters
        self.show_progress, self.on_generation = show_progress, on_generation
        self.rng = random.Random(config.run.seed)
        self.pool = TaskPool(config)
        self.curriculum = make_curriculum(config, self.pool)
        self.heldout_tasks = self.pool.validation()  # scored each generation; choices read it, selection never
        for note in self.pool.validation_notes(self.heldout_tasks) if show_progress else ():
            print(f"evo: note: {note}", file=sys.stderr)
        self.exemplars = build_pool(config, self.pool, show_progress)  # what mut_prompt adds and swaps in
        self.constrain_modes = usable_constrain_modes(config, self.pool, show_progress)  # what mut_decoding may set
        self.surrogate = Surrogate()  # accuracy over gene values, pooled over every scored strategy (proposals > 1)
        self.weights = config.loss_weights()
        self.mode = config.population.mode
        self.several_models = len(served_models(config)) > 1
        self.hall: list = []  # best unique individuals by -L_total, both modes
        self.validated: list = []  # every individual validated so far, one per genome, the last validated last
        self.pareto = tools.ParetoFront(similar=same_genome) if self.mode == "multi" else None
        self.logbook = tools.Logbook()
        self.metrics: list[dict[str, Any]] = []
        self.journal: Journal | None = None
        self.batches: dict[tuple, list] = {}  # (frontier state, epoch) -> training tasks
        self.frontier_moved = False
        self.stopped_by_budget = False

    # ---- the loop ----------------------------------------------------------------------
    def run(self, seeds: list[Strategy]) -> RunResult:
        self.counters.started = time.perf_counter()  # model loading is not the loop's time
        population = self.initial_population(seeds)
        candidates = self.evaluate(population, generation=0)  # an unaffordable generation 0 is an InputError
        population = self.select(candidates, self.config.population.size)
        self.end_generation(0, population)
        return self.continue_from(population, 1)

    def continue_from(self, population: list, first_generation: int) -> RunResult:
        for gen in range(first_generation, self.config.run.generations + 1):
            if self.budget_left() == 0:
                self.stop_budget(gen)
                break
            offspring = self.vary(population, gen)
            try:
                candidates = self.evaluate(population + offspring, generation=gen)
            except BudgetExhausted:
                self.stop_budget(gen)
                break
            population = self.select(candidates, self.config.population.size)
            self.end_generation(gen, population)
        return self.finish()

    def stop_budget(self, gen: int) -> None:
        """The run ends before generation ``gen``: the budget cannot pay for it."""
        self.stopped_by_budget = True
        if self.show_progress:
            print(f"budget.rollouts reached: {self.search_rollouts()} of {self.config.budget.rollouts} search rollouts "
                  f"used; stopping before generation {gen}", file=sys.stderr, flush=True)

    def end_generation(self, gen: int, population: list) -> None:
        self.record(gen, population)
        self.checkpoint(gen, population)
        if self.on_generation:
            self.on_generation(self.metrics[-1])

    def evaluate(self, individuals: Sequence, generation: int) -> list:
        """Score, on this generation's batch, the individuals without a valid fitness
        and those not yet scored on it (a rotated batch; see the module docstring),
        racing the children and keeping to the budget (:mod:`evo.engine.racing`).
        Returns ``individuals`` less the children raced out or left out by the
        budget: what selection may choose from. Raises BudgetExhausted."""
        candidates = list(individuals)
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
        self.counters.evaluated, self.counters.raced_out, self.counters.left_out = len(scored), 0, 0
        if not scored:
            return candidates
        evidence = [(*ind.scored_on, epoch) if ind.fitness.valid else (epoch,) for ind in scored]
        jobs = [(ind.strategy, self.evidence_tasks(epochs)) for ind, epochs in zip(scored, evidence)]
        scored, evidence, jobs, excluded = self.within_budget(scored, evidence, jobs, generation)
        per_ind, tasks_scored, raced_out = self.generate_raced(scored, jobs, generation)
        maybe_crash("after-evaluate", generation)
        for i, (ind, epochs, tasks, results) in enumerate(zip(scored, evidence, tasks_scored, per_ind)):
            ind.scored_on = epochs
            self.assign_fitness(ind, results, tasks)
            if self.config.population.proposals > 1:  # only proposals read the surrogate
                self.surrogate.observe(ind.strategy, [self.batch_label(e) for e in epochs], ind.accuracy, len(results))
            if i in raced_out:  # scored on its race slice only: never selected
                excluded.add(id(ind))
            self.run_dir.append("lineage.jsonl", {**self.lineage_record(ind), **({"raced_out": True} if i in raced_out else {})})
        self.exemplars.harvest(scored, {task.id for tasks in self.batches.values() for task in tasks})
        competing = [ind for i, ind in enumerate(scored) if i not in raced_out]
        if competing:  # none when the budget raced out every child of a generation with no re-scoring
            self.update_hall(competing, rebuild_pareto=batch_changed)
            self.update_frontier(max(competing, key=lambda ind: -ind.l_total), epoch, generation)
        return [ind for ind in candidates if id(ind) not in excluded]

    def update_frontier(self, best, epoch: int, generation: int) -> None:
        current = {task.id for task in self.training_batch(epoch)}
        before = dict(self.curriculum.frontier)
        # only this batch's outcomes: older ones were counted when their batch was new
        outcomes = [r for r in best.results if r.task_id in current]
        self.frontier_moved = self.curriculum.update(outcomes, may_move=self.may_move(generation)) != before

    def may_move(self, generation: int) -> bool:
        """Whether ``generation``'s curriculum update may move the frontier. A move
        resets every fitness, so with ``population.hall_min_batches = K`` > 1 the run's
        last K batches are held on one frontier and the final hall has that much
        evidence (a run extended with ``evo resume --generations`` then differs from one
        started longer by those held updates); with K = 1 nothing is held."""
        batches, every = self.config.population.hall_min_batches, max(self.config.tasks.rotate_every, 1)
        return batches <= 1 or generation < self.config.run.generations - (batches - 1) * every

    def within_budget(self, scored: list, evidence: list, jobs: list, generation: int):
        """The scoring that fits the budget, as (scored, evidence, jobs, ids left out)."""
        children = [i for i, ind in enumerate(scored) if ind.generation == generation and not ind.fitness.valid]
        racers = set(self.racers(scored, generation))
        first = [(s, self.race_slice(t)) if i in racers else (s, t) for i, (s, t) in enumerate(jobs)]
        dropped = self.affordable(first, children, generation)
        if children and len(dropped) == len(children) and generation > 0:
            raise BudgetExhausted()  # not one child fits: the search cannot go on
        self.counters.left_out = len(dropped)
        keep = [i for i in range(len(scored)) if i not in dropped]
        return ([scored[i] for i in keep], [evidence[i] for i in keep], [jobs[i] for i in keep],
                {id(scored[i]) for i in dropped})

    def generate_raced(self, scored: list, jobs: list, generation: int) -> tuple[list, list, set[int]]:
        """(results per individual, the tasks they cover, the raced-out indices):
        the race slice for those raced out, the whole of their tasks for the others."""
        label = "generation %d" % generation
        racers = self.racers(scored, generation)
        if not racers:
            return self.generate(jobs, generation, label), [tasks for _, tasks in jobs], set()
        sliced = [(s, self.race_slice(t)) if i in racers else (s, t) for i, (s, t) in enumerate(jobs)]
        per_ind = self.generate(sliced, generation, label + " (race)")
        ranked = self.race(racers, sliced, per_ind)  # best first
        unaffordable = self.affordable([jobs[i] for i in ranked], range(len(ranked)), generation)
        kept = [i for n, i in enumerate(ranked) if n not in unaffordable]
        for i, results in zip(kept, self.generate([jobs[i] for i in kept], generation, label)):
            per_ind[i], sliced[i] = results, jobs[i]
        raced_out = set(racers) - set(kept)
        self.counters.raced_out = len(raced_out)
        return per_ind, [tasks for _, tasks in sliced], raced_out

    def batch_epoch(self, generation: int) -> int:
        every = self.config.tasks.rotate_every
        return generation // every if every else 0

    def training_batch(self, epoch: int) -> list:
        """The batch for the current frontier and ``epoch`` (see the module docstring)."""
        key = (tuple(sorted(self.curriculum.frontier.items())), epoch)
        if key not in self.batches:
            self.batches[key] = self.draw_batch(*key, index=len(self.batches))
        return self.batches[key]

    def batch_label(self, epoch: int) -> str:
        """A name for the current frontier's batch ``epoch``, the same after a resume."""
        return f"{sorted(self.curriculum.frontier.items())}/{epoch}"

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

    def generate(self, jobs, generation: int, label: str, heldout: bool = False):
        total = sum(len(tasks) * s.decoding.votes for s, tasks in jobs)
        with RequestProgress(label, total, enabled=self.show_progress) as bar:
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
        ind.cost = generation_cost(results, model_entry(self.config, ind.strategy.decoding.model).cost)
        # several models: the front trades accuracy against what the answers cost
        second = ind.cost if self.several_models else chain_tokens
        ind.fitness.values = (accuracy, second) if self.mode == "multi" else (-l_total,)
        self.counters.tokens += sum(r.completion_tokens for r in results)

    # ---- bookkeeping ---------------------------------------------------------------------
    def new_individual(self, strategy: Strategy, parents: tuple[int, ...], op: str, gen: int):
        ident = self.counters.next_id
        self.counters.next_id += 1
        return make_individual(strategy, self.mode, ident, parents, op, gen)

    def copy_individual(self, parent):
        """A reproduction copy: same lineage and scores, a fitness object of its own."""
        child = dataclasses.replace(parent, fitness=new_fitness(self.mode))
        child.fitness.values = parent.fitness.values
        return child

    def record(self, gen: int, population: list) -> None:
        validated = self.validation_results(gen)
        scores = {h: sum(r.correct for r in results) / len(results) for h, results in validated.items()}
        default, default_results, default_score = self.pick(gen, validated, scores)
        routes = self.route_record(gen, default, default_results)
        heldout = next(iter(scores.values()), None)
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
            "heldout_accuracy": heldout,  # on the validation split (key kept: older runs' metrics read the same)
            "heldout_split": "validation",
            "validation_scores": scores,
            "pick_hash": default,  # the run's best so far by validation (tasks.pick), and its accuracy there
            "pick_validation": default_score,
            "routes": routes,  # per family: the specialist, its evidence, whether it is taken (evo.engine.routing)
            "best_hash": best.strategy.content_hash(),
            "frontier": dict(self.curriculum.frontier),
            "rollouts": self.counters.rollouts,
            "heldout_rollouts": self.counters.heldout_rollouts,
            "search_rollouts": self.search_rollouts(),
            "budget_rollouts": self.config.budget.rollouts,  # 0: no limit
            "raced_out": self.counters.raced_out,
            "left_out": self.counters.left_out,  # children the budget left unscored
            "reused": self.counters.reused,
            "tokens": self.counters.tokens,
            "backend_s": round(self.counters.backend_s, 3),
            "wall_s": round(time.perf_counter() - self.counters.started, 3),
        }
        self.logbook.record(**record)
        self.metrics.append(record)
        self.run_dir.append("metrics.jsonl", record)
        if self.show_progress:
            before = self.metrics[-2]["frontier"] if len(self.metrics) > 1 else None
            print(generation_line(record, self.config.run.generations, best.accuracy, heldout, before),
                  file=sys.stderr, flush=True)

    def lineage_record(self, ind) -> dict[str, Any]:
        return {**individual_to_json(ind), "hash": ind.strategy.content_hash(), "model": ind.strategy.decoding.model}

    def finish(self) -> RunResult:
        hall = [{"rank": i + 1, **self.lineage_record(ind)} for i, ind in enumerate(self.hall)]
        summary: dict[str, Any] = {"hall_of_fame": hall}
        if self.pareto is not None:
            summary["pareto_front"] = [self.lineage_record(ind) for ind in self.pareto]
        summary["curriculum_history"] = self.curriculum.history
        summary["budget"] = {"rollouts": self.config.budget.rollouts, "search_rollouts_used": self.search_rollouts(),
                             "heldout_rollouts": self.counters.heldout_rollouts, "stopped_by_budget": self.stopped_by_budget}
        # the run's best is its pick by validation (tasks.pick); the hall's best before anything is validated
        picked = self.metrics[-1].get("pick_hash") if self.metrics else None
        best = next((ind for ind in pick_order(self.hall, self.validated, "best_validated")
                     if ind.strategy.content_hash() == picked), self.hall[0])
        summary["pick"], summary["constant_answer"] = self.lineage_record(best), self.constant_answer_check(best)
        self.run_dir.write_json("best.json", summary)
        return RunResult(str(self.run_dir.path), hall, self.metrics, best.strategy, list(self.batches.values()))

