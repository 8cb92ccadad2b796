"""Benchmark: LoRA genes on the bundled model.

    python runs/bench_lora.py                  # 16 genes x 4 tasks, then 64 genes for memory
    python runs/bench_lora.py --genes 8 --per-gene 4 --memory-genes 32
    python runs/bench_lora.py --dtype float32   # auto (the default) is bf16 where the CPU has bf16 units

Prints, for the same requests (each gene's strategy on its tasks, greedy):
- tokens/s with all adapters mixed in one batched call, with one call per adapter,
  and one request at a time, and whether the outputs agree; and of the same prompts
  on the base weights (no adapter: what the per-row LoRA deltas cost on the lean
  forward, :mod:`fitness.backends.lean_lora`);
- genome bytes (the JSON of a rank-8 seed-chain gene) vs materialised adapter bytes;
- peak RSS after serving ``--memory-genes`` distinct rank-8 adapters in one call.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import resource
import tempfile
import time
from pathlib import Path

from fitness.backends.hf import HFBackend
from fitness.evaluate import adapter_of, build_requests
from fitness.tasks import TaskSpec, load_tasks
from genomes.lora import LoraGene, mut_lora_perturb
from genomes.strategy import Strategy


def genes(n: int, seed: int) -> list[LoraGene]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        gene = LoraGene(enabled=True, rank=8, init_seed=rng.randrange(2**32))
        out.append(mut_lora_perturb(mut_lora_perturb(gene, rng, sigmas=(0.01,)), rng, sigmas=(0.01,)))
    return out


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--genes", type=int, default=16)
    parser.add_argument("--per-gene", type=int, default=4)
    parser.add_argument("--memory-genes", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--dtype", default="auto", help="auto (as runs: bf16 where the CPU has bf16 units), float32, bfloat16")
    args = parser.parse_args()
    from fitness.backends.model_store import resolve_dtype

    store = Path(tempfile.mkdtemp(prefix="bench-lora-"))
    dtype = resolve_dtype(args.dtype, "cpu")
    backend = HFBackend(adapter_store=store, max_loaded_adapters=max(64, args.memory_genes), dtype=dtype)
    base = Strategy.load("fewshot")
    base = Strategy(base.name, base.prompt, base.chain,
                    type(base.decoding)(max_new_tokens=args.max_new_tokens))
    tasks = load_tasks([TaskSpec.parse("chain_sum@0")], n=args.per_gene, split="train", seed=0)
    strategies = [Strategy(f"g{i}", base.prompt, base.chain, base.decoding, g) for i, g in enumerate(genes(args.genes, 0))]
    groups = [[r for t in tasks for r in build_requests(s, t, 0, adapter_of(s, backend))] for s in strategies]
    requests = [r for g in groups for r in g]
    backend.generate([g[0] for g in groups])  # warm-up: every adapter loaded before timing

    mixed, mixed_s = timed(lambda: backend.generate(requests))
    per_adapter, per_adapter_s = timed(lambda: [c for g in groups for c in backend.generate(g)])
    single, single_s = timed(lambda: [backend.generate([r])[0] for r in requests])
    bare, bare_s = timed(lambda: backend.generate([dataclasses.replace(r, adapter=None) for r in requests]))
    bare_tokens = sum(c.completion_tokens for c in bare)
    tokens = sum(c.completion_tokens for c in mixed)
    agree = sum(a.text == b.text == c.text for a, b, c in zip(mixed, per_adapter, single))

    gene_bytes = len(json.dumps(strategies[0].lora.encode(), separators=(",", ":")))
    adapter_dir = Path(adapter_of(strategies[0], backend))
    adapter_bytes = sum(f.stat().st_size for f in adapter_dir.iterdir())

    memory = [Strategy(f"m{i}", base.prompt, base.chain, base.decoding, g) for i, g in enumerate(genes(args.memory_genes, 1))]
    memory_requests = [build_requests(s, tasks[0], 0, adapter_of(s, backend))[0] for s in memory]
    _, memory_s = timed(lambda: backend.generate(memory_requests))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"{len(requests)} requests, {args.genes} adapters x {args.per_gene} tasks, {tokens} tokens (greedy, {dtype})")
    print(f"mixed batch:      {tokens / mixed_s:7.1f} tok/s  ({mixed_s:.1f}s)")
    print(f"batch per adapter:{tokens / per_adapter_s:7.1f} tok/s  ({per_adapter_s:.1f}s)")
    print(f"one at a time:    {tokens / single_s:7.1f} tok/s  ({single_s:.1f}s)")
    print(f"identical outputs in all three modes: {agree}/{len(requests)}")
    print(f"base weights:     {bare_tokens / bare_s:7.1f} tok/s  ({bare_s:.1f}s, {bare_tokens} tokens; the same prompts "
          f"without adapters: mixed adapters run {bare_tokens / bare_s / (tokens / mixed_s):.1f}x slower)")
    print(f"genome: {gene_bytes} bytes; materialised adapter: {adapter_bytes / 1024:.0f} KiB "
          f"({adapter_bytes / gene_bytes:,.0f}x)")
    print(f"{args.memory_genes} distinct rank-8 adapters served in one call in {memory_s:.1f}s; "
          f"peak RSS of the process {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
