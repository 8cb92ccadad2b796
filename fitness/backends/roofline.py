"""How fast generation could be on this machine: a roofline for one model forward.

A forward of ``rows`` sequences, each adding ``new`` tokens on top of ``context``
cached ones, needs at least

- compute: ``2 x matmul_params`` FLOPs per token (every weight matrix, the output
  projection included) plus ``4 x layers x heads x head_dim x context`` FLOPs per
  token of attention, at the machine's measured matmul peak;
- memory: every weight read once, plus every row's KV cache read once, at the
  machine's measured read bandwidth.

The bound is the larger of the two (``forward_seconds``). Decoding one token per row
at small batch sizes is memory bound (the weights are re-read for a handful of
tokens); prefill is compute bound. ``runs/bench_roofline.py`` prints the machine, the
model and measured forwards against this bound; ``runs/bench_workload.py`` sums it
over every forward of a real workload to say what share of the machine we use.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Machine:
    dtype: str
    matmul_flops: float  # FLOP/s of a large square matmul in ``dtype``
    read_bytes: float  # bytes/s of streaming a large tensor from memory


@dataclass(frozen=True)
class ModelShape:
    params: int  # every parameter, read once per forward
    matmul_params: int  # parameters multiplied per token (embedding lookup excluded, tied output head included)
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    bytes_per_value: int

    @classmethod
    def of(cls, model) -> ModelShape:
        """The shape of a loaded transformers causal LM, in the dtype it is loaded in."""
        config = model.config
        params = sum(p.numel() for p in model.parameters())
        embedding = model.get_input_embeddings().weight.numel()
        tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(params=params, matmul_params=params if tied else params - embedding,
                   layers=config.num_hidden_layers, heads=heads,
                   kv_heads=getattr(config, "num_key_value_heads", heads), head_dim=head_dim,
                   bytes_per_value=next(model.parameters()).element_size())

    def kv_bytes_per_token(self) -> int:
        return self.layers * 2 * self.kv_heads * self.head_dim * self.bytes_per_value

    def flops(self, rows: int, new: int, context: float) -> float:
        """FLOPs of one forward: ``rows`` rows of ``new`` tokens over ``context`` cached ones."""
        attention = 4 * self.layers * self.heads * self.head_dim * (context + (new + 1) / 2)
        return rows * new * (2 * self.matmul_params + attention)

    def bytes(self, rows: int, new: int, context: float) -> float:
        return self.params * self.bytes_per_value + rows * (context + new) * self.kv_bytes_per_token()


def forward_seconds(shape: ModelShape, machine: Machine, rows: int, new: int, context: float) -> float:
    """The roofline's lower bound on one forward's time."""
    return max(shape.flops(rows, new, context) / machine.matmul_flops, shape.bytes(rows, new, context) / machine.read_bytes)


def measure_machine(dtype: str, size: int = 2048, repeats: int = 5) -> Machine:
    """Measure the matmul peak in ``dtype`` and the memory read bandwidth (best of ``repeats``)."""
    import torch

    kind = getattr(torch, dtype)
    a, b = torch.randn(size, size, dtype=kind), torch.randn(size, size, dtype=kind)
    big = torch.ones(64 * 1024 * 1024, dtype=torch.float32)  # 256 MB: far beyond any cache
    a @ b, big.sum()  # warm-up
    return Machine(dtype, 2 * size**3 / _best(lambda: a @ b, repeats), big.numel() * 4 / _best(big.sum, repeats))


def best_machine(*machines: Machine) -> Machine:
    """The fastest of several measurements of one machine (each figure its best): on a
    shared machine one measurement can land in a busy moment, and a roofline is a
    ceiling, so the best seen is the honest one (a low ceiling inflates every share)."""
    return Machine(machines[0].dtype, max(m.matmul_flops for m in machines), max(m.read_bytes for m in machines))


def _best(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)
