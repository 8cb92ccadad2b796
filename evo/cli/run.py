"""`evo run CONFIG`: validate the config (before any model loads), run, summarise."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evo.config.sections import check_tasks, load_config
from evo.rundir.files import RunDir
from fitness.backends.model_store import check_model
from genomes.errors import InputError
from genomes.strategy import Strategy


def run_command(args: argparse.Namespace) -> int:
    overrides: dict[str, dict] = {"run": {}}
    for flag, key in (("generations", "generations"), ("out_dir", "out_dir"), ("name", "name"), ("seed", "seed")):
        if getattr(args, flag) is not None:
            overrides["run"][key] = getattr(args, flag)
    config = load_config(args.config, overrides)
    for seed in config.population.seeds:
        Strategy.load(seed)
    check_tasks(config)
    check_model(config.model.name)
    RunDir(config.run_dir).check_free(args.force)  # before the model loads

    from evo.engine.run import run_evolution

    print(f"run directory: {config.run_dir}", file=sys.stderr)
    _summarise(run_evolution(config, show_progress=not args.quiet, overwrite=args.force))
    return 0


def resume_command(args: argparse.Namespace) -> int:
    from evo.rundir import checkpoint
    from evo.engine.run import resume_evolution

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise InputError(f"run directory not found: {run_dir}")
    checkpoint.load_latest(run_dir, warn=lambda m: None)  # fail fast, before the model loads
    _summarise(resume_evolution(run_dir, generations=args.generations, show_progress=not args.quiet,
                                inject_adapters=args.inject_adapter))
    return 0


def _summarise(result) -> None:
    last = result.metrics[-1]
    print(f"best strategy {result.best.content_hash()}: train accuracy {result.hall_of_fame[0]['accuracy']:.1%}, "
          f"held-out accuracy {last['heldout_accuracy']:.1%}, fitness {last['best_fitness']:+.3f}")
    print(f"{last['rollouts']} rollouts, {last['tokens']:,} tokens; results in {result.run_dir}")
