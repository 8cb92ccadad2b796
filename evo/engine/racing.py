"""Racing and the rollout budget: who is scored on how much of a generation's batch.

Racing (``population.race_share`` > 0) is successive halving with two rungs. From
generation 1 on, every child born this generation is first scored on a share of the training batch (the
same tasks for all, a stratified slice of each family); the best ``race_keep`` of
them by loss on that slice are then scored on the rest of the batch (the slice's
completions come back from the journal) and compete in selection like everyone
else; the others are *raced out*: they are journaled and written to the lineage with
their slice scores (``"raced_out": true``) but never selected, never in the hall.
Survivors, re-scored members and individuals of an older generation always see the
whole batch, so every fitness that selection compares covers the same tasks.

The budget (``budget.rollouts`` > 0) is a hard limit on search rollouts: training
completions, each vote of a self-consistency strategy counted (held-out scoring is
reporting and counted apart; with ``budget.counts_validation`` validation counts
too, and the search keeps back what one generation's validation costs, so the
choices at the end are still validated). Before each backend call the loop plans its cost from
the journal (:func:`fitness.journal.planned_rollouts`); children that do not fit are
left out, last born first (never scored, never selected); when even the re-scoring
of the survivors does not fit, the run stops at the last complete generation. A
mixin of :class:`evo.engine.loop.Loop`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from fitness.journal import planned_rollouts
from fitness.loss import individual_loss
from genomes.errors import InputError


class BudgetExhausted(Exception):
    """The budget cannot pay for this generation's required scoring."""


class Racing:
    # ---- budget ------------------------------------------------------------------------
    def search_rollouts(self) -> int:
        return self.counters.rollouts - self.counters.heldout_rollouts

    def budget_left(self) -> int | None:
        """Search rollouts still allowed; None without a budget."""
        limit = self.config.budget.rollouts
        if limit == 0:
            return None
        if self.config.budget.counts_validation:
            return max(0, limit - self.counters.rollouts - self.validation_reserve())
        return max(0, limit - self.search_rollouts())

    def validation_reserve(self) -> int:
        """What one generation's validation may cost: the hall's best on every
        validation task, and each family's specialist on its own (routing)."""
        per_round = self.config.tasks.heldout_top + (1 if self.routes_enabled() else 0)
        return per_round * len(self.heldout_tasks)

    def affordable_validation(self, jobs: list, labels: list) -> tuple[list, list]:
        """The leading ``jobs`` (and their ``labels``) whose validation the budget
        pays for: all of them unless ``budget.counts_validation``."""
        limit = self.config.budget.rollouts
        if limit == 0 or not self.config.budget.counts_validation:
            return list(jobs), list(labels)
        left = max(0, limit - self.counters.rollouts)
        n = len(jobs)
        while n and planned_rollouts(jobs[:n], self.journal, self.config.run.seed) > left:
            n -= 1
        return list(jobs[:n]), list(labels[:n])

    def affordable(self, jobs: list, droppable: Sequence[int], generation: int) -> set[int]:
        """Indices of ``droppable`` jobs (children, in birth order) to leave out so
        that ``jobs`` fit the budget: the last born first. Raises BudgetExhausted when
        the other jobs alone do not fit (InputError in generation 0: nothing to run)."""
        left = self.budget_left()
        if left is None:
            return set()
        dropped: set[int] = set()
        candidates = list(droppable)
        while True:
            kept = [job for i, job in enumerate(jobs) if i not in dropped]
            if kept and planned_rollouts(kept, self.journal, self.config.run.seed) <= left:
                return dropped
            if generation == 0 and len(candidates) <= 1:  # not even one strategy fits: nothing to run
                raise InputError(f"budget.rollouts: {self.config.budget.rollouts} cannot score one strategy on "
                                 "one training batch; raise it or lower tasks.per_family")
            if not candidates:
                if not kept:
                    return dropped
                raise BudgetExhausted()
            dropped.add(candidates.pop())

    # ---- racing ------------------------------------------------------------------------
    def racers(self, scored: Sequence, generation: int) -> list[int]:
        """Indices of the individuals that race: children born this generation (from
        generation 1 on: the initial population is scored whole, so it stays full),
        never scored."""
        if self.config.population.race_share <= 0 or generation == 0:
            return []
        return [i for i, ind in enumerate(scored) if ind.generation == generation and not ind.fitness.valid]

    def race_slice(self, tasks: Sequence) -> list:
        """The first-rung tasks: ``race_share`` of each family's tasks (at least one),
        in batch order, so every racer is judged on the same questions."""
        by_family: dict[str, list] = {}
        for task in tasks:
            by_family.setdefault(task.family, []).append(task)
        share = self.config.population.race_share
        chosen = {id(t) for family in by_family.values() for t in family[: max(1, math.ceil(share * len(family)))]}
        return [t for t in tasks if id(t) in chosen]

    def race(self, racers: Sequence[int], sliced: list, per_ind: list) -> list[int]:
        """The racers that go on to the rest of the batch, best first: the best
        ``race_keep`` share (at least one) by L_total on their slice; ties go to the
        earlier index (the older individual)."""
        def loss(i: int) -> float:
            results, tasks = per_ind[i], sliced[i][1]
            d_model = self.curriculum.estimate_ability(results)
            return individual_loss(results, tasks, d_model, self.weights, self.config.loss.reference_tokens)[0]

        order = sorted(racers, key=lambda i: (loss(i), i))
        return order[: max(1, math.ceil(self.config.population.race_keep * len(order)))]
