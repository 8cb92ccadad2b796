"""The lean Llama forward and pre-packed bf16 weights (fitness.backends.lean_llama, .packed).

They only run where the CPU multiplies bf16 natively (oneDNN's packed linear);
elsewhere these tests skip and the backend takes transformers' forward."""

from __future__ import annotations

import pytest
from conformance import QUESTIONS, make_request, two_prefix_requests

from fitness.backends.packed import packing_supported

needs_bf16 = pytest.mark.skipif(not packing_supported(), reason="CPU without native bf16 (no packed oneDNN linear)")


@pytest.fixture(scope="module")
def bf16_backends():
    """The bundled model in bf16 twice: the lean forward (decode steps attending as
    transformers' do, not with shared prefixes read once), and transformers' forward."""
    from fitness.backends.hf import HFBackend

    return HFBackend(dtype="bfloat16", shared_prefix_attention=False), HFBackend(dtype="bfloat16", lean_forward=False)


def _padded_prompts(pad_id: int):
    import torch

    ids = torch.randint(100, 10_000, (5, 40), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    ids[:2, :11], mask[:2, :11] = pad_id, 0  # two left-padded rows
    return ids, mask


def _logits_through_steps(forward, ids, mask, steps: int = 6):
    """Logits of a prefill and ``steps`` greedy decode steps with the decoder's growing cache."""
    import torch

    from fitness.backends import kv_rows

    cache, seen = kv_rows.growing_cache(), []
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        for _ in range(steps + 1):
            logits = forward(ids, mask, positions, cache)
            seen.append(logits)
            ids = logits.argmax(-1, keepdim=True)
            mask = torch.cat([mask, torch.ones((len(mask), 1), dtype=torch.long)], dim=1)
            positions = mask.sum(-1, keepdim=True) - 1
    return seen


def _assert_same_logits(lean_forward, transformers_forward, pad_id: int) -> None:
    import torch

    for padded in (False, True):  # no padding: transformers drops the mask; padding: it builds one
        ids, mask = _padded_prompts(pad_id)
        if not padded:
            mask = torch.ones_like(mask)
        got = _logits_through_steps(lean_forward, ids, mask)
        want = _logits_through_steps(transformers_forward, ids, mask)
        for a, b in zip(got, want, strict=True):
            # the lean forward's logits stay in the model's dtype (its float32 copy is exact)
            assert b.dtype == torch.float32 and torch.equal(a.float(), b), (padded, (a.float() - b).abs().max())


def test_lean_logits_equal_transformers_in_float32():
    """Bit for bit, on a (left-padded or not) prefill and greedy decode steps: the lean
    forward changes speed, not results. float32 runs the same code on any CPU. (A
    backend of its own: the shared one may hold a PEFT adapter by now.)"""
    from fitness.backends.hf import HFBackend
    from fitness.backends.lean_llama import LeanLlama

    backend = HFBackend(dtype="float32")
    lean = LeanLlama(backend.base_model)
    assert not lean.packed and backend._lean is None  # float32: the backend itself keeps transformers' forward
    _assert_same_logits(lean, lambda *a: backend._forward(*a, None), backend.pad_id)


@needs_bf16
def test_lean_logits_equal_transformers_in_bf16_with_packed_weights(bf16_backends):
    lean, plain = bf16_backends
    assert lean._lean is not None and lean._lean.packed and plain._lean is None
    _assert_same_logits(lean._lean, lambda *a: plain._forward(*a, None), lean.pad_id)


@needs_bf16
def test_a_ragged_prefill_takes_the_prefill_kernel_and_rounds_like_flash(bf16_backends, monkeypatch):
    """Asked for (the decoder does, with shared-prefix attention), a prefill of several
    rows attends by the C kernel in every layer; the logits stay within bf16 rounding of
    the flash path's and pick the same tokens. One row keeps SDPA (bit for bit as
    transformers: one request at a time is unchanged). A kernel that fails (no
    memory for its scratch) leaves the flash path's result."""
    import torch

    from fitness.backends import kv_rows, ragged_attention

    if ragged_attention.prefill_kernel() is None:
        pytest.skip("no prefill kernel (no C compiler or bf16 dot-product units)")
    lean = bf16_backends[0]._lean
    ids, mask = _padded_prompts(bf16_backends[0].pad_id)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    calls = []
    attend = ragged_attention.prefill_attend
    monkeypatch.setattr(ragged_attention, "prefill_attend", lambda *a: calls.append(a[0].shape) or attend(*a))
    with torch.inference_mode():
        flash = lean(ids, mask, positions, kv_rows.growing_cache()).float()
        assert not calls
        kernel = lean(ids, mask, positions, kv_rows.growing_cache(), None, True).float()
        assert len(calls) == len(lean.layers)
        lean(ids[:1], mask[:1], positions[:1], kv_rows.growing_cache(), None, True)
        assert len(calls) == len(lean.layers)  # one row: SDPA
    assert torch.equal(kernel.argmax(-1), flash.argmax(-1))
    assert (kernel - flash).abs().max() < 0.03 * flash.abs().max(), (kernel - flash).abs().max()
    monkeypatch.setattr(ragged_attention, "prefill_kernel", lambda: lambda *args: -1)  # no scratch memory
    with torch.inference_mode():
        assert torch.equal(lean(ids, mask, positions, kv_rows.growing_cache(), None, True).float(), flash)


@needs_bf16
def test_lean_backend_generates_what_transformers_forward_generates(bf16_backends):
    """Whole generations (continuous batching, shared prefixes, stops; batched and one
    at a time) equal the transformers-forward backend's. (Batched vs one at a time in
    bf16 is another matter: docs/backends.md, "Batch invariance".)"""
    lean, plain = bf16_backends
    requests = [make_request(q, max_new_tokens=24) for q in QUESTIONS]
    assert [c.text for c in lean.generate(requests)] == [c.text for c in plain.generate(requests)]
    assert [lean.generate([r])[0].text for r in requests[:2]] == [plain.generate([r])[0].text for r in requests[:2]]


@needs_bf16
def test_requests_with_adapters_take_the_lean_forward_and_base_requests_are_unchanged(lora_adapters):
    """After an adapter loads, its requests run on the lean forward with their LoRA
    deltas and give what PEFT (transformers' forward over the same packed weights)
    gives; requests on the base weights still run in a batch of their own, alone or
    beside adapter requests in one call, and give what they gave before."""
    import dataclasses

    from fitness.backends.hf import HFBackend

    # shared prefixes read once merge attention in another order than transformers'
    # forward: in bf16 a near-tie can flip a greedy token (it did on one CPU), which is
    # batch arithmetic, not the adapter; compare like with like
    backend = HFBackend(dtype="bfloat16", shared_prefix_attention=False)
    requests = [make_request(q, max_new_tokens=16) for q in QUESTIONS[:3]]
    before = [c.text for c in backend.generate(requests)]
    with_adapter = [dataclasses.replace(r, adapter=lora_adapters[0]) for r in requests]
    lean, served = backend._lean, []

    class Counted:  # the lean forward, noting each call's rows and whether they carried adapters
        def __call__(self, ids, *args, **kwargs):
            served.append((len(ids), kwargs.get("lora") is not None))
            return lean(ids, *args, **kwargs)

    backend._lean = Counted()
    adapted = [c.text for c in backend.generate(with_adapter)]
    assert backend.model is not backend.base_model  # PEFT loaded
    assert adapted != before and served and all(with_lora for _, with_lora in served)
    peft = HFBackend(dtype="bfloat16", lean_forward=False)
    assert [c.text for c in peft.generate(with_adapter)] == adapted
    served.clear()
    assert [c.text for c in backend.generate(requests)] == before
    assert served and not any(with_lora for _, with_lora in served)
    served.clear()
    mixed = [c.text for c in backend.generate([*requests, *with_adapter])]
    assert mixed[:3] == before and mixed[3:] == adapted
    assert max(rows for rows, with_lora in served if not with_lora) == len(requests)  # batches of their own
    assert max(rows for rows, with_lora in served if with_lora) == len(with_adapter)


def test_shared_prefix_attention_equals_attending_each_rows_copy():
    """Rows whose caches hold the same prefix (from different prefills, so at
    different columns) attend to one copy of it, merged with their own columns by
    log-sum-exp: the same output as attending to every row's whole cache (float32,
    to rounding). A finished row attends only to its new token."""
    import torch

    from fitness.backends.kv_rows import SharedPrefixes
    from fitness.backends.lean_llama import _attention_mask, _Cascade

    torch.manual_seed(0)
    rows, kv_heads, group, dim, width = 6, 3, 3, 16, 40
    keys, values = torch.randn(rows, kv_heads, width + 1, dim), torch.randn(rows, kv_heads, width + 1, dim)
    for row, column in ((2, 5), (3, 8)):  # row 1's prefix [5, 20) copied to rows 2 and 3
        keys[row, :, column:column + 15], values[row, :, column:column + 15] = keys[1, :, 5:20], values[1, :, 5:20]
    mask = torch.ones(rows, width + 1, dtype=torch.long)
    mask[0, :10] = mask[1:3, :5] = mask[1:3, 20:23] = mask[3, :8] = 0  # left padding, padding after a prefix
    q = torch.randn(rows, kv_heads * group, 1, dim)
    want = torch.nn.functional.scaled_dot_product_attention(
        q, keys.repeat_interleave(group, 1), values.repeat_interleave(group, 1), attn_mask=_attention_mask(mask, 1, q.dtype))
    shared = SharedPrefixes((((1, 2, 3), (5, 5, 8), 15),), own_start=(10, 20, 20, 23, 0, width))
    got = _Cascade.plan(shared, mask, q.dtype).attend(q, [(keys, values)], kv_heads)
    torch.testing.assert_close(got[:5], want[:5], atol=1e-5, rtol=1e-5)
    # the same rows as two parts of their own widths (rows 0-2: the last 36 columns; rows 3-5: all)
    parts = [(keys[:3, :, 5:], values[:3, :, 5:]), (keys[3:], values[3:])]
    in_parts = _Cascade.plan(shared, mask, q.dtype, [(0, 3, width - 4), (3, 6, width + 1)]).attend(q, parts, kv_heads)
    torch.testing.assert_close(in_parts, got, atol=1e-5, rtol=1e-5)
    alone = torch.nn.functional.scaled_dot_product_attention(q[5:], keys[5:, :, -1:].repeat_interleave(group, 1),
                                                             values[5:, :, -1:].repeat_interleave(group, 1))
    torch.testing.assert_close(got[5:], alone, atol=1e-5, rtol=1e-5)


def test_own_columns_are_attended_in_runs_of_rows_that_start_alike():
    """Rows joined at different times start their own columns far apart: a run per
    such part reads far fewer masked columns than one call over the widest."""
    from fitness.backends.lean_llama import _row_runs

    assert _row_runs([300, 300, 300, 300, 50, 50, 50], 500, overhead=512) == [(0, 4, 300), (4, 7, 50)]
    assert _row_runs([10, 12, 11], 500, overhead=512) == [(0, 3, 10)]  # another call would cost more than it saves
    assert _row_runs([40], 41, overhead=512) == [(0, 1, 40)]


def test_a_part_whose_rows_start_far_apart_is_attended_in_runs_and_equals_sdpa():
    """Within one part of a ``PartsCache`` (rows admitted together), rows whose own
    columns start far apart (a long and a short prompt) get runs of their own, and
    the result still equals attending to every row's whole cache."""
    import torch

    from fitness.backends.kv_rows import SharedPrefixes
    from fitness.backends.lean_llama import _attention_mask, _Cascade

    torch.manual_seed(1)
    rows, kv_heads, group, dim, width = 4, 1, 3, 8, 1500
    keys, values = torch.randn(rows, kv_heads, width + 1, dim), torch.randn(rows, kv_heads, width + 1, dim)
    mask = torch.ones(rows, width + 1, dtype=torch.long)
    mask[2:, :1400] = 0  # rows 2-3: short prompts, left-padded
    q = torch.randn(rows, kv_heads * group, 1, dim)
    want = torch.nn.functional.scaled_dot_product_attention(
        q, keys.repeat_interleave(group, 1), values.repeat_interleave(group, 1), attn_mask=_attention_mask(mask, 1, q.dtype))
    shared = SharedPrefixes((), own_start=(0, 0, 1400, 1400))
    plan = _Cascade.plan(shared, mask, q.dtype, [(0, 4, width + 1)])
    assert [(first, last) for first, last, *_ in plan.runs] == [(0, 2), (2, 4)]
    torch.testing.assert_close(plan.attend(q, [(keys, values)], kv_heads), want, atol=1e-5, rtol=1e-5)


def test_decoder_with_shared_prefix_attention_generates_the_same(hf_backend):
    """The decoder tells the forward which rows share a prompt prefix, through
    prefills, joins of admitted rows (as parts of a ``PartsCache``) and compactions
    (3 slots for 10 requests of two system prompts, different token limits): greedy
    outputs equal decoding without it (the lean forward in float32), and most decode
    steps did share."""
    from fitness.backends.hf_decode import ContinuousDecoder
    from fitness.backends.kv_rows import PartsCache
    from fitness.backends.lean_llama import LeanLlama

    lean = LeanLlama(hf_backend.base_model)
    requests = two_prefix_requests()
    shared_steps, in_parts = [], []

    def forward(ids, mask, positions, cache, names, shared=None, ragged_prefill=False):
        if shared is not None:
            shared_steps.append(sum(len(rows) for rows, _, _ in shared.groups))
            in_parts.append(isinstance(cache, PartsCache))
        return lean(ids, mask, positions, cache, shared, ragged_prefill)

    def decode(share: bool) -> list[list[int]]:
        queue = sorted((hf_backend._encode(i, r) for i, r in enumerate(requests)), key=lambda q: q.ids)
        out = [None] * len(requests)
        decoder = ContinuousDecoder(forward, hf_backend.pad_id, hf_backend.stop_ids, token_budget=100_000,
                                    max_batch=3, with_names=False, share_prefix_attention=share)
        decoder.run(queue, lambda item, ids, reason: out.__setitem__(item.index, list(ids)))
        return out

    assert decode(True) == decode(False)
    assert len(shared_steps) > 10 and sum(count >= 2 for count in shared_steps) > len(shared_steps) // 2
    assert sum(in_parts) > len(in_parts) // 2  # admitted rows joined as parts, not copied


def test_lean_forward_applies_only_to_llama_in_bf16_with_native_units(hf_backend, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from fitness.backends.lean_llama import lean_forward_for

    assert lean_forward_for(hf_backend.base_model) is None  # float32: measured no gain
    gemma = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16, local_files_only=True)
    assert lean_forward_for(gemma) is None  # another architecture: transformers' forward
    assert lean_forward_for(torch.nn.Linear(2, 2)) is None


@needs_bf16
def test_packed_linear_equals_linear_repacks_after_changes_and_trains():
    import torch

    from fitness.backends.packed import pack_linears

    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 96, bias=True, dtype=torch.bfloat16)
    plain = torch.nn.Linear(64, 96, bias=True, dtype=torch.bfloat16)
    plain.load_state_dict(layer.state_dict())
    assert pack_linears([layer, torch.nn.Linear(4, 4)]) == 1  # float32 layers are left alone
    assert isinstance(layer, torch.nn.Linear) and type(layer).__name__ == "PackedLinear"
    x = torch.randn(3, 7, 64, dtype=torch.bfloat16)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), plain(x), atol=0.05, rtol=0.02)
    with torch.no_grad():  # an in-place change must not leave a stale packed copy
        layer.weight.mul_(2)
        plain.weight.mul_(2)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), plain(x), atol=0.1, rtol=0.02)
    out = layer(x.requires_grad_())  # gradients take F.linear
    out.sum().backward()
    assert layer.weight.grad is not None and x.grad is not None


@needs_bf16
def test_lora_rows_on_the_lean_forward_equal_peft_bit_for_bit(lora_adapters):
    """Rows naming two adapters (one on q/v, one on o/down) and a base row in one padded
    batch, through a prefill and decode steps: the lean forward with per-row LoRA deltas
    gives PEFT's mixed-batch logits exactly; the base row gets none, the others change."""
    import torch

    from fitness.backends.hf import BASE_ADAPTER, HFBackend

    backend = HFBackend(dtype="bfloat16", shared_prefix_attention=False)
    names = backend._load_adapters(set(lora_adapters))
    first, second = (names[p] for p in lora_adapters)
    assert backend._lean_lora().serves(first) and backend._lean_lora().serves(second)
    rows = [first, BASE_ADAPTER, second, first, second]  # the five rows of _padded_prompts

    def lean(ids, mask, positions, cache):
        return backend._forward(ids, mask, positions, cache, rows, lora_on_lean=True)

    def peft(ids, mask, positions, cache):
        return backend._forward(ids, mask, positions, cache, rows)

    _assert_same_logits(lean, peft, backend.pad_id)
    ids, mask = _padded_prompts(backend.pad_id)
    adapted = _logits_through_steps(lean, ids, mask, steps=0)[0]
    base = _logits_through_steps(lambda *a: backend._forward(*a, None), ids, mask, steps=0)[0]
    assert torch.equal(adapted[1], base[1])
    assert all(not torch.equal(adapted[r], base[r]) for r in (0, 2, 3, 4))


def test_adapters_the_lean_forward_does_not_serve_are_left_to_peft():
    """A LoRA variant (DoRA here) or LoRA on modules outside the 7 projections: not served."""
    from types import SimpleNamespace

    from fitness.backends.lean_lora import LoraLayers

    plain = SimpleNamespace(lora_A={"a": 1, "dora": 1}, lora_variant={"dora": object()}, merged_adapters=[])
    head = SimpleNamespace(lora_A={"head": 1}, lora_variant={}, merged_adapters=[])
    layers = LoraLayers({(0, "q_proj"): plain}, [head])
    assert layers.serves("a") and not layers.serves("dora") and not layers.serves("head")
    merged = LoraLayers({(0, "q_proj"): SimpleNamespace(lora_A={"m": 1}, lora_variant={}, merged_adapters=["m"])}, [])
    assert not merged.serves("m")
    biased = SimpleNamespace(lora_A={"b": 1}, lora_B={"b": SimpleNamespace(bias=object())}, lora_variant={},
                             merged_adapters=[])
    assert not LoraLayers({(0, "q_proj"): biased}, []).serves("b")  # lora_bias: not in the grouped sums
    with pytest.raises(ValueError, match="dora"):  # an adapter it does not serve is refused
        layers.rows(["a", "dora"], "__base__")


@needs_bf16
def test_grouped_lora_rows_equal_peft_up_to_rounding(lora_adapters):
    """Grouped deltas (every adapter of a projection in two matmuls, used beside
    shared-prefix attention): PEFT's logits up to bf16 rounding, the same greedy
    tokens, and exactly the base logits on a row without an adapter."""
    import torch

    from fitness.backends.hf import BASE_ADAPTER, HFBackend
    from fitness.backends.lean_lora import GroupedLoraRows

    backend = HFBackend(dtype="bfloat16", shared_prefix_attention=False)
    names = backend._load_adapters(set(lora_adapters))
    rows = [names[lora_adapters[0]], BASE_ADAPTER, names[lora_adapters[1]], names[lora_adapters[0]],
            names[lora_adapters[1]]]
    assert isinstance(backend._lean_lora().rows(rows, BASE_ADAPTER, grouped=True), GroupedLoraRows)

    def grouped(ids, mask, positions, cache):
        return backend._lean(ids, mask, positions, cache, lora=backend._lean_lora().rows(rows, BASE_ADAPTER, True))

    ids, mask = _padded_prompts(backend.pad_id)
    got = _logits_through_steps(grouped, ids, mask, steps=3)
    want = _logits_through_steps(lambda *a: backend._forward(*a, rows), ids, mask, steps=3)
    base = _logits_through_steps(lambda *a: backend._forward(*a, None), ids, mask, steps=0)[0]
    assert torch.equal(got[0][1], base[1])
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a.float().argmax(-1), b.argmax(-1))
        # a few bf16 steps at logits of ~30 (a step is 0.25 there); measured 0 to 0.25
        assert (a.float() - b).abs().max() <= 1.0, (a.float() - b).abs().max()
