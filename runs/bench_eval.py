"""Benchmark: the same requests batched vs one at a time on the bundled model.

    python runs/bench_eval.py                 # 64 requests, the `fewshot` seed strategy
    python runs/bench_eval.py --requests 16   # quicker look
    python runs/bench_eval.py --constrain answer --no-single   # the cost of constrained decoding

Prints generated tokens/s for both modes, their ratio (target: >= 6x on 2 CPU
cores), and whether the greedy outputs of both modes are identical. The requests
are one strategy rendered on real reasoning-gym tasks, which is what a generation
of evolution sends: many tasks, few distinct prompts.

With ``--constrain MODE`` the same requests are also run batched under constrained
decoding (``decoding.constrain = MODE``, :mod:`fitness.constrain`), side by side:
tok/s of both and their ratio (the cost of computing the masks), and well-formed
answers and accuracy of both (what it buys).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from fitness.backends.hf import HFBackend
from fitness.evaluate import build_requests
from fitness.format import parse_completion
from fitness.verify import FULL_CREDIT, score_answer
from fitness.tasks import TaskSpec, load_tasks
from genomes.strategy import Strategy

FAMILIES = ("chain_sum@1", "basic_arithmetic@0", "letter_counting@0", "spell_backward@0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=64, help="number of requests (default 64)")
    parser.add_argument("--strategy", default="fewshot", help="strategy file or seed name (default fewshot)")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated task families")
    parser.add_argument("--model", default="default")
    parser.add_argument("--token-budget", type=int, default=None, help="default: the backend's own (auto)")
    parser.add_argument("--constrain", choices=("structure", "answer"), help="also run the requests constrained")
    parser.add_argument("--no-single", action="store_true", help="skip the one-at-a-time pass")
    args = parser.parse_args()

    import torch

    strategy = Strategy.load(args.strategy)
    families = [TaskSpec.parse(f) for f in args.families.split(",") if f.strip()]
    per_family = -(-args.requests // len(families))
    tasks = load_tasks(families, n=per_family, split="train", seed=0)[: args.requests]
    requests = [r for t in tasks for r in build_requests(strategy, t, seed=0)]
    backend = HFBackend(model=args.model, token_budget=args.token_budget)
    backend.generate(requests[:2])  # warm-up: first calls pay for lazy initialisation

    started = time.perf_counter()
    batched = backend.generate(requests)
    batched_s = time.perf_counter() - started

    batched_tokens = sum(c.completion_tokens for c in batched)
    result = {
        "requests": len(requests),
        "threads": torch.get_num_threads(),
        "batched_s": round(batched_s, 2),
        "batched_tokens": batched_tokens,
        "batched_tok_per_s": round(batched_tokens / batched_s, 1),
    }
    print(f"batched:       {result['batched_tok_per_s']:>7} tok/s  ({batched_tokens} tokens in {batched_s:.1f}s)")
    if not args.no_single:
        result.update(one_at_a_time(backend, requests, batched))
    if args.constrain:
        result.update(constrained(backend, strategy, tasks, batched, result["batched_tok_per_s"], args.constrain))
    print(json.dumps(result))


def one_at_a_time(backend, requests, batched) -> dict:
    started = time.perf_counter()
    single = [backend.generate([r])[0] for r in requests]
    single_s = time.perf_counter() - started
    single_tokens = sum(c.completion_tokens for c in single)
    same = sum(a.text == b.text for a, b in zip(batched, single))
    rate = single_tokens / single_s
    out = {"single_s": round(single_s, 2), "single_tokens": single_tokens, "single_tok_per_s": round(rate, 1),
           "identical_greedy_outputs": f"{same}/{len(requests)}"}
    print(f"one at a time: {out['single_tok_per_s']:>7} tok/s  ({single_tokens} tokens in {single_s:.1f}s); "
          f"identical outputs {out['identical_greedy_outputs']}")
    return out


def constrained(backend, strategy, tasks, free, free_rate: float, mode: str) -> dict:
    """The same tasks with ``decoding.constrain = mode``: speed, well-formed, accuracy."""
    strategy = dataclasses.replace(strategy, decoding=dataclasses.replace(strategy.decoding, constrain=mode))
    requests = [r for t in tasks for r in build_requests(strategy, t, seed=0)]
    started = time.perf_counter()
    completions = backend.generate(requests)
    seconds = time.perf_counter() - started
    tokens = sum(c.completion_tokens for c in completions)
    rate = tokens / seconds
    quality = {}
    for name, outs in (("free", free), (mode, completions)):
        parsed = [parse_completion(c.text) for c in outs]
        quality[name] = (sum(p.well_formed for p in parsed) / len(parsed),
                         sum(score_answer(p.answer, t) >= FULL_CREDIT for p, t in zip(parsed, tasks)) / len(parsed))
    out = {f"{mode}_tok_per_s": round(rate, 1), f"{mode}_vs_free_speed": round(rate / free_rate, 2),
           "free_well_formed": round(quality["free"][0], 3), f"{mode}_well_formed": round(quality[mode][0], 3),
           "free_accuracy": round(quality["free"][1], 3), f"{mode}_accuracy": round(quality[mode][1], 3)}
    print(f"constrained ({mode}): {out[f'{mode}_tok_per_s']:>7} tok/s = {out[f'{mode}_vs_free_speed']}x free decoding; "
          f"well-formed {quality['free'][0]:.0%} -> {quality[mode][0]:.0%}, accuracy {quality['free'][1]:.0%} -> "
          f"{quality[mode][1]:.0%} ({len(tasks)} tasks)")
    return out


if __name__ == "__main__":
    main()
