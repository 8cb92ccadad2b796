"""The ``evo`` command line. Each command is one module of :mod:`evo.cli` with
``add_parser(subparsers)`` and ``command(args) -> exit status``; this file only
assembles them and turns :class:`~genomes.errors.InputError` into a one-line message
and exit status 2 (no traceback for mistakes the user can fix)."""

from __future__ import annotations

import argparse
import importlib
import sys

from genomes.errors import InputError

EXIT_INPUT_ERROR = 2
COMMANDS = ("eval", "run", "resume", "export", "report", "distill", "improve", "tune", "tasks", "config")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evo", description="Evolve LLM reasoning strategies.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"evo.cli.{name}")
        module.add_parser(sub)
        sub.choices[name].set_defaults(handler=module.command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except InputError as e:
        print(f"evo: error: {e}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print("evo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
