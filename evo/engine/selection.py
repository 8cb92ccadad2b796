"""Selection and the archives: the next population (one copy per genome), the hall
of fame ranked by L_total and evidence, and the Pareto front in multi-objective mode.
A mixin of :class:`evo.engine.loop.Loop`."""

from __future__ import annotations

from collections.abc import Sequence

from deap import tools

from evo.engine.individuals import one_per_genome


class Selection:
    def select(self, candidates: list, k: int) -> list:
        """The next population: ``k`` distinct genomes (each as its copy with the most
        evidence), ranked by fitness or NSGA-II; copies fill in only when fewer than
        ``k`` genomes are distinct. Several copies of one strategy would otherwise take
        half a small population (copies of a good seed survive side by side)."""
        unique = one_per_genome(candidates)
        if len(unique) >= k:
            kept = self.specialists_kept(unique, k)
            rest = [ind for ind in unique if not any(ind is s for s in kept)]
            return self.rank(kept + self.rank(rest, k - len(kept)), k)
        copies = [ind for ind in candidates if not any(ind is u for u in unique)]
        return unique + self.rank(copies, k - len(unique))

    def specialists_kept(self, unique: list, k: int) -> list:
        """With ``routing.keep_specialists`` (scalar mode, several families): per family
        the candidate with the best shrunk accuracy on it (:mod:`evo.engine.routing`),
        at most ``k // 2`` of them, so that a strategy that answers one family well
        survives a population ranked on all families together. [] otherwise."""
        if not (self.config.routing.keep_specialists and self.mode == "scalar" and len(self.pool.specs) > 1):
            return []
        from evo.engine.routing import choose_specialists, gather_evidence

        rows = [(str(i), r.task_id, r.family, r.score) for i, ind in enumerate(unique) for r in ind.results or ()]
        chosen = choose_specialists(gather_evidence(rows, set()), min_tasks=1, prior_tasks=self.config.routing.prior_tasks)
        kept: list = []
        for family in sorted(chosen):
            ind = unique[int(chosen[family][0])]
            if not any(ind is s for s in kept):
                kept.append(ind)
        return self.rank(kept, k // 2)

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
                self.pareto = tools.ParetoFront(similar=same_genome)
            self.pareto.update(list(individuals))

    def hall_rank(self, ind) -> tuple:
        """Sort key of the hall: strategies with ``population.hall_min_batches`` batches
        of evidence first, then lower L_total, then older. Ranking on fitness alone would
        crown any newcomer that was lucky on its one small batch; under the rule it
        leads only once re-tested (or while nobody has the evidence, e.g. just after the
        frontier moved)."""
        short_of_evidence = len(ind.scored_on) < self.config.population.hall_min_batches
        return (short_of_evidence, ind.l_total, ind.id)
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



def same_genome(a, b) -> bool:
    return a.strategy.content_hash() == b.strategy.content_hash()
