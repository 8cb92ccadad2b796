"""`evo resume RUN_DIR`: continue a run from its last complete checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from evo.cli.run import summarise
from genomes.errors import InputError


def add_parser(sub) -> None:
    rs = sub.add_parser("resume", help="continue a run directory from its last checkpoint",
                        description="Continue a run exactly where its last complete checkpoint left it.")
    rs.add_argument("run_dir", help="a run directory written by `evo run`")
    rs.add_argument("--generations", type=int, help="total generations to reach (default: the run's configured number)")
    rs.add_argument("--quiet", action="store_true", help="no progress display")
    rs.add_argument("--inject-adapter", action="append", default=[], metavar="PATH",
                    help="a PEFT adapter directory (e.g. from `evo distill --train`) to add to the population "
                         "as new individuals; repeatable")


def command(args: argparse.Namespace) -> int:
    from evo.engine.run import resume_evolution
    from evo.rundir import checkpoint
    from evo.rundir.files import RunDir

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise InputError(f"run directory not found: {run_dir}")
    # fail fast, before the model loads: a checkpoint of a newer version, or no run here at all
    if checkpoint.load_latest(run_dir, warn=lambda m: None, none_usable_ok=True) is None:
        RunDir(run_dir).read_config()
    summarise(resume_evolution(run_dir, generations=args.generations, show_progress=not args.quiet,
                                inject_adapters=args.inject_adapter))
    return 0
