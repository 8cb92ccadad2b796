"""The training-loss side of a trial (``tune.train = true``).

The loss weights α β γ δ drive two things: selection (``L_total``, the fitness) and
training (the unified training loss of :mod:`evo.distill.weighted_trainer`: α β γ
weight the chain, answer and response tokens, δ the pairs by distance to the
frontier). A trial with ``tune.train`` tunes both at once: after its evolution it
mines DPO pairs from its journal, trains an adapter with the trial's own weights and
its sampled training settings (``train_steps``, ``learning_rate``, ``sft``), and
scores its best strategy with and without the adapter on the validation split. The
trial is worth the better of the two — the rule ``evo improve`` decides injection by —
so the study picks weights for the whole loop, not for selection alone.

Fewer pairs than ``tune.min_pairs`` train nothing: the trial keeps its best's score
and says why. Nothing here reads the test split.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from evo.config.sections import RunConfig
from evo.tune.setup import TuneSection

ADAPTER_ATTR = "adapter"  # trial user attribute: the trained adapter, when it helped


def suggest_training(trial, section: TuneSection) -> dict[str, float | int]:
    """Sample the training settings of a trial (fixed where a range is one value)."""
    steps_low, steps_high = (int(v) for v in section.train_steps)
    lr_low, lr_high = section.learning_rate
    return {
        "train_steps": trial.suggest_int("train_steps", steps_low, steps_high),
        "learning_rate": trial.suggest_float("learning_rate", lr_low, lr_high, log=lr_low < lr_high),
        "sft": trial.suggest_float("sft", *section.sft),
    }


def train_and_score(config: RunConfig, section: TuneSection, params: dict[str, Any], backend: Any,
                    trainer: Callable | None = None, show_progress: bool = False) -> dict[str, Any]:
    """Mine, train and score one finished trial run (see the module doc). Returns the
    record kept on the trial: pairs, the adapter, its training loss, validation
    accuracy of the best with and without it, whether it helps, and ``value`` (the
    trial's objective)."""
    from evo.distill.pairs import PairRules, distill_run
    from evo.distill.train import TrainSettings, train_adapter, train_on_pairs
    from evo.engine.task_pool import TaskPool
    from evo.improve.rounds import with_adapter
    from evo.tune.on_test import best_strategy_of
    from fitness.evaluate import evaluate_many

    run_dir = config.run_dir
    best = best_strategy_of(run_dir)
    tasks = TaskPool(config).validation(fewer_ok=True)
    loss = config.loss
    mined = distill_run(run_dir, run_dir / "distill", PairRules(use_incorrect=loss.beta > 0, use_longer=loss.alpha > 0))
    record: dict[str, Any] = {"pairs": len(mined.pairs), "best_hash": best.content_hash()}
    variants = [best]
    if len(mined.pairs) < section.min_pairs:
        record["skipped"] = f"{len(mined.pairs)} pairs, fewer than tune.min_pairs {section.min_pairs}"
    else:
        settings = dataclasses.replace(TrainSettings(), steps=int(params["train_steps"]),
                                       learning_rate=float(params["learning_rate"]), sft=float(params["sft"]),
                                       seed=config.run.seed)
        trained = train_on_pairs(trainer or train_adapter, mined.pairs_path, run_dir, config, settings,
                                 log=show_progress or None)
        record.update(adapter=str(trained.path), train_loss=trained.record.get("train_loss"))
        variants.append(with_adapter(best, str(trained.path)))
    if not tasks:  # task files too small for a validation split: nothing to compare on
        record.update(best=None, value=0.0, helps=False)
        return record
    scored = evaluate_many([(s, tasks) for s in variants], backend, seed=config.run.seed)
    accuracies = [sum(r.correct for r in rs) / len(rs) for rs in scored]
    record["best"] = accuracies[0]
    record["best+adapter"] = accuracies[1] if len(accuracies) > 1 else None
    record["helps"] = len(accuracies) > 1 and accuracies[1] > accuracies[0]
    record["value"] = max(accuracies)
    record["validation_tasks"] = len(tasks)
    return record


def adapter_of_trial(best_row: dict[str, Any]) -> str | None:
    """The adapter a picked trial's best is scored with on test: its trained adapter
    where that helped on validation, else none."""
    train = best_row.get("train") or {}
    return train.get("adapter") if train.get("helps") and Path(str(train.get("adapter"))).is_dir() else None


def train_line(record: dict[str, Any]) -> str:
    """One line on a trial's training step."""
    if record.get("skipped"):
        return f"no adapter trained ({record['skipped']}); validation accuracy of its best {_pct(record.get('best'))}"
    verdict = "helps" if record.get("helps") else "does not help"
    return (f"adapter from {record['pairs']} pairs {verdict}: validation {_pct(record.get('best'))} -> "
            f"{_pct(record.get('best+adapter'))} with it")


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{value:.1%}"
