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


def test_a_file_smaller_than_the_validation_asked_for_gets_a_note_naming_it(tmp_path):
    rows = tmp_path / "mine.jsonl"
    rows.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n"
                            for i in range(60)))
    cfg = config(tmp_path, tasks={"families": ["chain_sum", str(rows)], "heldout_per_family": 12})
    pool = TaskPool(cfg)
    validation = pool.validation()
    held = sum(task.family == "jsonl:mine" for task in validation)
    assert 0 < held < 12  # 60 rows: about 6 validation tasks
    notes = pool.validation_notes(validation)
    assert len(notes) == 1 and notes[0].startswith(f"jsonl:mine: its validation split holds {held} tasks")
    assert "tasks.heldout_per_family = 12" in notes[0]
    assert pool.validation_notes([])[0].startswith("no validation tasks")
    tiny = tmp_path / "tiny.jsonl"
    tiny.write_text(json.dumps({"question": "What is 1 + 1?", "answer": "2"}) + "\n")
    small = TaskPool(config(tmp_path, tasks={"families": ["chain_sum", str(tiny)], "heldout_per_family": 4}))
    assert small.validation_notes(small.validation()) == [
        "jsonl:tiny: no validation tasks (its file is too small to hold any); the others decide"]
