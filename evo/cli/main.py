"""`evo` command line. Each subcommand lives in its own module under ``evo``; this
file only parses arguments and turns :class:`~genomes.errors.InputError` into a
one-line message and exit status 2 (no traceback for mistakes the user can fix)."""

from __future__ import annotations

import argparse
import sys

from genomes.errors import InputError

EXIT_INPUT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evo", description="Evolve LLM reasoning strategies.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ev = sub.add_parser("eval", help="score one strategy file on a task set",
                        description="Score one strategy (prompt + chain template + decoding) on tasks.")
    ev.add_argument("strategy", help="strategy file (.json/.toml/.yaml) or a shipped seed name (direct, stepwise, fewshot)")
    ev.add_argument("--tasks", required=True,
                    help="comma-separated: reasoning-gym family, family@LEVEL, or a .jsonl file (e.g. chain_sum@1,letter_counting)")
    ev.add_argument("--n", type=int, default=16, help="tasks per entry of --tasks (default 16)")
    ev.add_argument("--split", choices=("heldout", "train"), default="heldout", help="task split (default heldout)")
    ev.add_argument("--seed", type=int, default=0, help="task draw and sampling seed (default 0)")
    ev.add_argument("--split-seed", type=int, default=0, help="salt of the train/held-out partition (default 0)")
    ev.add_argument("--out", help="per-example JSONL output (default runs/out/eval-<strategy>.jsonl)")
    _add_backend_args(ev)

    rn = sub.add_parser("run", help="start an evolution run from a config file",
                        description="Evolve strategies as a TOML/YAML config describes; writes a run directory.")
    rn.add_argument("config", help="run config (.toml/.yaml), e.g. runs/quickstart.toml")
    rn.add_argument("--generations", type=int, help="override run.generations")
    rn.add_argument("--out-dir", help="override run.out_dir")
    rn.add_argument("--name", help="override run.name")
    rn.add_argument("--seed", type=int, help="override run.seed")
    rn.add_argument("--quiet", action="store_true", help="no progress display")
    rn.add_argument("--force", action="store_true", help="replace an existing run directory of the same name")

    rs = sub.add_parser("resume", help="continue a run directory from its last checkpoint",
                        description="Continue a run exactly where its last complete checkpoint left it.")
    rs.add_argument("run_dir", help="a run directory written by `evo run`")
    rs.add_argument("--generations", type=int, help="total generations to reach (default: the run's configured number)")
    rs.add_argument("--quiet", action="store_true", help="no progress display")
    rs.add_argument("--inject-adapter", action="append", default=[], metavar="PATH",
                    help="a PEFT adapter directory (e.g. from `evo distill --train`) to add to the population "
                         "as new individuals; repeatable")

    ex = sub.add_parser("export", help="write the best strategies (and adapters) of a run",
                        description="Export the best K strategies of a run: strategy JSON, prompt template, "
                                    "and for LoRA individuals a PEFT adapter directory with a model card.")
    ex.add_argument("run_dir", help="a run directory written by `evo run`")
    ex.add_argument("--top", type=int, default=3, help="how many (default 3)")
    ex.add_argument("--out", required=True, help="output directory")

    rp = sub.add_parser("report", help="plots and an HTML summary of a run")
    rp.add_argument("run_dir", help="a run directory written by `evo run`")
    rp.add_argument("--out", help="output directory (default RUN_DIR/report)")

    from evo.cli.distill import add_distill_parser

    add_distill_parser(sub)

    tn = sub.add_parser("tune", help="tune the loss weights α β γ δ with Optuna",
                        description="Optuna study over the loss weights: each trial runs a short evolution and is "
                                    "scored on the held-out set (hopeless trials are pruned). The same command again "
                                    "resumes the study; the best weights are written as a config fragment.")
    tn.add_argument("config", help="run config with an optional [tune] section, e.g. runs/tune.toml")
    tn.add_argument("--trials", type=int, required=True, help="trials to add to the study (0: only rewrite the results)")
    tn.add_argument("--storage", help="Optuna storage URL (default: [tune] storage, else sqlite:///TUNE_DIR/study.db)")
    tn.add_argument("--study-name", help="override [tune] study_name (also the results folder under run.out_dir)")
    tn.add_argument("--quiet", action="store_true", help="no progress display; print only the best weights line")

    ts = sub.add_parser("tasks", help="list reasoning-gym task families and their levels")
    ts.add_argument("filter", nargs="?", default="", help="only families whose name contains this")
    return parser


def _add_backend_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and backend")
    g.add_argument("--model", help="'default' (bundled SmolLM2-135M-Instruct) or a local HF model directory; "
                                   "overrides the strategy's decoding.model")
    g.add_argument("--cache-dir", help="where the converted default model is cached (default $EVO_CACHE_DIR or ~/.cache/evo)")
    g.add_argument("--device", default="cpu", help="torch device (default cpu)")
    g.add_argument("--token-budget", type=int, default=16_384, help="padded tokens per batch chunk (default 16384)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "eval":
            from evo.cli.eval import run_eval

            return run_eval(args)
        if args.command == "run":
            from evo.cli.run import run_command

            return run_command(args)
        if args.command == "resume":
            from evo.cli.run import resume_command

            return resume_command(args)
        if args.command == "export":
            from evo.rundir.export import export_top

            for path in export_top(args.run_dir, args.top, args.out):
                print(path)
            return 0
        if args.command == "report":
            from evo.report.html import write_report

            print(write_report(args.run_dir, args.out))
            return 0
        if args.command == "distill":
            from evo.cli.distill import distill_command

            return distill_command(args)
        if args.command == "tune":
            from evo.tune.study import tune_command

            return tune_command(args)
        if args.command == "tasks":
            from evo.cli.eval import list_tasks

            return list_tasks(args.filter)
    except InputError as e:
        print(f"evo: error: {e}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print("evo: interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
