"""A lean inference forward for Llama-architecture models (the bundled SmolLM2 is one).

Why: a CPU decode step of a 135M model is a few dozen rows times every weight, and
transformers' general forward spends a large share of it around the matmuls:
attention-mask construction, keyword plumbing and hooks on every module, GQA
dispatch per layer. This forward computes the same function with the fewest ops:

- the projections multiply by oneDNN-packed bf16 weights where the CPU has bf16 units
  (:mod:`fitness.backends.packed`);
- one additive attention mask per call, built from the decoder's padding mask;
- attention by ``scaled_dot_product_attention`` over the decoder's in-place KV cache
  (:mod:`fitness.backends.kv_rows`), without repeating keys per query head;
- in decode steps, a prefix that several rows share (one strategy's system prompt and
  exemplars, :class:`fitness.backends.kv_rows.SharedPrefixes`) is attended once for all of them: their queries
  become one query block over one copy of the prefix keys, the rest of each row's
  cache is attended as before, and the two halves are merged by their log-sum-exp.
  A decode step on a CPU is bound by reading the cache, and on a few-shot workload
  most of every row's cache is that prefix. This changes rounding (not the function),
  so it is used only when the decoder asks for it;
- where the decoder asks for it and the C kernel of
  :mod:`fitness.backends.ragged_attention` builds (a C compiler; bf16 or float32),
  a decode step's attention is one kernel call a layer instead: every row reads its
  own columns where they lie and its group's prefix from one copy, one softmax over
  both. torch's flash kernel needs a dense block per call, so the path above makes
  several calls a layer (runs of rows, parts, one per prefix), and those calls were
  about half of a decode step; :class:`_Cascade` remains the fallback;
- likewise a prefill of several (left-padded) rows, where the decoder asks for it,
  attends by that module's prefill kernel (register-tiled bf16 dot products, ~5x
  torch's flash kernel at these shapes; the same rounding steps as flash).

Projections stay separate: fusing q/k/v and gate/up measured 2-4 % faster per decode
step but changes oneDNN's rounding at some row counts; separate, the logits equal
transformers' bit for bit (tests/fitness/backends/test_lean_llama.py, float32 and
bf16), so the lean forward changes speed and nothing else.

:func:`lean_forward_for` gives one only where it pays and is exact in kind: bf16
weights on a CPU with bf16 units (in float32 the forward measured 1.03x, not worth a
second code path), a ``LlamaForCausalLM`` with the standard layout (no biases, SiLU
MLP, full attention on every layer, one tensor-parallel slice). Batches with PEFT
adapters add their LoRA deltas per row (:mod:`fitness.backends.lean_lora`, PEFT's
arithmetic); adapters it does not serve take transformers' forward, which PEFT wraps.
The model's own rotary module computes cos/sin, so every RoPE scaling variant behaves
as in transformers; norms run in float32 as ``LlamaRMSNorm`` does.
"""

from __future__ import annotations

from fitness.backends import ragged_attention
from fitness.backends.kv_rows import PartsCache
from fitness.backends.packed import pack_linears, pack_weight, packable, packed_matmul


def lean_forward_for(model):
    """A :class:`LeanLlama` over ``model``'s weights, or None where it does not apply (see module docstring)."""
    config = getattr(model, "config", None)
    if type(model).__name__ != "LlamaForCausalLM" or config is None or not packable(model.lm_head.weight):
        return None
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return None
    if getattr(config, "hidden_act", "silu") != "silu" or getattr(config, "pretraining_tp", 1) != 1:
        return None
    if any(kind != "full_attention" for kind in (getattr(config, "layer_types", None) or [])):
        return None
    return LeanLlama(model)


class LeanLlama:
    """``__call__(ids, mask, positions, cache) -> logits [rows, vocab]`` (CPU, in the
    model's dtype) of each row's last position, the contract of ``HFBackend._forward``
    without adapters.

    ``mask``: long ``[rows, cached + new]``, 1 on real tokens; ``positions``: long
    ``[rows, new]``; ``cache``: a transformers ``Cache`` (the decoder's growing cache),
    updated in place. bf16 weights are packed copies made once here when the CPU can
    (the model's own parameters stay as they are, for PEFT and adapter building);
    otherwise the model's weights are used as they are, through ``F.linear``."""

    def __init__(self, model) -> None:
        import torch

        self.torch = torch
        config = model.config
        inner = model.model
        self.embed = inner.embed_tokens
        self.rotary = inner.rotary_emb
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.eps = config.rms_norm_eps
        self.final_norm = inner.norm.weight
        self.packed = packable(model.lm_head.weight)
        self.layers = [self._weights(layer) for layer in inner.layers[: config.num_hidden_layers]]
        self.head = model.lm_head
        if self.packed:
            pack_linears([self.head])  # packed in place: the PEFT path uses the same head

    def _weights(self, layer) -> dict:
        attention, mlp = layer.self_attn, layer.mlp
        prepare = pack_weight if self.packed else (lambda weight: weight.detach())
        return {
            "norm_in": layer.input_layernorm.weight,
            "qkv": [prepare(attention.q_proj.weight), prepare(attention.k_proj.weight), prepare(attention.v_proj.weight)],
            "o": prepare(attention.o_proj.weight),
            "norm_post": layer.post_attention_layernorm.weight,
            "gate_up": [prepare(mlp.gate_proj.weight), prepare(mlp.up_proj.weight)],
            "down": prepare(mlp.down_proj.weight),
        }

    def _matmul(self, x, weight):
        return packed_matmul(x, weight) if self.packed else self.torch.nn.functional.linear(x, weight)

    def _project(self, x, weight, lora, layer: int, projection: str):
        """A projection of layer ``layer``: the base weight, plus its adapters' deltas where ``lora`` has any."""
        out = self._matmul(x, weight)
        return out if lora is None else lora.add(out, x, layer, projection)

    def __call__(self, ids, mask, positions, cache, shared=None, ragged_prefill: bool = False, lora=None):
        """``shared``: a :class:`fitness.backends.kv_rows.SharedPrefixes`, used by decode
        steps (one new token; a ``PartsCache`` comes only with decode steps and ``shared``).
        ``ragged_prefill``: a prefill of several rows attends by the C kernel of
        :func:`fitness.backends.ragged_attention.prefill_attend` where it serves (rounding
        as torch's flash kernel, not bit for bit; one row keeps SDPA, as transformers).
        ``lora``: a :class:`fitness.backends.lean_lora.LoraRows`, PEFT adapters' deltas
        added to their rows' projections as PEFT adds them."""
        torch = self.torch
        functional = torch.nn.functional
        device = self.final_norm.device
        ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
        rows, new = ids.shape
        hidden = self.embed(ids)
        cos, sin = self.rotary(hidden, position_ids=positions)
        cos, sin = cos.unsqueeze(1), _signed_sin(sin.unsqueeze(1))
        allowed = _attention_mask(mask, new, hidden.dtype)
        parts = list(cache.ranges()) if isinstance(cache, PartsCache) else None
        # a decode step: the decoder joins rows into parts only when it shares prefixes
        extents = [(first, last, part.layers[0].keys.shape[-2] + new) for first, last, part in parts] if parts else None
        if shared is not None and new == 1 and ragged_attention.usable(hidden):
            cascade = ragged_attention.RaggedPlan.plan(shared, mask, extents)  # one call a layer
        elif parts is not None:
            cascade = _Cascade.plan(shared, mask, hidden.dtype, extents)
        else:
            cascade = _Cascade.plan(shared, mask, hidden.dtype) if shared and new == 1 else None
        prefill = ragged_prefill and new > 1 and rows > 1 and parts is None
        for index, layer in enumerate(self.layers):
            x = self._norm(hidden, layer["norm_in"])
            q, k, v = (self._project(x, w, lora, index, name) for w, name in zip(layer["qkv"], _QKV))
            q = _rotate(q.view(rows, new, self.heads, self.head_dim).transpose(1, 2), cos, sin)
            k = _rotate(k.view(rows, new, self.kv_heads, self.head_dim).transpose(1, 2), cos, sin)
            v = v.view(rows, new, self.kv_heads, self.head_dim).transpose(1, 2)
            if parts is not None:
                sources = [part.update(k[first:last], v[first:last], index) for first, last, part in parts]
                attended = cascade.attend(q, sources, self.kv_heads)
            else:
                keys, values = cache.update(k, v, index)
                if prefill and ragged_attention.prefill_usable(q, keys, values):
                    attended = self._attend_prefill(q, keys, values, mask, allowed)
                elif cascade:
                    attended = cascade.attend(q, [(keys, values)], self.kv_heads)
                else:
                    attended = self._attend(q, keys, values, allowed)
            hidden = hidden + self._project(attended.transpose(1, 2).reshape(rows, new, -1), layer["o"], lora, index,
                                            "o_proj")
            x = self._norm(hidden, layer["norm_post"])
            gate, up = (self._project(x, w, lora, index, name) for w, name in zip(layer["gate_up"], _GATE_UP))
            hidden = hidden + self._project(functional.silu(gate) * up, layer["down"], lora, index, "down_proj")
        last = self._norm(hidden[:, -1:, :], self.final_norm)
        # in the model's dtype: a float32 copy of every row's 49,152 logits cost a tenth
        # of a decode step, and the decoder's argmax is the same on either
        return self.head(last)[:, -1, :].cpu()

    def _attend_prefill(self, q, keys, values, mask, allowed):
        """The prefill kernel; where it fails (no scratch memory), torch's attention as without it."""
        try:
            return ragged_attention.prefill_attend(q, keys, values, mask)
        except RuntimeError:
            return self._attend(q, keys, values, allowed)

    def _attend(self, q, keys, values, allowed):
        """Attention over the cache without repeating keys per query head, dispatched
        as transformers' SDPA path does (same kernel, same rounding): no mask needed
        (``allowed`` None) -> SDPA's GQA, causal when several tokens are new; one new
        token under a mask -> the query heads of a key head become its queries."""
        attention = self.torch.nn.functional.scaled_dot_product_attention
        rows, heads, new, dim = q.shape
        gqa = heads != self.kv_heads
        if allowed is None:
            return attention(q, keys, values, is_causal=new > 1, enable_gqa=gqa)
        if gqa and new == 1:
            grouped = attention(q.reshape(rows, self.kv_heads, heads // self.kv_heads, dim), keys, values,
                                attn_mask=allowed)
            return grouped.reshape(rows, heads, 1, dim)
        return attention(q, keys, values, attn_mask=allowed, enable_gqa=gqa)

    def _norm(self, x, weight):
        """``LlamaRMSNorm``: the mean square in float32, the result cast back, then scaled."""
        torch = self.torch
        x32 = x.to(torch.float32)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * x32.to(x.dtype)


_QKV, _GATE_UP = ("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj")  # PEFT's names of those projections

# one more attention call over a run of rows costs about as much as reading this many
# (row, column) pairs of the cache: ~50 us against ~80 ns a column at this CPU's bandwidth
RUN_OVERHEAD_COLUMNS = 512


class _Cascade:
    """Decode-step attention with shared prefixes read once (see the module docstring).

    Each row attends to (a) its own columns, from its ``own_start`` on (columns
    before it are its padding or its shared prefix), and (b) if it has a shared
    prefix, that prefix, computed for all rows that share it at once from one row's
    copy. Softmax over the union equals the two partial softmaxes weighted by their
    log-sum-exp. (a) runs over contiguous runs of rows: the parts of a
    :class:`fitness.backends.kv_rows.PartsCache`, or on one cache the runs
    :func:`_row_runs` picks, so that no row reads another's far longer history as
    masked columns.

    ``sources``: the caches' (keys, values) after the step's update, one per part
    (one in all for a single cache); runs and spans name theirs by index."""

    def __init__(self, spans, runs, span_rows) -> None:
        # spans: (rows, source, its row there, first column, end column); span_rows: every span's rows, in span order
        self.spans, self.runs, self.span_rows = spans, runs, span_rows

    @classmethod
    def plan(cls, shared, mask, dtype, parts=None):
        """From a :class:`fitness.backends.kv_rows.SharedPrefixes`, the step's mask
        (its last column the new token) and, for a ``PartsCache``, each part's
        ``(first row, last row + 1, width after the step)``. Without parts, None when
        no row has a shared prefix (the plain attention serves)."""
        import torch

        width = mask.shape[1]
        if parts is None:  # one cache: every run reads it, at the mask's own columns
            if not shared.groups:
                return None
            layout = [(first, last, 0, first, 0) for first, last, _ in _row_runs(shared.own_start, width)]
        else:  # (first, last, source, its first row in the source, the source's first column in the mask)
            layout = []
            for source, (first, last, part_width) in enumerate(parts):
                offset = width - part_width  # within a part too, runs keep short rows off long histories
                own = [max(start, offset) for start in shared.own_start[first:last]]
                layout += [(first + a, first + b, source, a, offset) for a, b, _ in _row_runs(own, width)]
        runs, home = [], {}
        for first, last, source, local_first, offset in layout:
            own = torch.tensor(shared.own_start[first:last], dtype=torch.long)
            start = int(own.min())  # in the mask's columns
            columns = torch.arange(start, width, device=mask.device)
            visible = mask[first:last, start:].bool() & (columns.view(1, -1) >= own.view(-1, 1))
            additive = torch.zeros((last - first, 1, 1, visible.shape[1]), dtype=dtype)
            additive.masked_fill_(~visible.view(last - first, 1, 1, -1), float("-inf"))
            runs.append((first, last, source, local_first, start - offset, additive))
            home.update({row: (source, row - first + local_first, offset) for row in range(first, last)})
        spans, span_rows = [], []
        for rows, starts, length in shared.groups:
            source, local, offset = home[rows[0]]  # the first row's copy serves them all
            spans.append((len(rows), source, local, starts[0] - offset, starts[0] - offset + length))
            span_rows += rows
        return cls(spans, runs, torch.tensor(span_rows, dtype=torch.long))

    def attend(self, q, sources, kv_heads: int):
        """``sources``: (keys, values) of each source the plan names, after the step's update.

        Every span's queries are gathered by one index and merged with the own
        columns' result in one set of ops for all spans (per span, only its flash call):
        on a CPU each small op costs microseconds, a step runs ~30 layers x a few spans."""
        import torch

        flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        rows, heads, _, dim = q.shape
        group = heads // kv_heads
        grouped = q.reshape(rows, kv_heads, group, dim)  # a key head's query heads become its queries
        outs, lses = [], []
        for first, last, source, local, start, additive in self.runs:
            keys, values = sources[source]
            count = last - first
            out, lse = flash(grouped[first:last], keys[local:local + count, :, start:],
                             values[local:local + count, :, start:], 0.0, False, attn_mask=additive)
            outs.append(out)
            lses.append(lse)
        out = torch.cat(outs) if len(outs) > 1 else outs[0]
        if self.spans:
            index = self.span_rows
            queries = grouped[index]
            shared_outs, shared_lses, offset = [], [], 0
            for count, source, local, start, end in self.spans:
                keys, values = sources[source]
                block = queries[offset:offset + count].transpose(0, 1).reshape(1, kv_heads, count * group, dim)
                shared_out, shared_lse = flash(block, keys[local:local + 1, :, start:end],
                                               values[local:local + 1, :, start:end], 0.0, False)
                shared_outs.append(shared_out.view(kv_heads, count, group, dim))
                shared_lses.append(shared_lse.view(kv_heads, count, group, 1))
                offset += count
            shared_out = (torch.cat(shared_outs, dim=1) if len(shared_outs) > 1 else shared_outs[0]).transpose(0, 1)
            shared_lse = (torch.cat(shared_lses, dim=1) if len(shared_lses) > 1 else shared_lses[0]).transpose(0, 1)
            own_lse = (torch.cat(lses) if len(lses) > 1 else lses[0])[index].unsqueeze(-1)
            top = torch.maximum(own_lse, shared_lse)
            own_weight, shared_weight = (own_lse - top).exp(), (shared_lse - top).exp()
            merged = (out[index].float() * own_weight + shared_out.float() * shared_weight) / (own_weight + shared_weight)
            out[index] = merged.to(out.dtype)
        return out.reshape(rows, heads, 1, dim)


def _row_runs(own_start, width: int, overhead: int = RUN_OVERHEAD_COLUMNS) -> list[tuple[int, int, int]]:
    """Contiguous runs of rows ``(first, last, start column)`` for the own-column
    attention: each run reads columns from its rows' smallest ``own_start`` to
    ``width``. Minimises the columns read plus ``overhead`` per run (dynamic
    programming; a batch has at most a few dozen rows)."""
    n = len(own_start)
    best, cut = [0] + [float("inf")] * n, [0] * (n + 1)
    for last in range(1, n + 1):
        lowest = width
        for first in range(last - 1, -1, -1):
            lowest = min(lowest, own_start[first])
            cost = best[first] + (last - first) * (width - lowest) + overhead
            if cost < best[last]:
                best[last], cut[last] = cost, first
    runs, last = [], n
    while last > 0:
        first = cut[last]
        runs.append((first, last, min(own_start[first:last])))
        last = first
    return runs[::-1]


def _signed_sin(sin):
    """``sin`` with its first half negated, once per forward, for :func:`_rotate`."""
    import torch

    half = sin.shape[-1] // 2
    return torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)


def _rotate(x, cos, signed_sin):
    """RoPE as transformers' ``apply_rotary_pos_emb``, x*cos + rotate_half(x)*sin, in
    fewer ops: rotate_half(x) = (-x2, x1) is ``x`` rolled by half with the sign moved
    onto sin (``signed_sin`` = (-sin1, sin2)); a negation is exact, so is the product."""
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * signed_sin


def _attention_mask(mask, new: int, dtype):
    """None where no row has padding and causality needs no mask (one new token, or
    nothing cached yet); otherwise additive ``[rows, 1, new, width]`` (0 or -inf, in
    ``dtype``): query i of a row sees the row's real keys up to its own position. A
    query on padding also sees itself, so that no softmax row is empty (its output is
    never read, but a NaN there would reach the cache)."""
    import torch

    width = mask.shape[1]
    past = width - new
    if (new == 1 or past == 0) and bool(mask.all()):
        return None
    query = torch.arange(new, device=mask.device).view(new, 1) + past
    key = torch.arange(width, device=mask.device).view(1, width)
    causal = key <= query
    allowed = (mask.bool().view(-1, 1, 1, width) & causal) | (key == query)
    # additive, as SDPA turns a boolean mask into one in every layer otherwise
    return torch.zeros(allowed.shape, dtype=dtype, device=mask.device).masked_fill_(~allowed, float("-inf"))
