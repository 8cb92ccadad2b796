"""`evo eval STRATEGY --tasks ...`: score one strategy (or a routes file: a strategy
per task family, as `evo export` writes it) on a task set.

Everything the user can get wrong (strategy file, task specs, model path, output
location) is checked before the model loads, so mistakes cost no waiting.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from fitness.backends.model_store import DTYPES, check_model
from fitness.evaluate import ExampleResult, FamilySummary, evaluate_answerer, summarise
from fitness.tasks import SPLITS, TEST, load_tasks, parse_task_specs
from genomes.errors import InputError
from genomes.routes import Routes, load_answerer, route_jobs
from genomes.strategy import Strategy


def add_parser(sub) -> None:
    ev = sub.add_parser("eval", help="score one strategy file on a task set",
                        description="Score one strategy (prompt + chain template + decoding) on tasks.")
    ev.add_argument("strategy", help="strategy file (.json/.toml/.yaml), a shipped seed name (direct, stepwise, "
                                     "fewshot), or a routes.json from `evo export` (a strategy per family)")
    ev.add_argument("--tasks", required=True,
                    help="comma-separated: reasoning-gym family, family@LEVEL, or a .jsonl file (e.g. chain_sum@1,letter_counting)")
    ev.add_argument("--n", type=int, default=16, help="tasks per entry of --tasks (default 16)")
    ev.add_argument("--split", choices=SPLITS, default=TEST,
                    help="task split: test (reported only; the default), validation (what a run's choices read), "
                         "train, or heldout (validation and test)")
    ev.add_argument("--seed", type=int, default=0, help="task draw and sampling seed (default 0)")
    ev.add_argument("--split-seed", type=int, default=0, help="salt of the train/validation/test partition (default 0, as in a run config)")
    ev.add_argument("--out", help="per-example JSONL output (default runs/out/eval-<strategy>.jsonl)")
    g = ev.add_argument_group("model and backend")
    g.add_argument("--model", help="'default' (bundled SmolLM2-135M-Instruct) or a local HF model directory; "
                                   "overrides the strategy's decoding.model")
    g.add_argument("--cache-dir", help="where the converted default model is cached (default $EVO_CACHE_DIR or ~/.cache/evo)")
    g.add_argument("--device", default="cpu", help="torch device (default cpu)")
    g.add_argument("--dtype", choices=DTYPES, default="auto",
                   help="weights and activations (default auto: bfloat16 where the device multiplies it natively)")
    g.add_argument("--token-budget", type=int, default=None,
                   help="padded tokens in the running batch (default: auto, 32768 on the lean bf16 forward, else 16384)")


def command(args: argparse.Namespace) -> int:
    answerer = load_answerer(args.strategy)
    strategy = answerer.default if isinstance(answerer, Routes) else answerer
    specs = parse_task_specs(args.tasks)
    if not specs:
        raise InputError("--tasks is empty")
    model = args.model or strategy.decoding.model
    out = Path(args.out) if args.out else Path("runs/out") / f"eval-{strategy.name}.jsonl"
    _check_writable(out)
    check_model(model)
    tasks = load_tasks(specs, n=args.n, split=args.split, seed=args.seed, split_seed=args.split_seed)
    _say(f"strategy {strategy.name} ({strategy.content_hash()}), {len(tasks)} {args.split} tasks, model {model}")
    if isinstance(answerer, Routes):
        for family, routed in sorted(answerer.routes.items()):
            _say(f"  {family}: routed to {routed.name} ({routed.content_hash()})")

    started = time.perf_counter()
    from fitness.backends.hf import HFBackend

    backend = HFBackend(model=model, cache_dir=args.cache_dir, device=args.device, dtype=args.dtype,
                        token_budget=args.token_budget)
    _say(f"model ready in {time.perf_counter() - started:.1f}s")
    results = _evaluate_with_progress(answerer, tasks, backend, args.seed)
    elapsed = time.perf_counter() - started

    _write_jsonl(out, results)
    print(format_table(summarise(results)))
    tokens = sum(r.completion_tokens for r in results)
    print(f"\n{len(results)} examples, {tokens} tokens generated in {elapsed:.1f}s; results: {out}")
    return 0


def _evaluate_with_progress(answerer: Strategy | Routes, tasks, backend, seed: int) -> list[ExampleResult]:
    from evo.engine.progress import RequestProgress

    total = sum(len(group) * s.decoding.votes for s, group in route_jobs(answerer, tasks)[0])
    with RequestProgress("generating", total) as bar:
        return evaluate_answerer(answerer, tasks, backend, seed=seed, progress=bar.update)


def _check_writable(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output directory {out.parent}: {e.strerror}") from None
    if out.is_dir():
        raise InputError(f"--out is a directory: {out}")


def _write_jsonl(out: Path, results: list[ExampleResult]) -> None:
    tmp = out.with_suffix(out.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
    tmp.replace(out)


def format_table(rows: list[FamilySummary]) -> str:
    header = f"{'family':<24} {'n':>4} {'accuracy':>8} {'steps':>6} {'chain tok':>9} {'gen tok':>8} {'answered':>8}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.family:<24} {r.n:>4} {r.accuracy:>8.1%} {r.mean_steps:>6.2f} {r.mean_chain_tokens:>9.1f} "
            f"{r.mean_completion_tokens:>8.1f} {r.well_formed:>8.1%}"
        )
    return "\n".join(lines)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
