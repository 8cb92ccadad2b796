"""LoRA adapters on the lean forward: per-row low-rank deltas on top of the packed base matmuls.

Why: a batch whose rows name PEFT adapters used to leave the lean forward for
transformers' forward under PEFT, which measured 6.6x slower per token than a
base-weight batch (``runs/bench_lora.py``): none of the packed-weight, shared-prefix
or attention kernels, and every module's hooks. In an evolution with LoRA genes, or
in ``evo improve``'s adapter evaluations, most batches are adapter batches.

The arithmetic is PEFT's mixed-batch forward (``LoraLayer._mixed_batch_forward``,
used whenever ``adapter_names`` is passed), op for op: the base projection, then for
each adapter its rows' input cast to the adapter's dtype, ``lora_B(lora_A(dropout(x))) *
scaling`` through the adapter's own modules, cast back and added to those rows. So
a row's logits equal the PEFT path's bit for bit where the lean forward's equal
transformers' (one request, or several without shared-prefix attention).

:func:`lora_layers` finds the LoRA modules on the model's 7 projections per layer and
says which adapters it can serve: an adapter with a LoRA variant (DoRA, aLoRA, ...),
merged weights, or LoRA modules anywhere else (embeddings, ``lm_head``) is left to PEFT.
"""

from __future__ import annotations

# the lean forward's projections, where a Llama decoder layer keeps them
PROJECTIONS = (("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj"), ("self_attn", "o_proj"),
               ("mlp", "gate_proj"), ("mlp", "up_proj"), ("mlp", "down_proj"))


class LoraLayers:
    """The LoRA modules of a PEFT-wrapped Llama: ``modules[(layer, projection)]``, and
    which adapter names the lean forward serves (:meth:`serves`)."""

    def __init__(self, modules: dict, elsewhere: list) -> None:
        self.modules = modules  # (layer index, projection name) -> PEFT LoraLayer
        self.elsewhere = elsewhere  # LoRA modules on anything else
        self._served: dict[str, bool] = {}

    def serves(self, name: str) -> bool:
        """True when adapter ``name`` is plain LoRA on the projections only (cached per name)."""
        if name not in self._served:
            self._served[name] = not any(name in m.lora_A for m in self.elsewhere) and all(
                _plain(module, name) for module in self.modules.values() if name in module.lora_A)
        return self._served[name]

    def rows(self, adapter_names: list[str], base_name: str) -> LoraRows:
        """The per-row work of one forward: each served adapter's rows (``base_name`` rows get none)."""
        import torch

        rows: dict[str, list[int]] = {}
        for row, name in enumerate(adapter_names):
            if name != base_name:
                rows.setdefault(name, []).append(row)
        for name in rows:
            if not self.serves(name):
                raise ValueError(f"adapter {name} is not served by the lean forward (LoRA variant or other modules)")
        return LoraRows(self.modules, [(name, torch.tensor(r, dtype=torch.long)) for name, r in rows.items()])


class LoraRows:
    """One forward's adapters and their rows; :meth:`add` applies them to a projection's output."""

    def __init__(self, modules: dict, rows: list) -> None:
        self.modules, self.rows = modules, rows

    def add(self, out, x, layer: int, projection: str):
        """``out`` (the base projection of ``x``, ``[rows, new, features]``) with every
        adapter's delta added to its rows, as PEFT's mixed-batch forward does."""
        module = self.modules.get((layer, projection)) if self.rows else None
        if module is None:
            return out
        for name, index in self.rows:
            if name not in module.lora_A:
                continue
            lora_a = module.lora_A[name]
            sub_batch = x[index].to(lora_a.weight.dtype)
            delta = module.lora_B[name](lora_a(module.lora_dropout[name](sub_batch))) * module.scaling[name]
            out[index] += delta.to(out.dtype)
        return out


def lora_layers(model, num_layers: int) -> LoraLayers:
    """The LoRA modules of ``model`` (a Llama whose layers PEFT has wrapped in place)."""
    from peft.tuners.lora import LoraLayer

    inner = model.model
    placed = {}
    for index, layer in enumerate(inner.layers[:num_layers]):
        for block, projection in PROJECTIONS:
            module = getattr(getattr(layer, block), projection)
            if isinstance(module, LoraLayer):
                placed[(index, projection)] = module
    known = {id(m) for m in placed.values()}
    elsewhere = [m for m in model.modules() if isinstance(m, LoraLayer) and id(m) not in known]
    return LoraLayers(placed, elsewhere)


def _plain(module, name: str) -> bool:
    """Vanilla LoRA for ``name`` on this module: no variant, not merged into the base weight."""
    variants = getattr(module, "lora_variant", {}) or {}
    merged = getattr(module, "merged_adapters", []) or []
    return name not in variants and name not in merged
