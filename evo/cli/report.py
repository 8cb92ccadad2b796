"""`evo report RUN_DIR`: plots and an HTML summary of a run (:mod:`evo.report`)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    rp = sub.add_parser("report", help="plots and an HTML summary of a run")
    rp.add_argument("run_dir", help="a run directory written by `evo run`")
    rp.add_argument("--out", help="output directory (default RUN_DIR/report)")


def command(args: argparse.Namespace) -> int:
    from evo.report.html import write_report

    print(write_report(args.run_dir, args.out))
    return 0
