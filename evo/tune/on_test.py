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

    return best_in_checkpoint(checkpoint.load_latest(run_dir), run_dir)


def best_in_checkpoint(saved, run_dir: Path):
    """:func:`best_strategy_of` for a checkpoint already loaded (``run_dir`` names it
    in errors)."""
    from evo.rundir.export import ranked_candidates
    from genomes.strategy import Strategy

    ranked, _ = ranked_candidates(saved)
    return Strategy.decode(ranked[0]["strategy"], where=f"{run_dir}: hall of fame")


def cached_test_score(tune_dir: Path, trial: int, strategy_hash: str) -> dict[str, Any] | None:
    path = tune_dir / TEST_SCORE_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # missing or damaged: score again
    if isinstance(saved, dict) and saved.get("trial") == trial and saved.get("hash") == strategy_hash:
        return saved
    return None


def score_best_on_test(setup: TuneSetup, best: dict[str, Any], backend: Callable[[], Any],
                       baseline: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Score the best trial's best strategy (with its adapter where ``tune.train``
    trained one that helped on validation) on the test split (cached); and, when the
    baseline trial (the config's own weights) is another trial, its best on the same
    tasks, with the paired difference and a bootstrap CI. None when
    ``tune.test_per_family`` is 0 or the run has no test split. ``backend()`` gives the
    study's shared backend, called only when the score is not cached."""
    from evo.engine.task_pool import TaskPool
    from evo.improve.rounds import with_adapter
    from evo.report.stats import bootstrap_ci
    from evo.tune.train_trial import adapter_of_trial
    from fitness.evaluate import evaluate_many

    per_family = setup.section.test_per_family
    config = trial_config(setup, best["number"], {})
    if per_family == 0 or config.tasks.test_share == 0:
        return None
    picks = [best] + ([baseline] if baseline is not None and baseline["number"] != best["number"] else [])
    strategies = [with_adapter(best_strategy_of(Path(row["run_dir"])), adapter_of_trial(row)) for row in picks]
    key = "/".join(s.content_hash() for s in strategies)
    cached = cached_test_score(setup.tune_dir, best["number"], key)
    if cached is not None:
        return cached
    tasks = TaskPool(config).test(per_family, fewer_ok=True)
    scored = evaluate_many([(s, tasks) for s in strategies], backend(), seed=config.run.seed)
    correct = [[float(r.correct) for r in rs] for rs in scored]
    results = scored[0]
    score = {"trial": best["number"], "hash": key, "split": "test", "tasks": len(results),
             "accuracy": sum(correct[0]) / len(results),
             "well_formed": sum(r.answer is not None for r in results) / len(results),
             "adapter": adapter_of_trial(best)}
    if len(picks) > 1:
        import random

        gain = [a - b for a, b in zip(correct[0], correct[1])]
        low, high = bootstrap_ci(gain, random.Random(f"{config.run.seed}/tune-test"))
        score["baseline"] = {"trial": baseline["number"], "accuracy": sum(correct[1]) / len(results),
                             "gain": sum(gain) / len(gain), "ci": [low, high]}
    (setup.tune_dir / TEST_SCORE_FILE).write_text(json.dumps(score, indent=2) + "\n", encoding="utf-8")
    return score


def on_test_line(score: dict[str, Any] | None) -> str:
    if score is None:
        return "test split: not scored (tune.test_per_family = 0, or the config has no test split)"
    line = (f"test accuracy of trial {score['trial']}'s best{' + its adapter' if score.get('adapter') else ''} "
            f"({score['hash'].split('/')[0]}): {score['accuracy']:.1%} on {score['tasks']} test tasks (reported only; "
            "every choice above read the validation split)")
    base = score.get("baseline")
    if base:
        line += (f"; the config's own weights (trial {base['trial']}): {base['accuracy']:.1%}, tuned − own "
                 f"{100 * base['gain']:+.1f} points [{100 * base['ci'][0]:+.1f}, {100 * base['ci'][1]:+.1f}]")
    return line
