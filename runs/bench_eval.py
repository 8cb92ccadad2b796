"""Benchmark: the same requests batched vs one at a time on the bundled model.

    python runs/bench_eval.py                 # 64 requests, the `fewshot` seed strategy
    python runs/bench_eval.py --requests 16   # quicker look

Prints generated tokens/s for both modes, their ratio (target: >= 6x on 2 CPU
cores), and whether the greedy outputs of both modes are identical. The requests
are one strategy rendered on real reasoning-gym tasks, which is what a generation
of evolution sends: many tasks, few distinct prompts.
"""

from __future__ import annotations

import argparse
import json
import time

from fitness.backends.hf import HFBackend
from fitness.evaluate import build_requests
from fitness.tasks import TaskSpec, load_tasks
from genomes.strategy import Strategy

FAMILIES = ("chain_sum@1", "basic_arithmetic@0", "letter_counting@0", "spell_backward@0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=64, help="number of requests (default 64)")
    parser.add_argument("--strategy", default="fewshot", help="strategy file or seed name (default fewshot)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--token-budget", type=int, default=16_384)
    args = parser.parse_args()

    import torch

    strategy = Strategy.load(args.strategy)
    per_family = -(-args.requests // len(FAMILIES))
    tasks = load_tasks([TaskSpec.parse(f) for f in FAMILIES], n=per_family, split="train", seed=0)[: args.requests]
    requests = [r for t in tasks for r in build_requests(strategy, t, seed=0)]
    backend = HFBackend(model=args.model, token_budget=args.token_budget)
    backend.generate(requests[:2])  # warm-up: first calls pay for lazy initialisation

    started = time.perf_counter()
    batched = backend.generate(requests)
    batched_s = time.perf_counter() - started

    started = time.perf_counter()
    single = [backend.generate([r])[0] for r in requests]
    single_s = time.perf_counter() - started

    batched_tokens = sum(c.completion_tokens for c in batched)
    single_tokens = sum(c.completion_tokens for c in single)
    same = sum(a.text == b.text for a, b in zip(batched, single))
    result = {
        "requests": len(requests),
        "threads": torch.get_num_threads(),
        "batched_s": round(batched_s, 2),
        "batched_tokens": batched_tokens,
        "batched_tok_per_s": round(batched_tokens / batched_s, 1),
        "single_s": round(single_s, 2),
        "single_tokens": single_tokens,
        "single_tok_per_s": round(single_tokens / single_s, 1),
        "speedup": round((batched_tokens / batched_s) / (single_tokens / single_s), 2),
        "identical_greedy_outputs": f"{same}/{len(requests)}",
    }
    print(f"batched:       {result['batched_tok_per_s']:>7} tok/s  ({batched_tokens} tokens in {batched_s:.1f}s)")
    print(f"one at a time: {result['single_tok_per_s']:>7} tok/s  ({single_tokens} tokens in {single_s:.1f}s)")
    print(f"speedup:       {result['speedup']:>7}x  (target >= 6x); identical outputs {result['identical_greedy_outputs']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
