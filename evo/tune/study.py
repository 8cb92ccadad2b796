"""Tune the loss weights α, β, γ, δ with Optuna (``evo tune CONFIG --trials N``).

Each trial samples the four weights from the ranges of the config's ``[tune]``
section, runs a short evolution with them in its own run directory
(``TUNE_DIR/trial-NNNN``) and returns the held-out accuracy of the run's best
individual after its last generation — or, with ``objective = "multi"``, the pair
(held-out accuracy ↑, mean chain tokens ↓). The held-out score is reported after
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

The best trial is the COMPLETE trial with the highest held-out accuracy; ties go to
fewer mean chain tokens, then to the earlier trial (so the baseline wins a tie: tuned
weights must be strictly better to replace yours). In a multi-objective study this
picks the most accurate point of the Pareto front.

Failures: an exception inside a trial (a bug, a backend error) marks that trial FAIL
and stops the study — Optuna's default, kept on purpose: such errors almost always hit
every trial alike, and a silently failing study wastes hours. The summary is still
written, and running the command again resumes. Ctrl-C does the same.

Note: in ``scalar`` mode only the *ratios* of the weights change the selection
(``L_total`` is linear in them); pin one weight (``alpha = [1.0, 1.0]``) to search
the three ratios directly.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import socket
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evo.config.sections import RunConfig, RunSection, check_tasks
from genomes.errors import InputError
from genomes.validation import as_mapping, build_dataclass, read_structured

WEIGHTS = ("alpha", "beta", "gamma", "delta")
OBJECTIVES = ("accuracy", "multi")
PRUNERS = ("median", "none")
SYMBOLS = {"alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ"}


# ---- the [tune] section ---------------------------------------------------------------
@dataclass(frozen=True)
class TuneSection:
    """The ``[tune]`` section of a run config. Empty / ``None`` fields take their
    value from the run section (see :func:`parse_tune_section`)."""

    alpha: tuple[float, float] = (0.0, 2.0)  # sampling range [low, high] of each weight
    beta: tuple[float, float] = (0.0, 2.0)
    gamma: tuple[float, float] = (0.0, 1.0)
    delta: tuple[float, float] = (0.0, 1.0)
    study_name: str = ""  # default run.name + "-tune"; also the folder under run.out_dir
    storage: str = ""  # Optuna storage URL; default sqlite:///TUNE_DIR/study.db
    objective: str = "accuracy"  # accuracy: max held-out accuracy; multi: also min mean chain tokens
    sampler_seed: int | None = None  # default run.seed
    startup_trials: int = 5  # random trials before TPE models the results, and before the pruner compares
    pruner: str = "median"  # median: stop a trial below the median of earlier ones at the same generation
    generations: int | None = None  # per trial; default run.generations
    baseline: bool = True  # the study's first trial uses the config's [loss] weights
    share_rollouts: bool = True  # trials reuse each other's completions (TUNE_DIR/rollouts-seed<N>.sqlite)


def parse_tune_section(data: Any, run: RunSection) -> TuneSection:
    """Validate a ``[tune]`` mapping and fill the defaults that depend on ``run``.

    Raises InputError naming the field (``tune.alpha: range must be [low, high] with
    0 <= low <= high``); unknown fields are errors."""
    section = build_dataclass(TuneSection, as_mapping(data, "tune"), "tune")
    ranges = {name: _range(getattr(section, name), f"tune.{name}") for name in WEIGHTS}
    for name in ("sampler_seed", "generations"):
        value = getattr(section, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise InputError(f"tune.{name}: expected int, got {value!r}")
    study_name = section.study_name or f"{run.name}-tune"
    checks = [
        (study_name.strip() != "" and "/" not in study_name, "tune.study_name", "must be a non-empty name without '/'"),
        (section.storage == "" or "://" in section.storage, "tune.storage",
         "must be an Optuna storage URL such as sqlite:///study.db (or empty for TUNE_DIR/study.db)"),
        (section.objective in OBJECTIVES, "tune.objective", f"must be one of {', '.join(OBJECTIVES)}"),
        (section.pruner in PRUNERS, "tune.pruner", f"must be one of {', '.join(PRUNERS)}"),
        (section.startup_trials >= 0, "tune.startup_trials", "must be >= 0"),
        (section.generations is None or section.generations >= 1, "tune.generations", "must be >= 1"),
    ]
    for ok, name, why in checks:
        if not ok:
            raise InputError(f"{name}: {why}")
    return dataclasses.replace(
        section, **ranges, study_name=study_name,
        sampler_seed=run.seed if section.sampler_seed is None else section.sampler_seed,
        generations=run.generations if section.generations is None else section.generations,
    )


def _range(value: Any, where: str) -> tuple[float, float]:
    ok = (isinstance(value, (list, tuple)) and len(value) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))
    if not ok or not 0 <= value[0] <= value[1]:
        raise InputError(f"{where}: range must be [low, high] with 0 <= low <= high, got {value!r}")
    return float(value[0]), float(value[1])


@dataclass(frozen=True)
class TuneSetup:
    """A validated tuning config: the run config every trial starts from, the resolved
    ``[tune]`` section, the folder for trial runs and results, and the storage URL."""

    config: RunConfig
    section: TuneSection
    tune_dir: Path
    storage: str


def load_tune_config(path: str | Path, tune_overrides: dict[str, Any] | None = None) -> TuneSetup:
    """Read a run config with an optional ``[tune]`` section (TOML/YAML/JSON).

    ``tune_overrides`` ({"storage": "sqlite:///x.db"}) win over the file. Raises
    InputError for a missing file or any bad field, before anything is created."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file not found: {path}")
    data = dict(as_mapping(read_structured(path) or {}, path.name))
    tune_data = dict(as_mapping(data.pop("tune", {}), "tune"))
    tune_data.update(tune_overrides or {})
    config = RunConfig.from_dict(data, where=path.name)
    section = parse_tune_section(tune_data, config.run)
    tune_dir = Path(config.run.out_dir) / section.study_name
    storage = section.storage or f"sqlite:///{(tune_dir / 'study.db').resolve()}"
    return TuneSetup(config, section, tune_dir, storage)


def trial_config(setup: TuneSetup, number: int, weights: dict[str, float]) -> RunConfig:
    """The run config of trial ``number``: the tuning config with ``weights`` as its
    loss weights, ``tune.generations`` generations, in ``TUNE_DIR/trial-NNNN``."""
    c = setup.config
    run = dataclasses.replace(c.run, out_dir=str(setup.tune_dir), name=f"trial-{number:04d}",
                              generations=setup.section.generations)
    return dataclasses.replace(c, run=run, loss=dataclasses.replace(c.loss, **weights))


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
        raise InputError(f"tune.storage: cannot open {setup.storage}: {type(e).__name__}: {e}") from None
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


def make_objective(setup: TuneSetup, backend: Callable[[], Any], show_progress: bool) -> Callable:
    """The Optuna objective: sample the weights, run the trial's evolution, report the
    held-out accuracy after each generation (pruning the trial when the pruner says
    so), return the last held-out accuracy — or (accuracy, mean chain tokens) in a
    multi-objective study. ``backend()`` gives the shared backend."""
    import optuna

    from evo.engine.run import run_evolution

    single = setup.section.objective == "accuracy"

    def objective(trial) -> float | tuple[float, float]:
        trial.set_user_attr("owner", process_owner())
        weights = {name: trial.suggest_float(name, *getattr(setup.section, name)) for name in WEIGHTS}
        config = trial_config(setup, trial.number, weights)
        trial.set_user_attr("run_dir", str(config.run_dir))

        def on_generation(record: dict[str, Any]) -> None:
            gen = record["generation"]
            trial.set_user_attr("progress", {"generation": gen, "heldout_accuracy": record["heldout_accuracy"],
                                             "mean_chain_tokens": record["mean_chain_tokens"]})
            if single:
                trial.report(record["heldout_accuracy"], step=gen)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"held-out accuracy {record['heldout_accuracy']:.1%} at generation {gen}")

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
        return last["heldout_accuracy"] if single else (last["heldout_accuracy"], last["mean_chain_tokens"])

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


# ---- results --------------------------------------------------------------------------
@dataclass
class TuneResult:
    """What a :func:`tune` call leaves: every trial of the study as a row (see
    :func:`trial_rows`), the best and the best baseline row (None when there is no
    COMPLETE one), the trials this call marked failed, and the files written."""

    study_name: str
    storage: str
    tune_dir: Path
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    baseline: dict[str, Any] | None
    stale_failed: list[int] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)


def trial_rows(study) -> list[dict[str, Any]]:
    """One dict per trial: number, state, the weights, held-out accuracy and mean chain
    tokens (final for COMPLETE trials, last reported otherwise; None if none),
    generations reached, duration in seconds, baseline flag, run directory."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        progress = t.user_attrs.get("progress") or {}
        accuracy, tokens = progress.get("heldout_accuracy"), progress.get("mean_chain_tokens")
        if t.values is not None:
            accuracy = t.values[0]
            tokens = t.values[1] if len(t.values) > 1 else tokens
        duration = t.duration.total_seconds() if t.duration is not None else None
        rows.append({"number": t.number, "state": t.state.name, **{n: t.params.get(n) for n in WEIGHTS},
                     "heldout_accuracy": accuracy, "mean_chain_tokens": tokens,
                     "generations": progress.get("generation"), "duration_s": duration,
                     "baseline": bool(t.user_attrs.get("baseline")), "run_dir": t.user_attrs.get("run_dir")})
    return rows


def pick_best(rows: list[dict[str, Any]], baseline: bool = False) -> dict[str, Any] | None:
    """The best COMPLETE row (see the module doc), among baseline rows if ``baseline``."""
    done = [r for r in rows if r["state"] == "COMPLETE" and (r["baseline"] or not baseline)]
    if not done:
        return None
    return min(done, key=lambda r: (-r["heldout_accuracy"], r["mean_chain_tokens"] or 0.0, r["number"]))


def format_table(rows: list[dict[str, Any]], best: dict[str, Any] | None) -> str:
    """A Markdown table of the trials."""
    head = ["trial", "state", *(SYMBOLS[n] for n in WEIGHTS), "held-out acc", "chain tokens", "gens", "time", ""]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        note = ", ".join(x for x, on in (("best", best is not None and r["number"] == best["number"]),
                                         ("baseline", r["baseline"])) if on)
        cells = [str(r["number"]), r["state"].lower(), *(_num(r[n], ".3f") for n in WEIGHTS),
                 _num(r["heldout_accuracy"], ".1%"), _num(r["mean_chain_tokens"], ".1f"),
                 _num(r["generations"], "d"), _num(r["duration_s"], ".0f", "s"), note]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _num(value: Any, spec: str, suffix: str = "") -> str:
    return "–" if value is None else format(value, spec) + suffix


def _weights_text(weights: dict[str, float]) -> str:
    return "  ".join(f"{SYMBOLS[n]}={weights[n]:.3f}" for n in WEIGHTS)


def headline(result_best: dict[str, Any] | None, baseline: dict[str, Any] | None, n_trials: int) -> str:
    """One line: the best weights and their held-out score against the baseline's."""
    if result_best is None:
        return f"no complete trial yet ({n_trials} trials in the study)"
    text = (f"best: trial {result_best['number']}  {_weights_text(result_best)}  "
            f"held-out accuracy {result_best['heldout_accuracy']:.1%}")
    if result_best["baseline"]:
        text += "  (the config's own weights: no sampled weights beat them)"
    elif baseline is not None:
        text += f"  (config weights, trial {baseline['number']}: {baseline['heldout_accuracy']:.1%})"
    return text


def write_best(setup: TuneSetup, best: dict[str, Any]) -> dict[str, Path]:
    """``best_weights.toml`` (a ``[loss]`` fragment) and ``best_config.json`` (the
    tuning config with the best weights, full ``run.generations``)."""
    weights = {n: float(best[n]) for n in WEIGHTS}
    fragment = setup.tune_dir / "best_weights.toml"
    full = setup.tune_dir / "best_config.json"
    fragment.write_text(
        f"# Best loss weights of Optuna study {setup.section.study_name!r}: trial {best['number']}, held-out accuracy "
        f"{best['heldout_accuracy']:.1%}\n# after {best['generations']} generations. Paste this section into a run "
        f"config, or run the whole tuned config:\n#   evo run {full}\n[loss]\n"
        + "".join(f"{n} = {weights[n]!r}\n" for n in WEIGHTS), encoding="utf-8")
    c = setup.config
    config = dataclasses.replace(c, run=dataclasses.replace(c.run, name=f"{setup.section.study_name}-best"),
                                 loss=dataclasses.replace(c.loss, **weights))
    full.write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
    return {"best_weights": fragment, "best_config": full}


def plot_trials(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Held-out accuracy per trial (colour = state) and the best so far, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    scored = [r for r in rows if r["heldout_accuracy"] is not None]
    if not scored:
        return None
    fig = Figure(figsize=(6.4, 3.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    colours = {"COMPLETE": "tab:blue", "PRUNED": "tab:orange", "FAIL": "tab:red", "RUNNING": "tab:gray"}
    for state, colour in colours.items():
        pts = [r for r in scored if r["state"] == state]
        if pts:
            ax.scatter([r["number"] for r in pts], [r["heldout_accuracy"] for r in pts], c=colour,
                       label=state.lower(), zorder=3)
    done = [r for r in scored if r["state"] == "COMPLETE"]
    if done:
        best, xs, ys = -1.0, [], []
        for r in done:
            best = max(best, r["heldout_accuracy"])
            xs.append(r["number"])
            ys.append(best)
        ax.step(xs, ys, where="post", color="black", lw=1, label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize="small")
    fig.savefig(path, facecolor="white")
    return path


def plot_optuna(study, tune_dir: Path, multi: bool) -> dict[str, Path]:
    """Optuna's interactive plots (HTML), only where plotly is installed: optimisation
    history and parameter importances, or the Pareto front in a multi study. A plot
    that cannot be drawn yet (too few trials) is skipped."""
    if importlib.util.find_spec("plotly") is None:
        return {}
    from optuna import visualization as vis

    wanted = {"pareto_front": lambda: vis.plot_pareto_front(study, target_names=["held-out accuracy", "chain tokens"])} \
        if multi else {"optimization_history": lambda: vis.plot_optimization_history(study),
                       "param_importances": lambda: vis.plot_param_importances(study)}
    written = {}
    for name, draw in wanted.items():
        try:
            path = tune_dir / f"{name}.html"
            with warnings.catch_warnings():  # e.g. "importances will be equal" on a handful of trials
                warnings.simplefilter("ignore")
                figure = draw()
            figure.write_html(str(path), include_plotlyjs="directory")  # plotly.min.js beside it: works offline
            written[name] = path
        except Exception as e:  # noqa: BLE001 - a plot is optional; e.g. importances need 2 complete trials
            print(f"evo tune: {name} plot skipped: {e}", file=sys.stderr)
    return written


def write_outputs(study, setup: TuneSetup, stale: list[int]) -> TuneResult:
    """Summary table, plots and (when a trial is COMPLETE) the best-weights files."""
    rows = trial_rows(study)
    best, baseline = pick_best(rows), pick_best(rows, baseline=True)
    table = format_table(rows, best)
    s = setup.section
    text = (f"# Optuna study {s.study_name!r}\n\nstorage: `{setup.storage}`; objective: {s.objective}; "
            f"{s.generations} generations per trial; sampler seed {s.sampler_seed}\n\n"
            f"{headline(best, baseline, len(rows))}\n\n{table}\n")
    files = {"summary": setup.tune_dir / "summary.md"}
    files["summary"].write_text(text, encoding="utf-8")
    if best is not None:
        files.update(write_best(setup, best))
    png = plot_trials(rows, setup.tune_dir / "trials.png")
    if png is not None:
        files["plot"] = png
    files.update(plot_optuna(study, setup.tune_dir, multi=s.objective == "multi"))
    return TuneResult(s.study_name, setup.storage, setup.tune_dir, rows, best, baseline, stale, files)


# ---- entry point ----------------------------------------------------------------------
def tune(config_path: str | Path, trials: int, backend: Any = None, show_progress: bool = True,
         storage: str | None = None, study_name: str | None = None, pruner: Any = None) -> TuneResult:
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
    _check_inputs(setup.config, model=backend is None)
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

        try:
            study.optimize(make_objective(setup, get_backend, show_progress), n_trials=trials,
                           callbacks=[_report_trial] if show_progress else None)
        finally:
            result = write_outputs(study, setup, stale)
            if show_progress:
                print(headline(result.best, result.baseline, len(result.trials)))
                print(format_table(result.trials, result.best))
                print(f"results in {setup.tune_dir}")
        return result
    finally:
        optuna.logging.set_verbosity(verbosity)


def tune_command(args) -> int:
    """``evo tune CONFIG --trials N [--storage URL] [--study-name NAME] [--quiet]``."""
    result = tune(args.config, args.trials, show_progress=not args.quiet, storage=args.storage,
                  study_name=args.study_name)
    if args.quiet:
        print(headline(result.best, result.baseline, len(result.trials)))
        print(f"results in {result.tune_dir}")
    return 0


def _check_inputs(config: RunConfig, model: bool) -> None:
    """Seeds, task families and (if ``model``) the model exist; cheap, loads no model."""
    from fitness.backends.model_store import check_model
    from genomes.strategy import Strategy

    for seed in config.population.seeds:
        Strategy.load(seed)
    check_tasks(config)
    if model:
        check_model(config.model.name)


def _report_trial(study, trial) -> None:
    progress = trial.user_attrs.get("progress") or {}
    value = trial.values[0] if trial.values else progress.get("heldout_accuracy")
    print(f"trial {trial.number} {trial.state.name.lower()}: held-out accuracy {_num(value, '.1%')} "
          f"after {_num(progress.get('generation'), 'd')} generations", file=sys.stderr, flush=True)

