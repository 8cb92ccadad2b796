"""`evo run CONFIG`: validate the config (before any model loads), run, summarise."""

from __future__ import annotations

import argparse
import sys

from evo.config.preflight import check_inputs
from evo.config.sections import load_config
from evo.rundir.files import RunDir


def add_parser(sub) -> None:
    rn = sub.add_parser("run", help="start an evolution run from a config file",
                        description="Evolve strategies as a TOML/YAML config describes; writes a run directory.")
    rn.add_argument("config", help="run config (.toml/.yaml), e.g. runs/quickstart.toml")
    rn.add_argument("--generations", type=int, help="override run.generations")
    rn.add_argument("--out-dir", help="override run.out_dir")
    rn.add_argument("--name", help="override run.name")
    rn.add_argument("--seed", type=int, help="override run.seed")
    rn.add_argument("--quiet", action="store_true", help="no progress display")
    rn.add_argument("--force", action="store_true", help="replace an existing run directory of the same name")


def command(args: argparse.Namespace) -> int:
    overrides: dict[str, dict] = {"run": {}}
    for flag, key in (("generations", "generations"), ("out_dir", "out_dir"), ("name", "name"), ("seed", "seed")):
        if getattr(args, flag) is not None:
            overrides["run"][key] = getattr(args, flag)
    config = load_config(args.config, overrides)
    check_inputs(config)
    RunDir(config.run_dir).check_free(args.force)  # before the model loads

    from evo.engine.run import run_evolution

    print(f"run directory: {config.run_dir}", file=sys.stderr)
    summarise(run_evolution(config, show_progress=not args.quiet, overwrite=args.force))
    return 0


def summarise(result) -> None:
    """The closing lines of `evo run` and `evo resume`."""
    from evo.rundir.export import pick_validation

    last = result.metrics[-1]
    validation = pick_validation(last)
    validation = "n/a" if validation is None else f"{validation:.1%}"
    leader = result.hall_of_fame[0]
    print(f"best strategy {result.best.content_hash()} (picked by validation, tasks.pick): validation accuracy "
          f"{validation}; the hall's leader {leader['hash']}: train accuracy {leader['accuracy']:.1%}, "
          f"fitness {last['best_fitness']:+.3f}")
    limit = last.get("budget_rollouts") or 0
    budget = f" of a budget of {limit}" if limit else ""
    search = last.get("search_rollouts", last["rollouts"] - last.get("heldout_rollouts", 0))
    print(f"{search} search rollouts{budget} (+{last.get('heldout_rollouts', 0)} validation), {last['tokens']:,} tokens; "
          f"results in {result.run_dir}")
    for line in route_lines(last.get("routes") or {}):
        print(line)


def route_lines(routes: dict) -> list[str]:
    """One line per family the run routes to its own strategy (`evo export` writes them
    as routes.json)."""
    return [f"route {family}: strategy {row['hash']}, validation {row['validation']:.1%} against the best's "
            f"{row['default_validation']:.1%} (train {row['train'][0]}/{row['train'][1]})"
            for family, row in sorted(routes.items()) if row.get("taken")]
