"""Keep base-model requests free of LoRA weights on vLLM's CPU build (a vLLM plugin).

The bug (vLLM 0.24.0's CPU build; its GPU kernels are not affected): the CPU LoRA
ops pick each token's adapter with ``weights[lora_index]``, and a token without an
adapter has index -1, which Python-style indexing turns into the *last* adapter
slot. Once ``max_loras`` distinct adapters have been loaded, every base-model
request in a batch that runs LoRA is answered with the last slot's adapter applied
(found by the vllm tests: a long-lived engine gave other greedy answers to base
requests than a fresh one).

The fix zeroes the shrink stage's output (x @ A) for tokens with index -1: the
expand stage then adds exactly zero to them, as the GPU kernels do by skipping them.

How it reaches vLLM: it is registered under vLLM's ``vllm.general_plugins`` entry
point (pyproject.toml), which vLLM calls in every process it starts, the engine's
workers included. :func:`install` patches only where vLLM runs on the CPU and the
shrink op still shows the bug, so a vLLM that fixes it is left alone.
"""

from __future__ import annotations

import functools


def masked_shrink(shrink):
    """``bgmv_shrink`` with the output rows of tokens without an adapter (index < 0)
    set to zero. Same signature: (inputs, weights, output, indices, scaling)."""

    @functools.wraps(shrink)
    def wrapper(inputs, lora_weights, output_tensor, lora_indices_tensor, scaling: float = 1.0):
        shrink(inputs, lora_weights, output_tensor, lora_indices_tensor, scaling)
        no_adapter = lora_indices_tensor < 0
        if bool(no_adapter.any()):
            output_tensor[no_adapter] = 0

    wrapper.evo_masked = True
    return wrapper


def shrink_leaks_into_base_rows(shrink) -> bool:
    """Whether ``shrink`` gives a token with index -1 a non-zero output (the bug)."""
    import torch

    weights = torch.ones(2, 1, 2, 3)  # two slots, rank 2, hidden 3
    out = torch.zeros(1, 2)
    shrink(torch.ones(1, 3), weights, out, torch.tensor([-1]), 1.0)
    return bool(out.abs().sum() > 0)


def install() -> None:
    """vLLM general-plugin entry: patch the CPU LoRA shrink op where it leaks."""
    try:
        from vllm.platforms import current_platform

        if not current_platform.is_cpu():
            return
        from vllm.lora.ops import torch_ops
        from vllm.lora.ops.torch_ops import lora_ops
    except ImportError:  # another vLLM layout: nothing known to patch
        return
    original = lora_ops.bgmv_shrink
    if getattr(original, "evo_masked", False) or not shrink_leaks_into_base_rows(original):
        return
    patched = masked_shrink(original)
    # sgmv_shrink (prefill) calls bgmv_shrink through lora_ops' globals; the CPU punica
    # wrapper (decode) holds its own reference, imported by name
    lora_ops.bgmv_shrink = patched
    torch_ops.bgmv_shrink = patched
    try:
        from vllm.lora.punica_wrapper import punica_cpu

        punica_cpu.bgmv_shrink = patched
    except ImportError:
        pass
