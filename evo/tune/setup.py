"""The ``[tune]`` section of a tuning config and the run config of each trial
(see :mod:`evo.tune.study` for what a study does)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evo.config.sections import RunConfig, RunSection
from genomes.errors import InputError
from genomes.validation import as_mapping, build_dataclass, read_structured

WEIGHTS = ("alpha", "beta", "gamma", "delta")
TRAINING = ("train_steps", "learning_rate", "sft")  # sampled only with tune.train
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
    objective: str = "accuracy"  # accuracy: max validation accuracy; multi: also min mean chain tokens
    sampler_seed: int | None = None  # default run.seed
    startup_trials: int = 5  # random trials before TPE models the results, and before the pruner compares
    pruner: str = "median"  # median: stop a trial below the median of earlier ones at the same generation
    generations: int | None = None  # per trial; default run.generations
    baseline: bool = True  # the study's first trial uses the config's [loss] weights
    share_rollouts: bool = True  # trials reuse each other's completions (TUNE_DIR/rollouts-seed<N>.sqlite)
    test_per_family: int = 16  # test tasks per family the final best is scored on once (0: none)
    # the training-loss side (evo.tune.train_trial): each trial also trains an adapter on the
    # unified loss with its own α β γ δ and is worth the better of best / best + adapter on validation
    train: bool = False
    train_steps: tuple[float, float] = (40, 40)  # optimiser steps (integers; low == high: fixed)
    learning_rate: tuple[float, float] = (2e-4, 2e-4)  # sampled log-uniformly where low < high
    sft: tuple[float, float] = (1.0, 1.0)  # weight of the SFT term on chosen completions
    min_pairs: int = 8  # fewer pairs than this: the trial trains nothing and keeps its best's score


def parse_tune_section(data: Any, run: RunSection) -> TuneSection:
    """Validate a ``[tune]`` mapping and fill the defaults that depend on ``run``.

    Raises InputError naming the field (``tune.alpha: range must be [low, high] with
    0 <= low <= high``); unknown fields are errors."""
    section = build_dataclass(TuneSection, as_mapping(data, "tune"), "tune")
    ranges = {name: _range(getattr(section, name), f"tune.{name}") for name in WEIGHTS + TRAINING}
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
        (section.test_per_family >= 0, "tune.test_per_family", "must be >= 0"),
        (isinstance(section.train, bool), "tune.train", "must be true or false"),
        (ranges["train_steps"][0] >= 1 and all(float(v).is_integer() for v in ranges["train_steps"]),
         "tune.train_steps", "must be whole numbers >= 1"),
        (ranges["learning_rate"][0] > 0, "tune.learning_rate", "must be > 0"),
        (section.min_pairs >= 1, "tune.min_pairs", "must be >= 1"),
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
