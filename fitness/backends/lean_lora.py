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
a ``lora_B`` bias (``lora_bias``), merged weights, or LoRA modules anywhere else
(embeddings, ``lm_head``) is left to PEFT.
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
        self._stacks: dict[tuple[str, ...], dict] = {}  # see stacked()

    def serves(self, name: str) -> bool:
        """True when adapter ``name`` is plain LoRA on the projections only (cached per name)."""
        if name not in self._served:
            self._served[name] = not any(name in m.lora_A for m in self.elsewhere) and all(
                _plain(module, name) for module in self.modules.values() if name in module.lora_A)
        return self._served[name]

    def rows(self, adapter_names: list[str], base_name: str, grouped: bool = False) -> LoraRows:
        """The per-row work of one forward: each served adapter's rows (``base_name`` rows
        get none). ``grouped``: several adapters' deltas in two matmuls a projection
        (:class:`GroupedLoraRows`; rounding differs from PEFT's, as summation order does)."""
        import torch

        rows: dict[str, list[int]] = {}
        for row, name in enumerate(adapter_names):
            if name != base_name:
                rows.setdefault(name, []).append(row)
        for name in rows:
            if not self.serves(name):
                raise ValueError(f"adapter {name} is not served by the lean forward (LoRA variant or other modules)")
        indexed = [(name, torch.tensor(r, dtype=torch.long)) for name, r in rows.items()]
        if grouped and len(indexed) > 1:
            return GroupedLoraRows(self, indexed, len(adapter_names))
        return LoraRows(self.modules, indexed)

    def stacked(self, names: tuple[str, ...], layer: int, projection: str):
        """``(A, B, blocks)`` of the adapters ``names`` that have a LoRA module at this
        projection: their ``lora_A`` weights stacked ``[sum of ranks, in]``, ``lora_B``
        side by side ``[out, sum of ranks]``, ``blocks`` = (name, first, end, scaling) of
        each one's ranks. None where none has one; "mixed" where their dtypes differ.
        Kept for the last few sets of names (a running batch's set changes slowly)."""
        import torch

        cache = self._stacks.setdefault(names, {})
        if len(self._stacks) > STACK_SETS:
            self._stacks.pop(next(iter(self._stacks)))
        key = (layer, projection)
        if key not in cache:
            module = self.modules.get(key)
            present = [n for n in names if module is not None and n in module.lora_A]
            weights_a = [module.lora_A[n].weight for n in present]
            if not present:
                cache[key] = None
            elif len({w.dtype for w in weights_a}) > 1:
                cache[key] = "mixed"
            else:
                blocks, first = [], 0
                for name, weight in zip(present, weights_a):
                    blocks.append((name, first, first + weight.shape[0], float(module.scaling[name])))
                    first += weight.shape[0]
                weights_b = torch.cat([module.lora_B[n].weight for n in present], dim=1)
                cache[key] = (torch.cat(weights_a).detach(), weights_b.detach(), tuple(blocks))
        return cache[key]


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


class GroupedLoraRows(LoraRows):
    """Several adapters' deltas in one pass a projection: ``h = x @ A.T`` over every
    present adapter's ranks at once, each row's ``h`` kept on its own adapter's ranks
    (times its scaling, zero elsewhere), then ``h @ B.T``. Two small matmuls instead of
    ~8 ops per adapter: with 16 adapters in a batch the per-adapter loop cost about as
    much as the base model. The zeros add nothing, but summation order and where the
    scaling is applied differ from PEFT's: the same function, rounded differently
    (used where the batch already rounds differently: shared-prefix attention)."""

    def __init__(self, layers: LoraLayers, rows: list, batch_rows: int) -> None:
        super().__init__(layers.modules, rows)
        self.layers, self.batch_rows = layers, batch_rows
        self.names = tuple(sorted(name for name, _ in rows))
        self._row_weights: dict[tuple, object] = {}

    def add(self, out, x, layer: int, projection: str):
        stack = self.layers.stacked(self.names, layer, projection)
        if stack is None:
            return out
        if isinstance(stack, str):  # "mixed" dtypes: one adapter at a time
            return super().add(out, x, layer, projection)
        import torch

        weight_a, weight_b, blocks = stack
        hidden = torch.nn.functional.linear(x.to(weight_a.dtype), weight_a) * self._weights(blocks, weight_a)
        out += torch.nn.functional.linear(hidden, weight_b).to(out.dtype)
        return out

    def _weights(self, blocks: tuple, like):
        """``[rows, 1, ranks]``: each row's scaling on its adapter's ranks, zero elsewhere (base rows: all zero)."""
        if blocks not in self._row_weights:
            import torch

            weights = torch.zeros((self.batch_rows, 1, blocks[-1][2]), dtype=like.dtype, device=like.device)
            index = dict(self.rows)
            for name, first, end, scaling in blocks:
                weights[index[name].to(like.device), :, first:end] = scaling
            self._row_weights[blocks] = weights
        return self._row_weights[blocks]


STACK_SETS = 2  # sets of adapter names whose stacked weights are kept (LoraLayers.stacked): the running batch's, the last one


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
    """Vanilla LoRA for ``name`` on this module: no variant, no ``lora_B`` bias, not merged into the base weight."""
    variants = getattr(module, "lora_variant", {}) or {}
    merged = getattr(module, "merged_adapters", []) or []
    lora_b = getattr(module, "lora_B", {})
    biased = name in lora_b and getattr(lora_b[name], "bias", None) is not None  # lora_bias=True
    return name not in variants and name not in merged and not biased
