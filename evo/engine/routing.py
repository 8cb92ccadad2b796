"""Routes: a strategy per task family, chosen on training evidence and confirmed on validation.

One strategy for a mixed batch trades families against each other (the bundled model
copies the kind of exemplar it sees; families want different decoding), so a run
also keeps, per family, the individual that answers that family best. Each
generation, after the validation scoring of the hall's best:

1. *Evidence* (free): every training completion in the journal, grouped by
   (strategy, family). An individual is a candidate for a family once it has been
   scored on ``routing.min_tasks`` of the family's training tasks; its estimate is the
   family's accuracy shrunk towards the family's mean over all individuals by
   ``routing.prior_tasks`` pseudo-tasks (few lucky tasks do not win a route).
2. *Specialist*: per family the candidate with the highest estimate (the earliest
   scored breaks a tie).
3. *Confirmation* (validation split): a specialist that is not the default (the
   export pick: the hall's best by validation) is scored on its family's validation
   tasks only. The family's route is the best validated specialist so far (a route
   found early is not lost when a later generation's specialist is worse), taken
   when it answers more of the family's validation tasks than the default does.
   Only one specialist per family per generation is validated, so the maximum is
   over a handful of draws (``tried`` in the record), not over the population.

The record (``metrics.jsonl`` key ``routes``) holds per family the route's hash, its
training evidence, both validation accuracies, how many specialists were tried and
whether the route is taken;
:func:`routes_of_run` turns the latest checkpoint's record into a
:class:`genomes.routes.Routes` (what ``evo export`` writes as ``routes.json``). Only
training-split completions are evidence and only validation tasks confirm: the test
split is never read. A mixin of :class:`evo.engine.loop.Loop`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

Evidence = dict[str, dict[str, list[int]]]  # family -> genome hash -> [correct, scored]


def gather_evidence(rows: Iterable[tuple[str, str, str, float]], excluded_tasks: set[str],
                    full_credit: float = 1.0) -> Evidence:
    """(hash, task id, family, score) rows into per-family, per-strategy counts, in
    first-appearance order; rows of ``excluded_tasks`` (validation) are left out."""
    evidence: Evidence = {}
    for genome_hash, task_id, family, score in rows:
        if task_id in excluded_tasks:
            continue
        counts = evidence.setdefault(family, {}).setdefault(genome_hash, [0, 0])
        counts[0] += score >= full_credit
        counts[1] += 1
    return evidence


def shrunk_accuracy(correct: int, scored: int, family_mean: float, prior_tasks: float) -> float:
    """Accuracy pulled towards ``family_mean`` by ``prior_tasks`` pseudo-tasks."""
    return (correct + prior_tasks * family_mean) / (scored + prior_tasks)


def choose_specialists(evidence: Evidence, min_tasks: int, prior_tasks: float) -> dict[str, tuple[str, int, int]]:
    """Per family, (hash, correct, scored) of the strategy with the best shrunk
    accuracy among those scored on at least ``min_tasks`` of its tasks; a family
    with no such strategy has none. Deterministic: the earliest of equals wins."""
    chosen = {}
    for family, by_hash in evidence.items():
        total = [sum(c for c, _ in by_hash.values()), sum(n for _, n in by_hash.values())]
        mean = total[0] / total[1] if total[1] else 0.0
        best, best_score = None, -1.0
        for genome_hash, (correct, scored) in by_hash.items():
            if scored < min_tasks:
                continue
            score = shrunk_accuracy(correct, scored, mean, prior_tasks)
            if score > best_score:
                best, best_score = (genome_hash, correct, scored), score
        if best is not None:
            chosen[family] = best
    return chosen


def accuracy_by_family(results: Iterable[Any]) -> dict[str, list[int]]:
    """family -> [correct, scored] over ``results``."""
    out: dict[str, list[int]] = {}
    for r in results:
        counts = out.setdefault(r.family, [0, 0])
        counts[0] += bool(r.correct)
        counts[1] += 1
    return out


class Routing:
    def routes_enabled(self) -> bool:
        return self.config.routing.enabled and len(self.pool.specs) > 1 and bool(self.heldout_tasks)

    def route_record(self, gen: int, default_hash: str | None, default_results: list) -> dict[str, Any]:
        """This generation's routes (see the module docstring); {} when routing is off,
        the run has one family or no validation split, or nothing is validated yet."""
        if not self.routes_enabled() or default_hash is None:
            return {}
        from genomes.strategy import Strategy

        r = self.config.routing
        validation_ids = {t.id for t in self.heldout_tasks}
        evidence = gather_evidence(self.journal.scores(self.config.run.seed), validation_ids)
        specialists = choose_specialists(evidence, r.min_tasks, r.prior_tasks)
        default_by_family = accuracy_by_family(default_results)
        tasks_by_family: dict[str, list] = {}
        for task in self.heldout_tasks:
            tasks_by_family.setdefault(task.family, []).append(task)
        jobs, families = [], []
        for family, (genome_hash, _, _) in specialists.items():
            if genome_hash == default_hash or family not in tasks_by_family:
                continue
            encoded = self.journal.strategy(genome_hash)
            if encoded is None:  # journaled before strategies were stored: nothing to route to
                continue
            jobs.append((Strategy.decode(encoded, where=f"journal strategy {genome_hash}"), tasks_by_family[family]))
            families.append(family)
        jobs, families = self.affordable_validation(jobs, families)
        scored = dict(zip(families, self.generate(jobs, gen, "routes", heldout=True))) if jobs else {}
        found = {}  # family -> this generation's validated specialist: (validation, hash, train)
        for family, (genome_hash, correct, n) in specialists.items():
            if genome_hash == default_hash:
                found[family] = (_share(default_by_family.get(family, [0, 0])), genome_hash, [correct, n])
            elif family in scored:
                found[family] = (_share(accuracy_by_family(scored[family]).get(family, [0, 0])), genome_hash,
                                 [correct, n])
        prior = self.metrics[-1].get("routes") or {} if self.metrics else {}
        return {family: route_row(prior.get(family), found.get(family), default_hash,
                                  _share(default_by_family.get(family, [0, 0])))
                for family in sorted(set(prior) | set(found))}


def route_row(prior: Mapping[str, Any] | None, found: tuple | None, default_hash: str,
              default_validation: float | None) -> dict[str, Any]:
    """A family's route after this generation: the best validated specialist so far
    (the earlier on a tie: ``prior`` is last generation's row, ``found`` this
    generation's validated specialist), taken when it is not the default and beats the
    default's validation accuracy on the family. ``tried`` counts the distinct
    specialists validated for the family so far (how many draws the maximum is over)."""
    options = []
    if prior and prior.get("validation") is not None:
        options.append((prior["validation"], prior["hash"], prior["train"]))
    tried = prior.get("tried", 1) if prior and prior.get("validation") is not None else 0
    if found is not None and found[0] is not None and not any(o[1] == found[1] for o in options):
        options.append(found)
        tried += 1
    if not options:
        return {"hash": prior["hash"] if prior else None, "train": prior["train"] if prior else [0, 0],
                "validation": None, "default_validation": default_validation, "taken": False,
                "why": "not validated (budget)", "tried": 0}
    validation, genome_hash, train = max(options, key=lambda o: o[0])  # max keeps the first of equals
    row = {"hash": genome_hash, "train": train, "validation": validation, "default_validation": default_validation,
           "tried": tried}
    if genome_hash == default_hash:
        return {**row, "taken": False, "why": "the default"}
    taken = default_validation is not None and validation > default_validation
    return {**row, "taken": taken} if taken else {**row, "taken": False, "why": "no better on validation"}


def _share(counts: list[int]) -> float | None:
    return counts[0] / counts[1] if counts[1] else None


def routes_of_run(run_dir: str | Path, default=None):
    """The :class:`genomes.routes.Routes` of a run's latest checkpoint: the export
    pick as the default and the routes its last generation took (strategies read
    from the journal). A run made before routing gives the default alone."""
    from evo.rundir import checkpoint
    from evo.rundir.files import RunDir
    from evo.tune.on_test import best_strategy_of
    from fitness.journal import Journal
    from genomes.routes import Routes
    from genomes.strategy import Strategy

    run_dir = Path(run_dir)
    default = default or best_strategy_of(run_dir)
    saved = checkpoint.load_latest(run_dir)
    last = saved.state["metrics"][-1] if saved.state["metrics"] else {}
    taken = {family: row for family, row in (last.get("routes") or {}).items() if row.get("taken")}
    if not taken:
        return Routes(default)
    routes, evidence = {}, {}
    with Journal(RunDir(run_dir).journal_path) as journal:
        for family, row in sorted(taken.items()):
            encoded = journal.strategy(row["hash"])
            if encoded is None:
                continue
            routes[family] = Strategy.decode(encoded, where=f"{run_dir}: route for {family}")
            evidence[family] = _evidence_of(row)
    return Routes(default, routes, evidence)


def _evidence_of(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"train": row["train"], "validation": row["validation"], "default_validation": row["default_validation"],
            "tried": row.get("tried", 1)}
