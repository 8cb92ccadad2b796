"""The one look at the test split a study takes: the best trial's exported best,
scored once on ``tune.test_per_family`` test tasks per family after every choice has
been made (trials were pruned and picked on validation; see :mod:`evo.tune.study`).

The score is cached in ``TUNE_DIR/test_score.json`` by (trial, strategy hash), so a
study resumed with more trials re-scores only when its best changes, and a refresh
(``--trials 0``) loads no model when nothing changed. Nothing reads this figure to
choose anything: it is printed and written, nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from evo.tune.setup import TuneSetup, trial_config

TEST_SCORE_FILE = "test_score.json"


def best_strategy_of(run_dir: Path):
    """The strategy `evo export` would put first: the latest checkpoint's hall ranked
    by validation accuracy (:func:`evo.rundir.export.rank_by_validation`)."""
    from evo.rundir import checkpoint
    from evo.rundir.export import rank_by_validation, validation_scores
    from genomes.strategy import Strategy

    saved = checkpoint.load_latest(run_dir)
    individuals = saved.state["individuals"]
    last = saved.state["metrics"][-1] if saved.state["metrics"] else {}
    hall = rank_by_validation([individuals[i] for i in saved.state["hall"]], validation_scores(last))
    return Strategy.decode(hall[0]["strategy"], where=f"{run_dir}: hall of fame")


def cached_test_score(tune_dir: Path, trial: int, strategy_hash: str) -> dict[str, Any] | None:
    path = tune_dir / TEST_SCORE_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # missing or damaged: score again
    if isinstance(saved, dict) and saved.get("trial") == trial and saved.get("hash") == strategy_hash:
        return saved
    return None


def score_best_on_test(setup: TuneSetup, best: dict[str, Any], backend: Callable[[], Any]) -> dict[str, Any] | None:
    """Score the best trial's best strategy on the test split (cached); None when
    ``tune.test_per_family`` is 0 or the run has no test split. ``backend()`` gives the
    study's shared backend, called only when the score is not cached."""
    from evo.engine.task_pool import TaskPool
    from fitness.evaluate import evaluate

    per_family = setup.section.test_per_family
    config = trial_config(setup, best["number"], {})
    if per_family == 0 or config.tasks.test_share == 0:
        return None
    strategy = best_strategy_of(Path(best["run_dir"]))
    strategy_hash = strategy.content_hash()
    cached = cached_test_score(setup.tune_dir, best["number"], strategy_hash)
    if cached is not None:
        return cached
    tasks = TaskPool(config).test(per_family, fewer_ok=True)
    results = evaluate(strategy, tasks, backend(), seed=config.run.seed)
    score = {"trial": best["number"], "hash": strategy_hash, "split": "test", "tasks": len(results),
             "accuracy": sum(r.correct for r in results) / len(results),
             "well_formed": sum(r.answer is not None for r in results) / len(results)}
    (setup.tune_dir / TEST_SCORE_FILE).write_text(json.dumps(score, indent=2) + "\n", encoding="utf-8")
    return score


def on_test_line(score: dict[str, Any] | None) -> str:
    if score is None:
        return "test split: not scored (tune.test_per_family = 0, or the config has no test split)"
    return (f"test accuracy of trial {score['trial']}'s best ({score['hash']}): {score['accuracy']:.1%} on "
            f"{score['tasks']} test tasks (reported only; every choice above read the validation split)")
