"""``evo improve CONFIG --rounds K``: evolve, mine, train, evaluate, inject, K times
(:mod:`evo.improve.rounds`); the same command again resumes where it stopped."""

from __future__ import annotations

import argparse

from evo.distill.train import TrainSettings
from evo.improve.rounds import PAIR_PROMPTS, ImproveSettings


def add_parser(sub) -> None:
    im = sub.add_parser("improve", help="rounds of evolution + DPO training, each adapter injected when it helps",
                        description="Each round resumes the evolution, mines DPO pairs from the whole journal, trains "
                                    "a LoRA adapter on the unified loss, scores it on the validation split and injects "
                                    "it into the next round when it helps; the test split is scored once at the end. "
                                    "The same command again resumes after a kill.")
    im.add_argument("config", help="run config (the run directory is its run.out_dir/run.name)")
    im.add_argument("--rounds", type=int, required=True, help="rounds in all (a resumed loop runs the missing ones)")
    d = ImproveSettings(rounds=1)
    im.add_argument("--generations-per-round", type=int, default=d.generations_per_round,
                    help="generations each round adds (default: the config's run.generations)")
    im.add_argument("--validation-per-family", type=int, default=d.validation_per_family,
                    help=f"validation tasks per family for each round's decision (default {d.validation_per_family})")
    im.add_argument("--test-per-family", type=int, default=d.test_per_family,
                    help=f"test tasks per family scored once at the end (default {d.test_per_family}; 0: none)")
    im.add_argument("--min-pairs", type=int, default=d.min_pairs,
                    help=f"a round with fewer pairs is skipped (default {d.min_pairs})")
    im.add_argument("--pair-prompts", choices=PAIR_PROMPTS, default=d.pair_prompts,
                    help="train the adapter on pairs under the canonical prompt only, or also under the round's "
                         f"best strategy's prompt (default {d.pair_prompts})")
    im.add_argument("--harvest-per-family", type=int, default=d.harvest_per_family,
                    help="before mining, the hall's leading strategies answer this many fresh training tasks per "
                         f"family, so pairs come from more tasks (default {d.harvest_per_family}: none)")
    im.add_argument("--harvest-strategies", type=int, default=d.harvest_strategies,
                    help=f"how many of the hall's leading strategies harvest (default {d.harvest_strategies})")
    im.add_argument("--no-routes", dest="routes", action="store_false",
                    help="hand back the champion alone: no per-family routes (improve/routes.json holds none)")
    t = TrainSettings()
    im.add_argument("--steps", type=int, default=t.steps, help=f"training steps per round (default {t.steps})")
    im.add_argument("--learning-rate", type=float, default=t.learning_rate, help=f"(default {t.learning_rate})")
    im.add_argument("--sft", type=float, default=t.sft, help=f"SFT term weight (default {t.sft})")
    im.add_argument("--quiet", action="store_true", help="no progress lines")


def command(args: argparse.Namespace) -> int:
    from evo.config.sections import load_config
    from evo.improve.report import round_rows, test_rows
    from evo.improve.rounds import improve

    config = load_config(args.config)
    settings = ImproveSettings(
        rounds=args.rounds, generations_per_round=args.generations_per_round,
        validation_per_family=args.validation_per_family, test_per_family=args.test_per_family,
        min_pairs=args.min_pairs, pair_prompts=args.pair_prompts, harvest_per_family=args.harvest_per_family,
        harvest_strategies=args.harvest_strategies, routes=args.routes,
        train=TrainSettings(steps=args.steps, learning_rate=args.learning_rate, sft=args.sft))
    state = improve(config, settings, show_progress=not args.quiet)
    print("\n".join(round_rows(state) + [""] + test_rows(state.final)))
    return 0
