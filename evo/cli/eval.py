"""`evo eval` and `evo tasks`: score one strategy on a task set; list task families.

Everything the user can get wrong (strategy file, task specs, model path, output
location) is checked before the model loads, so mistakes cost no waiting.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from fitness.backends.model_store import check_model
from fitness.evaluate import ExampleResult, FamilySummary, evaluate, summarise
from fitness.tasks import family_levels, load_tasks, parse_task_specs, reasoning_gym_families
from genomes.errors import InputError
from genomes.strategy import Strategy


def run_eval(args: argparse.Namespace) -> int:
    strategy = Strategy.load(args.strategy)
    specs = parse_task_specs(args.tasks)
    if not specs:
        raise InputError("--tasks is empty")
    model = args.model or strategy.decoding.model
    out = Path(args.out) if args.out else Path("runs/out") / f"eval-{strategy.name}.jsonl"
    _check_writable(out)
    check_model(model)
    tasks = load_tasks(specs, n=args.n, split=args.split, seed=args.seed, split_seed=args.split_seed)
    _say(f"strategy {strategy.name} ({strategy.content_hash()}), {len(tasks)} tasks, model {model}")

    started = time.perf_counter()
    from fitness.backends.hf import HFBackend

    backend = HFBackend(model=model, cache_dir=args.cache_dir, device=args.device, token_budget=args.token_budget)
    _say(f"model ready in {time.perf_counter() - started:.1f}s")
    results = _evaluate_with_progress(strategy, tasks, backend, args.seed)
    elapsed = time.perf_counter() - started

    _write_jsonl(out, results)
    print(format_table(summarise(results)))
    tokens = sum(r.completion_tokens for r in results)
    print(f"\n{len(results)} examples, {tokens} tokens generated in {elapsed:.1f}s; results: {out}")
    return 0


def _evaluate_with_progress(strategy: Strategy, tasks, backend, seed: int) -> list[ExampleResult]:
    from tqdm import tqdm

    total = len(tasks) * strategy.decoding.votes
    with tqdm(total=total, desc="generating", unit="req", file=sys.stderr, disable=None) as bar:
        return evaluate(strategy, tasks, backend, seed=seed, progress=bar.update)


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


def list_tasks(name_filter: str) -> int:
    families = [f for f in reasoning_gym_families() if name_filter in f]
    if not families:
        raise InputError(f"no task family matches {name_filter!r}")
    for family in families:
        print(f"{family:<32} levels 0..{family_levels(family) - 1}")
    return 0


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
