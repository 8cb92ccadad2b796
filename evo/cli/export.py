"""`evo export RUN_DIR --out DIR`: the best strategies (and adapters) of a run (:mod:`evo.rundir.export`)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    ex = sub.add_parser("export", help="write the best strategies (and adapters) of a run",
                        description="Export the best K strategies of a run: strategy JSON, prompt template, "
                                    "and for LoRA individuals a PEFT adapter directory with a model card.")
    ex.add_argument("run_dir", help="a run directory written by `evo run`")
    ex.add_argument("--top", type=int, default=3, help="how many (default 3)")
    ex.add_argument("--out", required=True, help="output directory")


def command(args: argparse.Namespace) -> int:
    from evo.rundir.export import export_top

    for path in export_top(args.run_dir, args.top, args.out):
        print(path)
    return 0
