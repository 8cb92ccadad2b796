"""Tune the loss weights α, β, γ, δ with Optuna (``evo tune CONFIG --trials N``).

Each trial samples the four weights from the ranges of the config's ``[tune]``
section, runs a short evolution with them in its own run directory
(``TUNE_DIR/trial-NNNN``) and returns the validation accuracy of the run's best
individual after its last generation — or, with ``objective = "multi"``, the pair
(validation accuracy ↑, mean chain tokens ↓). The validation score is reported after
every generation, so the pruner can stop hopeless trials early (single objective
only: Optuna does not prune multi-objective studies).

``TUNE_DIR`` is ``run.out_dir/<study name>`` (default study name: ``run.name +
"-tune"``). It holds the study database (``study.db``, SQLite, unless ``storage``
names another Optuna storage URL), the trial runs, and the results:

- ``best_weights.toml``: a ``[loss]`` fragment with the best weights, which any run
  config accepts (and which ``evo run`` loads on its own);
- ``best_config.json``: the tuning config with those weights, runnable as it is
  (``evo run TUNE_DIR/best_config.json``; full ``run.generations``);
- ``summary.md``: one row per trial (also printed), ``trials.png``, and Optuna's
  own HTML plots when plotly is installed.

Trials share their completions (``share_rollouts``): a completion is a function of
(strategy, task, seed) only, never of the loss weights, and every trial starts from
the same seeded population on the same tasks, so the initial generation and every
strategy two trials both meet are generated once per study. Each trial's journal is
seeded from ``TUNE_DIR/rollouts-seed<run.seed>.sqlite`` and merged back when the
trial ends (also when pruned or failed). Results are identical either way; only the
cost differs (a trial's ``rollouts`` count only what it generated itself).

Running the same command again resumes the same study (``load_if_exists``) and adds
``N`` trials. Before that, trials left RUNNING by a process that died (SIGKILL, power
loss) are marked FAIL — see :func:`fail_stale_trials` — so they neither linger nor
count. The sampler is TPE seeded with ``sampler_seed`` and the number of trials the
study already has, so a fresh study and every resumed call sample reproducibly
without repeating the first call's draws. The first trial of a study uses the
config's own ``[loss]`` weights (``baseline = true``), so the table always compares
the tuned weights with the ones you started from.

The best trial is the COMPLETE trial with the highest validation accuracy; ties go to
fewer mean chain tokens, then to the earlier trial (so the baseline wins a tie: tuned
weights must be strictly better to replace yours). In a multi-objective study this
picks the most accurate point of the Pareto front. Pruning and this pick read only
the validation split; once the study has made them, the best trial's best strategy
is scored once on ``tune.test_per_family`` test tasks per family
(:mod:`evo.tune.on_test`), printed and appended to ``summary.md``: the figure to
report, which nothing chooses by.

Failures: an exception inside a trial (a bug, a backend error) marks that trial FAIL
and stops the study — Optuna's default, kept on purpose: such errors almost always hit
every trial alike, and a silently failing study wastes hours. The summary is still
written, and running the command again resumes. Ctrl-C does the same.

With ``tune.train = true`` a trial also tunes the training-loss side: it trains an
adapter on the unified loss with its own weights and sampled ``train_steps``,
``learning_rate`` and ``sft``, and is worth the better of its best and its best +
adapter on validation (:mod:`evo.tune.train_trial`); the pick is scored on test with
its adapter where that helped, and ``best_weights.toml`` names the training settings.

Test: after the pick, its best (and the baseline trial's best, on the same tasks) are
scored once on test, with the paired difference and its bootstrap CI: whether the
tuned weights beat the config's own on data no choice read.

Note: in ``scalar`` mode only the *ratios* of the weights change the selection
(``L_total`` is linear in them); pin one weight (``alpha = [1.0, 1.0]``) to search
the three ratios directly.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evo.config.preflight import check_inputs
from evo.tune.results import (
    TuneResult,
    _num,
    _weights_text,
    format_table,
    headline,
    write_outputs,
)
from evo.tune.on_test import on_test_line, score_best_on_test
from evo.tune.setup import WEIGHTS, TuneSetup, load_tune_config, trial_config
from evo.tune.train_trial import suggest_training, train_and_score, train_line
from genomes.errors import InputError


# ---- the study ------------------------------------------------------------------------
def _optuna():
    try:
        import optuna
    except ImportError:
        raise InputError("evo tune needs Optuna: pip install 'evo-reason[optuna]' (or pip install 'optuna>=4.0')") from None
    return optuna


def open_study(setup: TuneSetup, pruner: Any = None):
    """Create the study, or load it if it exists; seed its sampler by the number of
    trials it already has (see the module doc). ``pruner`` (an Optuna pruner) replaces
    the configured one — for tests. Raises InputError if an existing study has another
    number of objectives than ``tune.objective``."""
    optuna = _optuna()
    s = setup.section
    directions = ["maximize"] if s.objective == "accuracy" else ["maximize", "minimize"]
    if setup.storage.startswith("sqlite:///"):
        Path(setup.storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        study = optuna.create_study(study_name=s.study_name, storage=setup.storage, load_if_exists=True,
                                    directions=directions)
    except Exception as e:  # noqa: BLE001 - a bad URL surfaces as one of many driver errors
        first_line = (str(e).splitlines() or [""])[0]  # SQLAlchemy appends the SQL and a help link
        raise InputError(f"tune.storage: cannot open {setup.storage}: {type(e).__name__}: {first_line} "
                         "(a damaged study database: move it aside to start a new study)") from None
    if len(study.directions) != len(directions):
        raise InputError(f"tune.objective: study {s.study_name!r} in {setup.storage} has {len(study.directions)} "
                         f"objective(s), not {len(directions)} ({s.objective!r}); use another tune.study_name")
    already = len(study.get_trials(deepcopy=False))
    seed = s.sampler_seed if already == 0 else hash_seed(s.sampler_seed, already)
    study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.startup_trials)
    if pruner is not None:
        study.pruner = pruner
    elif s.pruner == "median" and len(directions) == 1:
        study.pruner = optuna.pruners.MedianPruner(n_startup_trials=s.startup_trials, n_warmup_steps=1)
    else:
        study.pruner = optuna.pruners.NopPruner()
    return study


def hash_seed(seed: int, trials: int) -> int:
    """A sampler seed for a call that starts after ``trials`` trials: deterministic,
    and different from the seed of every earlier call."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}/{trials}".encode()).digest()[:4], "little")


def process_owner() -> dict[str, Any]:
    """Who runs a trial: host, pid and (Linux) the process start time, so a reused pid
    is not mistaken for the original process."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid())}


def _process_start(pid: int) -> str | None:
    """Start time (clock ticks since boot) of ``pid``; None where /proc is missing or
    the process is a zombie (it has died, only its exit status is left)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    after_name = stat.rsplit(")", 1)[1].split()
    return None if after_name[0] == "Z" else after_name[19]


def owner_alive(owner: Any) -> bool:
    """Whether the process that owns a RUNNING trial may still be working on it.

    Unknown owner: False. Another host: True (it cannot be checked from here). This
    host: the pid exists, is not a zombie and (where known) started when it did."""
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
        return False
    if owner.get("host") != socket.gethostname():
        return True
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's live process
    start = _process_start(owner["pid"])
    if Path(f"/proc/{owner['pid']}").exists() and start is None:
        return False  # zombie
    return owner.get("start") is None or start is None or start == owner["start"]


def fail_stale_trials(study) -> list[int]:
    """Mark FAIL every RUNNING trial whose process is gone (see :func:`owner_alive`);
    returns their numbers. Trials of live processes — another ``evo tune`` on this
    study on this host, or any trial owned by another host — are left alone.

    (Optuna's own ``optuna.storages.fail_stale_trials`` needs a heartbeat-enabled
    ``RDBStorage`` object and waits out a grace period; this works for any storage URL
    and at once.)"""
    from optuna.trial import TrialState

    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not owner_alive(trial.user_attrs.get("owner")):
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            failed.append(trial.number)
    return failed


def enqueue_baseline(study, setup: TuneSetup) -> bool:
    """Queue a trial with the config's own ``[loss]`` weights, unless the study already
    has one that did not fail, or the weights lie outside the ranges. Returns whether
    it queued one."""
    from optuna.trial import TrialState

    if not setup.section.baseline:
        return False
    weights = {name: getattr(setup.config.loss, name) for name in WEIGHTS}
    if not all(lo <= weights[n] <= hi for n in WEIGHTS for lo, hi in [getattr(setup.section, n)]):
        return False
    alive = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
    if any(t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False, states=alive)):
        return False
    study.enqueue_trial(weights, user_attrs={"baseline": True})
    return True


def make_objective(setup: TuneSetup, backend: Callable[[], Any], show_progress: bool,
                   trainer: Callable | None = None) -> Callable:
    """The Optuna objective: sample the weights, run the trial's evolution, report the
    validation accuracy after each generation (pruning the trial when the pruner says
    so), return the last validation accuracy — or (accuracy, mean chain tokens) in a
    multi-objective study. With ``tune.train`` the trial then trains an adapter with
    its weights and is worth the better of best / best + adapter on validation
    (:mod:`evo.tune.train_trial`; ``trainer`` replaces the TRL trainer in tests).
    ``backend()`` gives the shared backend."""
    import optuna

    from evo.engine.run import run_evolution
    from evo.rundir.export import pick_validation

    single = setup.section.objective == "accuracy"

    def objective(trial) -> float | tuple[float, float]:
        trial.set_user_attr("owner", process_owner())
        weights = {name: trial.suggest_float(name, *getattr(setup.section, name)) for name in WEIGHTS}
        training = suggest_training(trial, setup.section) if setup.section.train else None
        config = trial_config(setup, trial.number, weights)
        trial.set_user_attr("run_dir", str(config.run_dir))

        def on_generation(record: dict[str, Any]) -> None:
            gen, validation = record["generation"], pick_validation(record)  # of the run's best so far
            trial.set_user_attr("progress", {"generation": gen, "heldout_accuracy": validation,
                                             "mean_chain_tokens": record["mean_chain_tokens"]})
            if single and validation is not None:
                trial.report(validation, step=gen)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"validation accuracy {validation:.1%} at generation {gen}")

        if show_progress:
            print(f"trial {trial.number}: " + _weights_text(weights) + f" -> {config.run_dir}", file=sys.stderr, flush=True)
        seed = config.run.seed
        shared = setup.tune_dir / f"rollouts-seed{seed}.sqlite" if setup.section.share_rollouts else None
        _fresh_run_dir(config.run_dir, shared, seed)
        try:
            result = run_evolution(config, backend=backend(), show_progress=show_progress,
                                   on_generation=on_generation)
        finally:
            if shared is not None:
                copy_journal(config.run_dir / "journal.sqlite", shared, seed)
        last = result.metrics[-1]
        accuracy = pick_validation(last) or 0.0  # None: the task files hold no validation task
        if training is not None:  # the training-loss side: worth the better of best / best + adapter
            record = train_and_score(config, setup.section, training, backend(), trainer, show_progress)
            trial.set_user_attr("train", record)
            accuracy = record["value"]
            if show_progress:
                print(f"trial {trial.number}: {train_line(record)}", file=sys.stderr, flush=True)
        return accuracy if single else (accuracy, last["mean_chain_tokens"])

    return objective


def _fresh_run_dir(run_dir: Path, shared: Path | None, seed: int) -> None:
    """An empty trial directory (a leftover of a deleted study with the same trial
    number is removed), whose journal holds the study's shared completions."""
    import shutil

    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    if shared is not None and shared.exists():
        copy_journal(shared, run_dir / "journal.sqlite", seed)


def copy_journal(source: Path, target: Path, seed: int) -> int:
    """Add the completions of journal ``source`` (generated with ``seed``) to journal
    ``target``, strategies included; keys ``target`` has are kept. Returns the number
    of rows offered. Uses only the Journal API."""
    from fitness.journal import Journal

    if not source.exists():
        return 0
    with Journal(source) as src, Journal(target) as dst:
        rows = list(src.all_results())
        hashes = {r.strategy_hash for _, r in rows}
        dst.put_many(rows, seed, {h: s for h in hashes if (s := src.strategy(h)) is not None})
    return len(rows)


# ---- entry point ----------------------------------------------------------------------
def tune(config_path: str | Path, trials: int, backend: Any = None, show_progress: bool = True,
         storage: str | None = None, study_name: str | None = None, pruner: Any = None,
         trainer: Callable | None = None) -> TuneResult:
    """Add ``trials`` trials to the config's study (creating it on first use) and write
    the results; see the module doc. ``trials = 0`` only refreshes the results.

    ``backend`` (anything with the Backend interface) is shared by all trials; by
    default the config's hf backend is built once, when the first trial starts.
    ``storage`` / ``study_name`` override ``[tune]``; ``pruner`` (an Optuna pruner
    object) replaces the configured one. Raises InputError for bad input, before any
    model loads; an exception inside a trial marks it FAIL and propagates after the
    summary is written."""
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 0:
        raise InputError(f"--trials: must be an integer >= 0, got {trials!r}")
    overrides = {k: v for k, v in (("storage", storage), ("study_name", study_name)) if v is not None}
    setup = load_tune_config(config_path, overrides)
    check_inputs(setup.config, model=backend is None)
    optuna = _optuna()
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own lines say the same, once
    try:
        study = open_study(setup, pruner)
        setup.tune_dir.mkdir(parents=True, exist_ok=True)
        stale = fail_stale_trials(study)
        if stale and show_progress:
            print(f"marked {len(stale)} trial(s) left running by a dead process as failed: {stale}", file=sys.stderr)
        if trials > 0:
            enqueue_baseline(study, setup)
        shared = {"backend": backend}

        def get_backend():
            if shared["backend"] is None:
                from evo.engine.backend import build_backend

                shared["backend"] = build_backend(setup.config)
            return shared["backend"]

        finished = False
        try:
            study.optimize(make_objective(setup, get_backend, show_progress, trainer), n_trials=trials,
                           callbacks=[_report_trial] if show_progress else None)
            finished = True
        finally:
            result = write_outputs(study, setup, stale)
            if finished and result.best is not None:  # every choice is made: the one look at test
                result.test = score_best_on_test(setup, result.best, get_backend, result.baseline)
                write_test_line(result)
            if show_progress:
                print(headline(result.best, result.baseline, len(result.trials)))
                print(format_table(result.trials, result.best))
                if result.best is not None:
                    print(on_test_line(result.test))
                print(f"results in {setup.tune_dir}")
        return result
    finally:
        optuna.logging.set_verbosity(verbosity)


def write_test_line(result) -> None:
    """Append the test line to summary.md (written before the test was scored)."""
    summary = result.files.get("summary")
    if summary is not None:
        with open(summary, "a", encoding="utf-8") as f:
            f.write(f"\n{on_test_line(result.test)}\n")


def _report_trial(study, trial) -> None:
    progress = trial.user_attrs.get("progress") or {}
    value = trial.values[0] if trial.values else progress.get("heldout_accuracy")
    print(f"trial {trial.number} {trial.state.name.lower()}: validation accuracy {_num(value, '.1%')} "
          f"after {_num(progress.get('generation'), 'd')} generations", file=sys.stderr, flush=True)
