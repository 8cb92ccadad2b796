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
3. *Confirmation* (validation split): the specialist, and the family's route of
   the generation before (so a route found early is not lost to a worse later
   specialist), are scored on the family's validation tasks (the journal returns what
   was scored before at no cost). The better of them by validation accuracy (the
   earlier on a tie) is the family's route, taken when it is not the default (the
   export pick: the hall's best by validation) and beats it in a one-sided exact sign
   test on the same tasks (tasks it answers and the default does not, against the
   reverse) at ``routing.significance``. Eight validation tasks are little evidence:
   a route measured 3 of 8 against the default's 1 of 8 answered 18 % of the test
   split against the default's 50 %, hence the test rather than "more correct".

The record (``metrics.jsonl`` key ``routes``) holds per family the route's hash, its
training evidence, both validation accuracies, its wins and losses against the
default and the test's p, how many specialists were tried and whether it is taken;
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


def gather_evidence(rows: Iterable[tuple[str, str, str, float]], excluded_tasks: set[str]) -> Evidence:
    """(hash, task id, family, score) rows into per-family, per-strategy counts (correct:
    full credit, as ``ExampleResult.correct``), in first-appearance order; rows of
    ``excluded_tasks`` (validation) are left out."""
    from fitness.verify import FULL_CREDIT

    evidence: Evidence = {}
    for genome_hash, task_id, family, score in rows:
        if task_id in excluded_tasks:
            continue
        counts = evidence.setdefault(family, {}).setdefault(genome_hash, [0, 0])
        counts[0] += score >= FULL_CREDIT
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


class Routing:
    def routes_enabled(self) -> bool:
        return self.config.routing.enabled and len(self.pool.specs) > 1 and bool(self.heldout_tasks)

    def route_record(self, gen: int, default_hash: str | None, default_results: list) -> dict[str, Any]:
        """This generation's routes (see the module docstring); {} when routing is off,
        the run has one family or no validation split, or nothing is validated yet."""
        if not self.routes_enabled() or default_hash is None:
            return {}
        from fitness.evaluate import summarise

        r = self.config.routing
        evidence = gather_evidence(self.journal.scores(self.config.run.seed), {t.id for t in self.heldout_tasks})
        specialists = choose_specialists(evidence, r.min_tasks, r.prior_tasks)
        prior = (self.metrics[-1].get("routes") or {}) if self.metrics else {}
        candidates: dict[str, list[tuple[str, list[int]]]] = {}  # family -> (hash, train), the earlier first
        for family, row in prior.items():
            if row.get("hash") and row.get("validation") is not None:
                candidates.setdefault(family, []).append((row["hash"], row["train"]))
        for family, (genome_hash, correct, n) in specialists.items():
            if all(h != genome_hash for h, _ in candidates.get(family, [])):
                candidates.setdefault(family, []).append((genome_hash, [correct, n]))
        scored = self.validate_candidates(gen, candidates, default_hash, default_results)
        default_right = {res.task_id: res.correct for res in default_results}
        default_accuracy = {row.family: row.accuracy for row in summarise(default_results) if row.family != "all"}
        record = {}
        for family in sorted(set(prior) | set(candidates)):
            options = [compare(genome_hash, train, scored.get((family, genome_hash)), default_right)
                       for genome_hash, train in candidates.get(family, [])]
            # the prior route was counted when it was tried; a new specialist adds one
            known = 1 if prior.get(family, {}).get("validation") is not None else 0
            tried = prior.get(family, {}).get("tried", known) + sum(o is not None for o in options[known:])
            record[family] = route_row([o for o in options if o is not None], default_hash, tried, r.significance,
                                       default_accuracy.get(family))
        return record

    def validate_candidates(self, gen: int, candidates: dict, default_hash: str,
                            default_results: list) -> dict[tuple[str, str], list]:
        """(family, hash) -> validation results on the family's tasks, for every
        candidate (the journal returns the ones validated before at no cost; the
        budget may leave the last new ones out). The default's are its own results."""
        from genomes.strategy import Strategy

        tasks_by_family: dict[str, list] = {}
        for task in self.heldout_tasks:
            tasks_by_family.setdefault(task.family, []).append(task)
        out: dict[tuple[str, str], list] = {}
        jobs, keys = [], []
        for family, rows in candidates.items():
            for genome_hash, _ in rows:
                if genome_hash == default_hash:
                    out[(family, genome_hash)] = [res for res in default_results if res.family == family]
                    continue
                encoded = self.journal.strategy(genome_hash)
                if family not in tasks_by_family or encoded is None:  # journaled before strategies were stored
                    continue
                jobs.append((Strategy.decode(encoded, where=f"journal strategy {genome_hash}"), tasks_by_family[family]))
                keys.append((family, genome_hash))
        jobs, keys = self.affordable_validation(jobs, keys)
        return out | (dict(zip(keys, self.generate(jobs, gen, "routes", heldout=True))) if jobs else {})


def compare(genome_hash: str, train: list[int], results: list | None, default_right: dict[str, bool]) -> dict | None:
    """A candidate's validation on its family against the default's on the same tasks:
    accuracy, wins (it right, the default wrong) and losses; None when not validated."""
    if not results:
        return None
    wins = sum(r.correct and not default_right.get(r.task_id, False) for r in results)
    losses = sum(not r.correct and default_right.get(r.task_id, False) for r in results)
    return {"hash": genome_hash, "train": train, "validation": sum(r.correct for r in results) / len(results),
            "wins": wins, "losses": losses}


def sign_test_p(wins: int, losses: int) -> float:
    """One-sided exact sign test: the chance of ``wins`` or more of ``wins + losses``
    discordant tasks going the candidate's way if it were no better than the default."""
    from math import comb

    n = wins + losses
    return sum(comb(n, k) for k in range(wins, n + 1)) / 2 ** n if n else 1.0


def route_row(options: list[dict], default_hash: str, tried: int, significance: float,
              default_validation: float | None) -> dict[str, Any]:
    """A family's route: of the validated candidates (the earlier first) the one with
    the best validation accuracy (the earlier on a tie), taken when it is not the
    default and a one-sided exact sign test of its wins against the default's on the
    family's validation tasks gives p <= ``significance``."""
    if not options:
        return {"hash": None, "train": [0, 0], "validation": None, "default_validation": default_validation,
                "taken": False, "why": "not validated (budget)", "tried": tried}
    best = max(options, key=lambda o: o["validation"])  # max keeps the first of equals
    p = sign_test_p(best["wins"], best["losses"])
    row = {**best, "p": round(p, 4), "default_validation": default_validation, "tried": tried}
    if best["hash"] == default_hash:
        return {**row, "taken": False, "why": "the default"}
    if best["wins"] > best["losses"] and p <= significance:
        return {**row, "taken": True}
    return {**row, "taken": False, "why": f"not significantly better on validation (p = {p:.2f})"}


def routes_of_run(run_dir: str | Path, default=None, saved=None):
    """The :class:`genomes.routes.Routes` of a run's latest checkpoint (``saved``, when
    the caller has loaded it): the export pick as the default and the routes its last
    generation took (strategies read from the journal). A run made before routing
    gives the default alone."""
    from evo.rundir import checkpoint
    from evo.rundir.files import RunDir
    from evo.tune.on_test import best_in_checkpoint
    from fitness.journal import Journal
    from genomes.routes import Routes
    from genomes.strategy import Strategy

    run_dir = Path(run_dir)
    saved = saved or checkpoint.load_latest(run_dir)
    default = default or best_in_checkpoint(saved, run_dir)
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
