"""`evo tune`: a real Optuna study over short evolutions on the scripted backend.
A tiny study runs and writes its results; a second call adds trials to the same
study; the sampler is seeded; a trial left RUNNING by a killed process is marked
failed on resume (and a live one is not); the pruner is wired to the per-generation
held-out score; bad [tune] values name the field; the best-weights fragment loads in
`evo run`."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from fakes import ArithmeticOracle

from evo.config.sections import RunConfig, load_config
from evo.tune.study import (
    WEIGHTS,
    load_tune_config,
    open_study,
    process_owner,
    tune,
)
from genomes.errors import InputError
from genomes.validation import read_structured

HERE = Path(__file__).parent

BASE = """\
[run]
name = "t"
out_dir = "{out}"
seed = 1
generations = 4            # the full run; trials are shorter

[population]
size = 4
offspring = 4
seeds = ["direct", "stepwise"]

[tasks]
families = ["chain_sum"]
per_family = 3
heldout_per_family = 4

[loss]
alpha = 1.0
beta = 1.0
gamma = 0.2
delta = 0.2

[tune]
{tune}
"""


def write_config(tmp_path: Path, tune_lines: str = "", name: str = "c.toml") -> Path:
    """A quickstart-sized run on chain_sum whose trials run 2 generations."""
    if "generations" not in tune_lines:
        tune_lines = "generations = 2\n" + tune_lines
    path = tmp_path / name
    path.write_text(BASE.format(out=tmp_path / "out", tune=tune_lines))
    return path


def quiet_tune(path, trials, **kw):
    return tune(path, trials, backend=ArithmeticOracle(), show_progress=False, **kw)


def load(path: Path):
    setup = load_tune_config(path)
    return optuna.load_study(study_name=setup.section.study_name, storage=setup.storage), setup


def test_tiny_study_runs_and_writes_results(tmp_path):
    result = quiet_tune(write_config(tmp_path), 3)
    tune_dir = tmp_path / "out" / "t-tune"
    assert result.tune_dir == tune_dir and (tune_dir / "study.db").is_file()
    assert [r["state"] for r in result.trials] == ["COMPLETE"] * 3
    # trial 0 is the config's own weights; the others are sampled in the ranges
    assert result.trials[0]["baseline"] and [result.trials[0][n] for n in WEIGHTS] == [1.0, 1.0, 0.2, 0.2]
    for r in result.trials:
        assert r["generations"] == 2 and r["heldout_accuracy"] == 1.0  # the oracle solves chain_sum
        metrics = (tune_dir / f"trial-{r['number']:04d}" / "metrics.jsonl").read_text().splitlines()
        assert len(metrics) == 3  # generations 0..2 in the trial's own run directory
        saved = json.loads((tune_dir / f"trial-{r['number']:04d}" / "config.json").read_text())
        assert [saved["loss"][n] for n in WEIGHTS] == [r[n] for n in WEIGHTS]
    assert 0 <= result.trials[1]["alpha"] <= 2 and 0 <= result.trials[1]["gamma"] <= 1
    # all tie on accuracy and tokens: the earliest (the baseline) stays best
    assert result.best["number"] == 0 and result.baseline["number"] == 0
    summary = (tune_dir / "summary.md").read_text()
    assert "| trial | state | α | β | γ | δ | validation acc" in summary and summary.count("| complete |") == 3
    assert (tune_dir / "trials.png").stat().st_size > 1000
    assert set(result.files) >= {"summary", "best_weights", "best_config", "plot"}


def test_second_call_adds_trials_to_the_same_study(tmp_path):
    path = write_config(tmp_path)
    first = quiet_tune(path, 3)
    second = quiet_tune(path, 2)
    study, _ = load(path)
    assert len(study.trials) == 5 and [r["number"] for r in second.trials] == [0, 1, 2, 3, 4]
    assert second.trials[:3] == first.trials[:3]
    assert sum(r["baseline"] for r in second.trials) == 1  # the baseline is not queued again
    # the resumed call does not replay the first call's draws
    sampled = lambda rows: [tuple(r[n] for n in WEIGHTS) for r in rows]
    assert not set(sampled(second.trials[3:])) & set(sampled(first.trials))


def test_trials_share_completions_without_changing_results(tmp_path):
    def study(name: str, share: str):
        backend = ArithmeticOracle()
        path = write_config(tmp_path, f'study_name = "{name}"\nshare_rollouts = {share}', name=f"{name}.toml")
        result = tune(path, 3, backend=backend, show_progress=False)
        metrics = [read_metrics(tmp_path / "out" / name / f"trial-{i:04d}") for i in range(3)]
        return result, metrics, len(backend.requests)

    shared, shared_metrics, shared_requests = study("shared", "true")
    alone, alone_metrics, alone_requests = study("alone", "false")
    assert [r["heldout_accuracy"] for r in shared.trials] == [r["heldout_accuracy"] for r in alone.trials]
    assert without_costs(shared_metrics) == without_costs(alone_metrics)
    # every trial starts from the same population: its first generation is generated once per study
    assert [m[0]["rollouts"] for m in shared_metrics] == [shared_metrics[0][0]["rollouts"], 0, 0]
    assert [m[0]["rollouts"] for m in alone_metrics] == [alone_metrics[0][0]["rollouts"]] * 3
    assert shared_requests < alone_requests


def without_costs(runs: list[list[dict]]) -> list[list[dict]]:
    costs = ("rollouts", "search_rollouts", "reused", "heldout_rollouts", "wall_s", "backend_s")
    return [[{k: v for k, v in m.items() if k not in costs} for m in run] for run in runs]


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_sampler_is_seeded(tmp_path):
    def first_draws(folder: str, seed: int):
        path = write_config(tmp_path, f"baseline = false\nsampler_seed = {seed}\nstudy_name = \"{folder}\"",
                            name=f"{folder}.toml")
        return [tuple(r[n] for n in WEIGHTS) for r in quiet_tune(path, 2).trials]

    assert first_draws("a", 7) == first_draws("b", 7)
    assert first_draws("c", 8) != first_draws("a", 7)


def test_multi_objective_study(tmp_path):
    result = quiet_tune(write_config(tmp_path, 'objective = "multi"\npruner = "median"'), 2)
    study, setup = load(tmp_path / "c.toml")
    assert len(study.directions) == 2 and isinstance(open_study(setup).pruner, optuna.pruners.NopPruner)
    assert all(len(t.values) == 2 and t.values[1] == r["mean_chain_tokens"]
               for t, r in zip(study.trials, result.trials))
    assert result.best is not None
    # the same study cannot be reopened as single-objective
    with pytest.raises(InputError, match="tune.objective"):
        quiet_tune(write_config(tmp_path, 'objective = "accuracy"'), 1)


def test_trial_killed_mid_run_is_marked_failed_on_resume(tmp_path):
    path = write_config(tmp_path)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from fakes import ArithmeticOracle; from evo.tune.study import tune; "
            "tune(sys.argv[2], 3, backend=ArithmeticOracle(), show_progress=False)")
    env = {**os.environ, "EVO_FAULT": "after-evaluate@1"}  # SIGKILL in trial 0, generation 1
    proc = subprocess.run([sys.executable, "-c", code, str(HERE), str(path)], check=False, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    study, _ = load(path)
    assert [t.state.name for t in study.trials] == ["RUNNING"]
    assert study.trials[0].user_attrs["progress"]["generation"] == 0  # it died inside generation 1

    result = quiet_tune(path, 2)
    assert result.stale_failed == [0]
    assert [r["state"] for r in result.trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    # the baseline died with trial 0, so it is queued again
    assert result.trials[1]["baseline"] and result.baseline["number"] == 1
    assert "| 0 | fail |" in (result.tune_dir / "summary.md").read_text()


def test_running_trial_without_owner_fails_and_live_owner_is_kept(tmp_path):
    path = write_config(tmp_path)
    study = open_study(load_tune_config(path))
    orphan = study.ask()  # e.g. a process that died before recording its owner
    live = study.ask()
    live.set_user_attr("owner", process_owner())  # this very process: alive
    result = quiet_tune(path, 1)
    assert result.stale_failed == [orphan.number]
    states = {r["number"]: r["state"] for r in result.trials}
    assert states == {orphan.number: "FAIL", live.number: "RUNNING", 2: "COMPLETE"}


def test_should_prune_stops_a_trial_at_the_reported_generation(tmp_path):
    path = write_config(tmp_path)
    # held-out accuracy is at most 1.0 < 2.0: every trial is pruned at its first report
    result = quiet_tune(path, 2, pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    assert [r["state"] for r in result.trials] == ["PRUNED", "PRUNED"]
    study, setup = load(path)
    assert [t.intermediate_values for t in study.trials] == [{0: 1.0}, {0: 1.0}]
    assert not (tmp_path / "out" / "t-tune" / "trial-0000" / "checkpoints" / "gen-000001").exists()
    assert result.best is None and not (result.tune_dir / "best_weights.toml").exists()
    pruner = open_study(setup).pruner  # the configured one: median, after one generation
    assert isinstance(pruner, optuna.pruners.MedianPruner) and pruner._n_warmup_steps == 1


@pytest.mark.parametrize(("line", "field"), [
    ("alpha = [2.0, 1.0]", "tune.alpha: range must be [low, high] with 0 <= low <= high"),
    ("beta = [-1, 1]", "tune.beta: range"),
    ("gamma = 0.5", "tune.gamma: range"),
    ("delta = [0, 1, 2]", "tune.delta: range"),
    ("objective = \"fast\"", "tune.objective: must be one of accuracy, multi"),
    ("pruner = \"hyperband\"", "tune.pruner"),
    ("storage = \"study.db\"", "tune.storage"),
    ("storage = \"nosuchdb://x\"", "tune.storage: cannot open nosuchdb://x"),
    ("generations = 0", "tune.generations: must be >= 1"),
    ("sampler_seed = \"x\"", "tune.sampler_seed: expected int"),
    ("startup_trials = -1", "tune.startup_trials"),
    ("study_name = \"a/b\"", "tune.study_name"),
    ("trails = 3", "tune.trails: unknown field"),
])
def test_bad_tune_values_name_the_field(tmp_path, line, field):
    path = write_config(tmp_path, line)
    with pytest.raises(InputError) as err:
        quiet_tune(path, 1)
    assert str(err.value).startswith(field)
    assert not (tmp_path / "out").exists()  # nothing created before validation


def test_bad_trials_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="--trials"):
        quiet_tune(write_config(tmp_path), -1)
    with pytest.raises(InputError, match="config file not found"):
        quiet_tune(tmp_path / "nope.toml", 1)


def test_defaults_follow_the_run_section(tmp_path):
    path = tmp_path / "d.toml"
    path.write_text(f'[run]\nname = "x"\nout_dir = "{tmp_path}"\nseed = 5\ngenerations = 3\n')
    setup = load_tune_config(path)
    s = setup.section
    assert (s.study_name, s.sampler_seed, s.generations, s.objective, s.pruner) == ("x-tune", 5, 3, "accuracy", "median")
    assert (s.alpha, s.beta, s.gamma, s.delta) == ((0.0, 2.0), (0.0, 2.0), (0.0, 1.0), (0.0, 1.0))
    assert setup.storage == f"sqlite:///{tmp_path / 'x-tune' / 'study.db'}"
    assert load_tune_config(path, {"storage": "sqlite:///other.db"}).storage == "sqlite:///other.db"


def test_best_weights_fragment_loads_in_evo_run(tmp_path, monkeypatch):
    path = write_config(tmp_path, "baseline = false")
    result = quiet_tune(path, 2)
    best = [result.best[n] for n in WEIGHTS]
    fragment = result.tune_dir / "best_weights.toml"
    # on its own: a valid run config whose only non-defaults are the weights
    assert [getattr(load_config(fragment).loss, n) for n in WEIGHTS] == best
    # pasted into the tuning config (the [tune] section is not a run field)
    data = read_structured(path)
    data.pop("tune")
    data["loss"].update(read_structured(fragment)["loss"])
    assert [getattr(RunConfig.from_dict(data).loss, n) for n in WEIGHTS] == best
    # the full tuned config runs with `evo run` as it is
    import evo.engine.run
    from evo.cli.main import main

    monkeypatch.setattr(evo.engine.run, "build_backend", lambda config: ArithmeticOracle())
    assert main(["run", str(result.tune_dir / "best_config.json"), "--quiet"]) == 0
    run_dir = tmp_path / "out" / "t-tune-best"
    saved = json.loads((run_dir / "config.json").read_text())
    assert [saved["loss"][n] for n in WEIGHTS] == best and saved["run"]["generations"] == 4
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 5


@pytest.mark.slow
def test_one_trial_on_the_bundled_model(tmp_path, hf_backend):
    strategy = json.loads((Path(__file__).parents[2] / "genomes" / "seeds" / "direct.json").read_text())
    strategy["decoding"]["max_new_tokens"] = 32  # keep it short: this is about the wiring
    (tmp_path / "short.json").write_text(json.dumps(strategy))
    path = tmp_path / "real.toml"
    path.write_text(f"""
[run]
name = "real"
out_dir = "{tmp_path}"
generations = 1
[population]
size = 1
offspring = 1
seeds = ["{tmp_path / 'short.json'}"]
operators = ["mut_prompt"]
crossover_prob = 0.0
mutation_prob = 1.0
[tasks]
families = ["chain_sum"]
per_family = 1
heldout_per_family = 2
""")
    result = tune(path, 1, backend=hf_backend, show_progress=False)
    (row,) = result.trials
    assert row["state"] == "COMPLETE" and row["baseline"] and row["generations"] == 1
    assert row["heldout_accuracy"] in (0.0, 0.5, 1.0)
    assert [getattr(load_config(result.files["best_weights"]).loss, n) for n in WEIGHTS] == [1.0, 1.0, 0.2, 0.2]


def test_a_damaged_study_database_is_one_line(tmp_path, capsys):
    from evo.cli.main import main

    db = tmp_path / "study.db"
    db.write_bytes(bytes(range(256)) * 20)
    assert main(["tune", "runs/tune.toml", "--trials", "0", "--storage", f"sqlite:///{db}", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("evo: error: tune.storage:") and "damaged" in err


class TestSplitSpy(ArithmeticOracle):
    """The oracle, but every request showing a test question is answered wrong, and
    counted: if any choice read the test split, poisoning it would change a choice."""

    __test__ = False  # a helper, not a test class

    def __init__(self, test_questions: set[str], poison: bool):
        super().__init__()
        self.test_questions, self.poison, self.test_requests = test_questions, poison, 0

    def generate(self, requests, progress=None):
        shown = [any(q in m["content"] for m in r.messages for q in self.test_questions) for r in requests]
        self.test_requests += sum(shown)
        out = super().generate(requests, progress)
        if self.poison:
            from fitness.backends.base import Completion

            out = [Completion("no answer", 2, 20, "stop") if s else c for c, s in zip(out, shown)]
        return out


def test_split_is_read_by_no_choice_and_scored_once(tmp_path):
    """Trials prune and pick on validation; the best is scored on test once, at the end.
    Answering every test question wrong changes no trial value, no pick, no weight:
    only the reported test figure."""
    from evo.engine.task_pool import TaskPool
    from evo.tune.setup import trial_config

    def study(name: str, poison: bool):
        path = write_config(tmp_path, f'study_name = "{name}"\ntest_per_family = 6', name=f"{name}.toml")
        setup = load_tune_config(path)
        config = trial_config(setup, 0, {})
        test_questions = {t.question for level in (0, 1) for t in
                          TaskPool(dataclasses.replace(config, tasks=dataclasses.replace(config.tasks, heldout_level=level)))
                          .test(200, fewer_ok=True)}
        validation = {t.question for t in TaskPool(config).validation()}
        assert test_questions and not test_questions & validation
        spy = TestSplitSpy(test_questions, poison)
        result = tune(path, 3, backend=spy, show_progress=False)
        return result, spy

    clean, clean_spy = study("clean", poison=False)
    poisoned, poisoned_spy = study("poisoned", poison=True)
    # the six test tasks of the final look, and nothing else, showed a test question
    assert clean_spy.test_requests == poisoned_spy.test_requests == 6
    assert clean.test["tasks"] == 6 and clean.test["split"] == "test"
    assert clean.test["accuracy"] == 1.0 and poisoned.test["accuracy"] == 0.0
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("duration_s", "run_dir")} for r in rows]
    assert strip(clean.trials) == strip(poisoned.trials) and clean.best["number"] == poisoned.best["number"]
    summary = (clean.tune_dir / "summary.md").read_text()
    assert "validation acc" in summary and "test accuracy" in summary and "100.0% on 6 test tasks" in summary
    # a refresh reads the cached score: no model, no request
    again_spy = TestSplitSpy(set(), poison=False)
    again = tune(clean.tune_dir.parent.parent / "clean.toml", 0, backend=again_spy, show_progress=False)
    assert again.test == clean.test and again_spy.requests == []


# ---- the training-loss side (tune.train) ---------------------------------------------
def test_trials_tune_the_training_side_and_the_pick_is_scored_with_its_adapter(tmp_path):
    """With tune.train each trial trains an adapter with its own weights and sampled
    training settings after its evolution; the backend here answers every question
    right with an adapter, so each trial is worth its best + adapter on validation,
    the pick is scored on test with its adapter, and best_weights.toml names the
    training settings."""
    from fakes import AdapterHelps, FakeTrainer

    path = write_config(tmp_path, "train = true\ntrain_steps = [2, 6]\nlearning_rate = [1e-4, 1e-3]\nmin_pairs = 1\n"
                                  "test_per_family = 6\n")
    trainer = FakeTrainer()
    result = tune(path, 3, backend=AdapterHelps(), show_progress=False, trainer=trainer)
    assert trainer.calls == 3
    for row in result.trials:
        train = row["train"]
        assert 2 <= row["train_steps"] <= 6 and 1e-4 <= row["learning_rate"] <= 1e-3 and row["sft"] == 1.0
        assert train["pairs"] >= 1 and train["best+adapter"] == 1.0 and train["best"] < 1.0 and train["helps"]
        assert row["heldout_accuracy"] == train["value"] == 1.0  # the trial's value: best + adapter
    assert result.test["adapter"] and result.test["accuracy"] == 1.0
    fragment = (result.tune_dir / "best_weights.toml").read_text()
    assert f"--steps {result.best['train_steps']}" in fragment and "[loss]" in fragment
    assert "steps | lr | sft | best / + adapter" in (result.tune_dir / "summary.md").read_text()


def test_too_few_pairs_train_nothing_and_keep_the_best_score(tmp_path):
    from fakes import FakeTrainer

    path = write_config(tmp_path, "train = true\nmin_pairs = 100000\n")
    trainer = FakeTrainer()
    result = tune(path, 1, backend=ArithmeticOracle(), show_progress=False, trainer=trainer)
    train = result.trials[0]["train"]
    assert trainer.calls == 0 and "fewer than tune.min_pairs" in train["skipped"]
    assert result.trials[0]["heldout_accuracy"] == train["best"] == train["value"]


def test_the_pick_is_compared_with_the_baseline_on_the_same_test_tasks(tmp_path):
    """A study whose pick is not the baseline scores both on test, paired."""
    from evo.tune.on_test import on_test_line, score_best_on_test
    from evo.tune.setup import load_tune_config

    path = write_config(tmp_path, "test_per_family = 5\n")
    result = quiet_tune(path, 2)
    setup = load_tune_config(path)
    other = dict(result.trials[1], number=1)
    score = score_best_on_test(setup, other, lambda: ArithmeticOracle(), baseline=result.trials[0])
    assert score["baseline"]["trial"] == 0 and score["tasks"] == 5
    assert score["baseline"]["gain"] == score["accuracy"] - score["baseline"]["accuracy"]
    assert "tuned − own" in on_test_line(score)


@pytest.mark.parametrize("line, field", [("train_steps = [0, 4]", "tune.train_steps"),
                                         ("train_steps = [2.5, 4]", "tune.train_steps"),
                                         ("learning_rate = [0, 1e-3]", "tune.learning_rate"),
                                         ("train = 'yes'", "tune.train"), ("min_pairs = 0", "tune.min_pairs")])
def test_bad_training_ranges_name_the_field(tmp_path, line, field):
    with pytest.raises(InputError, match=field.replace(".", r"\.")):
        load_tune_config(write_config(tmp_path, line + "\n"))
