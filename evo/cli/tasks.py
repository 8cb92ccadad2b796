"""`evo tasks [FILTER]`: list reasoning-gym task families and their levels."""

from __future__ import annotations

import argparse

from genomes.errors import InputError


def add_parser(sub) -> None:
    ts = sub.add_parser("tasks", help="list reasoning-gym task families and their levels")
    ts.add_argument("filter", nargs="?", default="", help="only families whose name contains this")


def command(args: argparse.Namespace) -> int:
    from fitness.tasks import family_levels, reasoning_gym_families

    families = [f for f in reasoning_gym_families() if args.filter in f]
    if not families:
        raise InputError(f"no task family matches {args.filter!r}")
    for family in families:
        print(f"{family:<32} levels 0..{family_levels(family) - 1}")
    return 0
