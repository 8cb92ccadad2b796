"""Three splits in a run: training batches from train, the per-generation score from
validation, test only on request; runs made before the third split keep their
held-out tasks as validation and have no test split."""

from __future__ import annotations

import json

import pytest
from fakes import ArithmeticOracle, config

from evo.config.sections import RunConfig
from evo.engine.run import run_evolution
from evo.engine.task_pool import TaskPool
from fitness.tasks import TEST, TRAIN, VALIDATION, split_of
from genomes.errors import InputError


def test_a_run_draws_each_set_from_its_split(tmp_path):
    cfg = config(tmp_path)
    pool = TaskPool(cfg)
    t = cfg.tasks
    where = lambda tasks: {split_of(x.family, x.question, t.split_seed, t.heldout_fraction, t.test_share) for x in tasks}
    assert where(pool.training_batch([("chain_sum", 0)] * 6, generation=0)) == {TRAIN}
    assert where(pool.validation()) == {VALIDATION}
    assert where(pool.test(8)) == {TEST}


def test_metrics_name_the_split_of_the_generation_score(tmp_path):
    run_evolution(config(tmp_path, run={"generations": 1}), backend=ArithmeticOracle(), show_progress=False)
    metrics = [json.loads(line) for line in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    assert {m["heldout_split"] for m in metrics} == {"validation"}
    assert all(m["validation_scores"][m["best_hash"]] == m["heldout_accuracy"] for m in metrics)


def test_runs_made_before_the_third_split_keep_their_held_out_tasks(tmp_path):
    """An old config.json has no tasks.test_share: its held-out set becomes the
    validation set unchanged, and asking it for test tasks is one clear error."""
    new = config(tmp_path)
    data = new.to_dict()
    del data["tasks"]["test_share"]
    old = RunConfig.from_saved(json.loads(json.dumps(data)), "config.json")
    assert old.tasks.test_share == 0.0 and new.tasks.test_share == 0.5
    old_pool, new_pool = TaskPool(old), TaskPool(new)
    assert [t.id for t in old_pool.training_batch([("chain_sum", 0)] * 6, 0)] == \
        [t.id for t in new_pool.training_batch([("chain_sum", 0)] * 6, 0)]
    t = old.tasks
    assert all(split_of(x.family, x.question, t.split_seed, t.heldout_fraction) != TRAIN for x in old_pool.validation())
    with pytest.raises(InputError, match="this run has no test split"):
        old_pool.test(4)


def test_test_share_out_of_range_names_the_field(tmp_path):
    with pytest.raises(InputError, match="tasks.test_share"):
        config(tmp_path, tasks={"test_share": 1.0})
