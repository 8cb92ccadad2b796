"""The harvest before each round's mining: the run's leading strategies answer fresh
training tasks, and their completions join the journal.

Pairs need tasks on which one strategy was right and another wrong (or much longer).
The evolution's own batches give few such tasks (9 a generation in `runs/improve.toml`,
so 34 to 81 pairs in three rounds); the adapter trained on them moved test accuracy by
a few points. A harvest scores the hall's top ``harvest_strategies`` (by the order
`evo export` uses) on ``harvest_per_family`` training tasks per family at the scored
level (:meth:`evo.engine.task_pool.TaskPool.scored_level_training`), a new draw each
round, through the journal: :func:`evo.distill.pairs.distill_run` mines them with
everything else, and the run's bootstrapped exemplars may come from them too. Only
the train split is drawn. A resumed round finds the completions in the journal and
generates nothing again. These rollouts are the loop's, reported in the round's
record; the evolution counts one in ``budget.rollouts`` when it meets it again (as
rows journaled after its checkpoint, :mod:`fitness.journal`), as if it had made it.
"""

from __future__ import annotations

from typing import Any

HARVEST_DRAW = -100  # the draw label of round N's tasks is HARVEST_DRAW - N: apart from every batch


def harvest(loop, number: int) -> dict[str, Any]:
    """Score the leading strategies on round ``number``'s harvest tasks; returns what
    the round's record keeps (tasks, strategies, new rollouts, correct share)."""
    settings = loop.settings
    if settings.harvest_per_family == 0 or settings.harvest_strategies == 0:
        return {"tasks": 0}
    from evo.engine.task_pool import TaskPool
    from evo.engine.progress import RequestProgress
    from evo.rundir import checkpoint
    from evo.rundir.export import ranked_candidates
    from evo.rundir.files import RunDir
    from fitness.journal import Journal, evaluate_with_journal
    from genomes.strategy import Strategy

    saved = checkpoint.load_latest(loop.run_dir)
    ranked, _ = ranked_candidates(saved)
    strategies = [Strategy.decode(row["strategy"], where="hall of fame") for row in ranked[:settings.harvest_strategies]]
    tasks = TaskPool(loop.config).scored_level_training(settings.harvest_per_family, HARVEST_DRAW - number)
    jobs = [(strategy, tasks) for strategy in strategies]
    total = sum(len(tasks) * s.decoding.votes for s in strategies)
    with Journal(RunDir(loop.run_dir).journal_path) as journal, \
            RequestProgress("harvest", total, enabled=loop.show_progress) as bar:
        results, new, reused = evaluate_with_journal(jobs, loop.backend(), journal, loop.config.run.seed,
                                                     saved.generation, progress=bar.update)
    scored = [r for rs in results for r in rs]
    return {"tasks": len(tasks), "strategies": len(strategies), "rollouts": new, "reused": reused,
            "correct": sum(r.correct for r in scored) / len(scored) if scored else 0.0}
