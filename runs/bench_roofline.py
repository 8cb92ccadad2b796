"""Benchmark: this machine's roofline for the bundled model, and measured forwards against it.

    python runs/bench_roofline.py                     # float32 and bfloat16, ~3 min on 2 cores
    python runs/bench_roofline.py --dtypes bfloat16 --context 600

Measures the matmul peak (a 2048x2048 matmul, per dtype) and the memory read
bandwidth, computes the model's FLOPs and bytes per token (fitness.backends.roofline),
then times one prefill and decode steps at the batch sizes the backend runs
(``--batches``), each over ``--context`` cached tokens per row, and prints achieved
tok/s against the roofline's bound and which side (compute or memory) bounds it:
for transformers' forward on the plain model, and for ours (``HFBackend._forward``
as the decoder calls it: packed weights, the lean forward, one ragged attention call
a layer where they apply; rows share no prefix here).
"""

from __future__ import annotations

import argparse
import json
import time

from fitness.backends.model_store import resolve_model
from fitness.backends.roofline import ModelShape, forward_seconds, measure_machine


def time_forwards(model, rows: int, context: int, steps: int) -> tuple[float, float]:
    """Seconds of one prefill of ``rows x context`` tokens and of one decode step after it."""
    import torch
    from transformers import DynamicCache

    with torch.inference_mode():
        ids = torch.randint(100, 10_000, (rows, context))
        cache = DynamicCache()
        started = time.perf_counter()
        model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        prefill = time.perf_counter() - started
        step = ids[:, -1:]
        model(input_ids=step, cache=cache, use_cache=True, logits_to_keep=1)  # warm-up
        started = time.perf_counter()
        for _ in range(steps):
            model(input_ids=step, cache=cache, use_cache=True, logits_to_keep=1)
        return prefill, (time.perf_counter() - started) / steps


def time_our_forwards(backend, rows: int, context: int, steps: int) -> tuple[float, float]:
    """As :func:`time_forwards`, through the hf backend's forward and the decoder's growing cache."""
    import torch

    from fitness.backends import kv_rows

    with torch.inference_mode():
        ids = torch.randint(100, 10_000, (rows, context))
        mask = torch.ones_like(ids)
        cache = kv_rows.growing_cache()
        started = time.perf_counter()
        backend._forward(ids, mask, torch.arange(context).expand(rows, context), cache, None)
        prefill = time.perf_counter() - started
        extra = {"shared": kv_rows.SharedPrefixes((), (0,) * rows)} if backend.shared_prefix_attention else {}
        times = []
        for step in range(steps + 1):  # the first is a warm-up
            mask = torch.ones((rows, context + step + 1), dtype=torch.long)
            started = time.perf_counter()
            backend._forward(ids[:, -1:], mask, torch.full((rows, 1), context + step), cache, None, **extra)
            times.append(time.perf_counter() - started)
        return prefill, sum(times[1:]) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--batches", default="1,8,16,32,64", help="rows per forward (default 1,8,16,32,64)")
    parser.add_argument("--context", type=int, default=300, help="cached tokens per row (default 300)")
    parser.add_argument("--steps", type=int, default=8, help="decode steps timed per batch size (default 8)")
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM

    from fitness.backends.hf import HFBackend

    path = resolve_model("default")
    report: dict = {"threads": torch.get_num_threads(), "context": args.context, "dtypes": {}}
    for dtype in [d.strip() for d in args.dtypes.split(",") if d.strip()]:
        machine = measure_machine(dtype)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), local_files_only=True).eval()
        shape = ModelShape.of(model)
        print(f"\n{dtype}: matmul peak {machine.matmul_flops / 1e9:.0f} GFLOP/s, read bandwidth "
              f"{machine.read_bytes / 1e9:.1f} GB/s; model {shape.params / 1e6:.1f} M parameters = "
              f"{shape.params * shape.bytes_per_value / 1e6:.0f} MB, {2 * shape.matmul_params / 1e6:.0f} MFLOP/token "
              f"+ attention, KV {shape.kv_bytes_per_token() / 1e3:.1f} kB/token")
        print(f"{'rows':>5} {'prefill tok/s':>14} {'roofline':>9} {'%':>5} {'decode tok/s':>13} {'roofline':>9} {'%':>5}"
              f"  bound   {'ours prefill':>12} {'%':>5} {'ours decode':>11} {'%':>5}")
        ours = HFBackend(dtype=dtype)
        rows_out = []
        for rows in (int(b) for b in args.batches.split(",")):
            prefill_s, step_s = time_forwards(model, rows, args.context, args.steps)
            pre_bound = forward_seconds(shape, machine, rows, args.context, 0)
            dec_bound = forward_seconds(shape, machine, rows, 1, args.context)
            memory_bound = shape.bytes(rows, 1, args.context) / machine.read_bytes >= dec_bound
            row = {"rows": rows, "prefill_tok_per_s": rows * args.context / prefill_s,
                   "prefill_roofline": rows * args.context / pre_bound, "decode_tok_per_s": rows / step_s,
                   "decode_roofline": rows / dec_bound, "decode_bound": "memory" if memory_bound else "compute"}
            our_prefill_s, our_step_s = time_our_forwards(ours, rows, args.context, args.steps)
            row.update(ours_prefill_tok_per_s=rows * args.context / our_prefill_s, ours_decode_tok_per_s=rows / our_step_s)
            rows_out.append({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()})
            print(f"{rows:>5} {row['prefill_tok_per_s']:>14.0f} {row['prefill_roofline']:>9.0f} "
                  f"{100 * pre_bound / prefill_s:>5.1f} {row['decode_tok_per_s']:>13.1f} {row['decode_roofline']:>9.0f} "
                  f"{100 * dec_bound / step_s:>5.1f}  {row['decode_bound']:<7} "
                  f"{row['ours_prefill_tok_per_s']:>12.0f} {100 * pre_bound / our_prefill_s:>5.1f} "
                  f"{row['ours_decode_tok_per_s']:>11.1f} {100 * dec_bound / our_step_s:>5.1f}", flush=True)
        report["dtypes"][dtype] = {"matmul_gflops": round(machine.matmul_flops / 1e9), "read_gb_per_s":
                                   round(machine.read_bytes / 1e9, 1), "rows": rows_out}
        del model, ours
    print(json.dumps(report))


if __name__ == "__main__":
    main()
