"""``evo tune CONFIG --trials N``: an Optuna study over the loss weights (:mod:`evo.tune.study`)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    tn = sub.add_parser("tune", help="tune the loss weights α β γ δ with Optuna",
                        description="Optuna study over the loss weights: each trial runs a short evolution and is "
                                    "scored on the held-out set (hopeless trials are pruned). The same command again "
                                    "resumes the study; the best weights are written as a config fragment.")
    tn.add_argument("config", help="run config with an optional [tune] section, e.g. runs/tune.toml")
    tn.add_argument("--trials", type=int, required=True, help="trials to add to the study (0: only rewrite the results)")
    tn.add_argument("--storage", help="Optuna storage URL (default: [tune] storage, else sqlite:///TUNE_DIR/study.db)")
    tn.add_argument("--study-name", help="override [tune] study_name (also the results folder under run.out_dir)")
    tn.add_argument("--quiet", action="store_true", help="no progress display; print only the best weights line")


def command(args: argparse.Namespace) -> int:
    """``evo tune CONFIG --trials N [--storage URL] [--study-name NAME] [--quiet]``."""
    from evo.tune.results import headline
    from evo.tune.study import tune

    result = tune(args.config, args.trials, show_progress=not args.quiet, storage=args.storage,
                  study_name=args.study_name)
    if args.quiet:
        print(headline(result.best, result.baseline, len(result.trials)))
        print(f"results in {result.tune_dir}")
    return 0

