"""Benchmark: bfloat16 against float32 on the bundled model, speed and accuracy, paired.

    python runs/bench_dtype.py                   # 2 strategies x 6 families x 50 held-out tasks, ~20 min
    python runs/bench_dtype.py --n 10            # a quick look

Evaluates the same strategies on the same held-out tasks with the model in each
dtype, one after the other in one process, and prints per dtype: accuracy,
well-formed answers, generated tok/s and wall time; then the paired accuracy
difference (bfloat16 - float32) with a 95 % bootstrap interval over the task
pairs, and the share of identical completions. ``model.dtype = "auto"`` picks
bfloat16 on CPUs with AMX / AVX512-BF16; this is the evidence for that default.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from evo.report.stats import bootstrap_ci
from fitness.backends.hf import HFBackend
from fitness.evaluate import evaluate_many
from fitness.tasks import TaskSpec, load_tasks
from genomes.strategy import Strategy

FAMILIES = "chain_sum@1,basic_arithmetic,letter_counting,products@1,ransom_note,isomorphic_strings"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", default="fewshot,stepwise", help="seed names or files (default fewshot,stepwise)")
    parser.add_argument("--tasks", default=FAMILIES, help=f"task families (default {FAMILIES})")
    parser.add_argument("--n", type=int, default=50, help="held-out tasks per family (default 50)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    tasks = load_tasks([TaskSpec.parse(t) for t in args.tasks.split(",")], n=args.n, split="heldout", seed=args.seed)
    jobs = [(Strategy.load(s.strip()), tasks) for s in args.strategies.split(",") if s.strip()]
    results, report = {}, {"pairs": len(jobs) * len(tasks), "dtypes": {}}
    for dtype in ("float32", "bfloat16"):
        backend = HFBackend(dtype=dtype)
        print(f"{dtype}: {report['pairs']} requests ...", flush=True)
        started = time.perf_counter()
        flat = [r for per_job in evaluate_many(jobs, backend, seed=args.seed) for r in per_job]
        seconds = time.perf_counter() - started
        results[dtype] = flat
        tokens = sum(r.completion_tokens for r in flat)
        report["dtypes"][dtype] = {
            "accuracy": round(sum(r.correct for r in flat) / len(flat), 4),
            "well_formed": round(sum(r.answer is not None for r in flat) / len(flat), 4),
            "tok_per_s": round(tokens / seconds, 1), "seconds": round(seconds, 1), "tokens": tokens}
        del backend
    diffs = [float(b.correct) - float(a.correct) for a, b in zip(results["float32"], results["bfloat16"])]
    low, high = bootstrap_ci(diffs, random.Random(args.seed))
    report["accuracy_diff"] = {"mean": round(sum(diffs) / len(diffs), 4), "ci95": [round(low, 4), round(high, 4)]}
    same = sum(a.completion == b.completion for a, b in zip(results["float32"], results["bfloat16"]))
    report["identical_completions"] = f"{same}/{len(diffs)}"
    for dtype, m in report["dtypes"].items():
        print(f"{dtype:>9}: accuracy {100 * m['accuracy']:.1f} %, well-formed {100 * m['well_formed']:.1f} %, "
              f"{m['tok_per_s']} tok/s ({m['tokens']} tokens in {m['seconds']} s)")
    d = report["accuracy_diff"]
    speed = report["dtypes"]["bfloat16"]["tok_per_s"] / report["dtypes"]["float32"]["tok_per_s"]
    print(f"bfloat16 - float32: {100 * d['mean']:+.1f} points [{100 * low:+.1f}, {100 * high:+.1f}] over "
          f"{len(diffs)} paired tasks; {speed:.2f}x tok/s; identical completions {report['identical_completions']}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
