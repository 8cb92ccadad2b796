"""The validation side of a generation: which strategies are scored on the
validation split, and which one is the run's best (what ``evo export``, routes and
``evo tune`` take). Selection never reads any of it. A mixin of
:class:`evo.engine.loop.Loop`.

The best is the highest validation accuracy among the hall (``tasks.pick =
"last_generation"``, the default: the members the last generation validated) or,
with ``"best_validated"``, among the hall and every strategy validated in an earlier
generation: early stopping on validation, so that a leader pushed out of the hall by
a newcomer lucky on its small training batch is not lost. Measured on the search
families with 24 validation tasks (docs/benchmarks.md), it picked worse: an early
leader one validation task ahead of the last one, which had three training batches
of evidence, scored 3.5 points lower on 515 test tasks. It needs a validation split
large enough that one task is not the difference.
"""

from __future__ import annotations

import sys

from evo.engine.task_pool import answer_key
from fitness.journal import evaluate_with_journal


class Validation:
    def validation_results(self, gen: int) -> dict[str, list]:
        """Validation results of the ``tasks.heldout_top`` best of the hall (those the
        budget affords when it counts validation), by strategy hash, in hall order:
        what export ranks by (selection never reads it)."""
        top = self.hall[: self.config.tasks.heldout_top] if self.heldout_tasks else []
        jobs, top = self.affordable_validation([(ind.strategy, self.heldout_tasks) for ind in top], top)
        per_ind = self.generate(jobs, gen, "validation", heldout=True) if jobs else []
        validated = {ind.strategy.content_hash(): results for ind, results in zip(top, per_ind)}
        self.validated = [ind for ind in self.validated if ind.strategy.content_hash() not in validated] + top
        return validated

    def pick(self, gen: int, validated: dict[str, list],
             scores: dict[str, float]) -> tuple[str | None, list, float | None]:
        """The run's best so far (what export, routes and tuning take) as (hash, its
        validation results, its validation accuracy): the highest validation accuracy among the hall and, with
        ``tasks.pick = "best_validated"``, every strategy validated in an earlier
        generation (a leader that fell out of the hall after a lucky newcomer's batch
        is not lost); the hall's order, then the latest validated, break ties. The
        results of an earlier generation's pick come back from the journal at no cost."""
        from evo.rundir.export import pick_scores

        pooled = pick_scores([*self.metrics, {"validation_scores": scores}], self.config.tasks.pick)
        order = pick_order(self.hall, self.validated, self.config.tasks.pick)
        scored = [(ind, pooled[ind.strategy.content_hash()]) for ind in order if ind.strategy.content_hash() in pooled]
        if not scored:
            return None, [], None
        best = max(scored, key=lambda pair: pair[1])[0]  # max keeps the first of equals
        chosen = best.strategy.content_hash()
        if chosen not in validated:
            validated[chosen] = self.generate([(best.strategy, self.heldout_tasks)], gen, "validation", heldout=True)[0]
        return chosen, validated[chosen], pooled[chosen]

    def constant_answer_check(self, best) -> dict[str, dict]:
        """Per family, the run's best's validation accuracy beside that of always giving
        the family's most common training answer (``TaskPool.majority_answers``), for
        best.json; prints a note for each family where the best does not beat it (the
        model may not be solving that family at all). Reads validation only, from the
        journal: the best was validated when it was picked (:meth:`pick`)."""
        if not self.heldout_tasks:
            return {}
        jobs = [(best.strategy, self.heldout_tasks)]
        results = evaluate_with_journal(jobs, self.backend, self.journal, self.config.run.seed, 0)[0][0]
        majority, rows = self.pool.majority_answers(), {}
        for family in sorted({task.family for task in self.heldout_tasks}):
            pairs = [(task, r) for task, r in zip(self.heldout_tasks, results) if task.family == family]
            constant = sum(answer_key(t) == majority[family] for t, _ in pairs) / len(pairs)
            accuracy = sum(r.correct for _, r in pairs) / len(pairs)
            rows[family] = {"best": accuracy, "constant": constant, "answer": majority[family], "tasks": len(pairs)}
            if self.show_progress and constant > 0 and accuracy <= constant and accuracy < 1:
                print(f"evo: note: {family}: the best answers {accuracy:.1%} of its {len(pairs)} validation tasks, and "
                      f"always answering {majority[family]!r} would answer {constant:.1%}: the model may not be "
                      "solving this family", file=sys.stderr)
        return rows


def pick_order(hall: list, validated: list, pick: str) -> list:
    """The candidates for the run's best in tie-breaking order: the hall, then (with
    ``pick = "best_validated"``) the earlier validated outside it, the latest first."""
    if pick != "best_validated":
        return list(hall)
    in_hall = {ind.strategy.content_hash() for ind in hall}
    return [*hall, *(ind for ind in reversed(validated) if ind.strategy.content_hash() not in in_hall)]
