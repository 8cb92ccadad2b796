"""`evo config`: the config reference, every field with its default, allowed values
and help, generated from the config dataclasses (:mod:`evo.config.reference`)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    cf = sub.add_parser("config", help="print the config reference (every field, default, allowed values, help)",
                        description="Print the reference of every run-config field, generated from the config "
                                    "dataclasses (the README's table is the same text).")
    cf.add_argument("section", nargs="?", default="", help="only this section (run, population, tasks, ...)")
    cf.add_argument("--markdown", action="store_true", help="a Markdown table (as in the README)")


def command(args: argparse.Namespace) -> int:
    from evo.config.reference import config_reference

    print(config_reference(args.section, markdown=args.markdown))
    return 0
