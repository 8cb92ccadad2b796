"""The ragged decode-attention kernel (fitness.backends.ragged_attention): one call a
layer over rows in parts, shared prefixes read from one copy, padding skipped; and
the fallback to torch's attention where it cannot be built."""

from __future__ import annotations

import pytest

from fitness.backends import ragged_attention

needs_kernel = pytest.mark.skipif(ragged_attention.kernel() is None, reason="no C compiler: the kernel is not built")


def _caches(dtype):
    """Six rows over one cache of 41 columns: left padding, row 1's prefix [5, 20)
    copied to rows 2 and 3 at other columns, padding after a prefix, a finished row
    (attends only to the step's token); the reference attends to every row's whole
    cache with transformers' mask."""
    import torch

    from fitness.backends.kv_rows import SharedPrefixes
    from fitness.backends.lean_llama import _attention_mask

    torch.manual_seed(0)
    rows, kv_heads, group, dim, width = 6, 3, 3, 64, 40
    keys, values = torch.randn(rows, kv_heads, width + 1, dim), torch.randn(rows, kv_heads, width + 1, dim)
    for row, column in ((2, 5), (3, 8)):
        keys[row, :, column:column + 15], values[row, :, column:column + 15] = keys[1, :, 5:20], values[1, :, 5:20]
    mask = torch.ones(rows, width + 1, dtype=torch.long)
    mask[0, :10] = mask[1:3, :5] = mask[1:3, 20:23] = mask[3, :8] = 0
    q = torch.randn(rows, kv_heads * group, 1, dim)
    keys, values, q = keys.to(dtype), values.to(dtype), q.to(dtype)
    want = torch.nn.functional.scaled_dot_product_attention(
        q.float(), keys.float().repeat_interleave(group, 1), values.float().repeat_interleave(group, 1),
        attn_mask=_attention_mask(mask, 1, torch.float32))
    want[5:] = torch.nn.functional.scaled_dot_product_attention(  # the finished row: its new token only
        q[5:].float(), keys[5:, :, -1:].float().repeat_interleave(group, 1),
        values[5:, :, -1:].float().repeat_interleave(group, 1))
    shared = SharedPrefixes((((1, 2, 3), (5, 5, 8), 15),), own_start=(10, 20, 20, 23, 0, width))
    return q, keys, values, mask, shared, want


@needs_kernel
@pytest.mark.parametrize("dtype_name, tolerance", [("float32", 1e-5), ("bfloat16", 2e-2)])
def test_one_call_equals_attending_every_rows_whole_cache(dtype_name, tolerance):
    """In one cache and in two parts of their own widths, the kernel's output equals
    softmax attention over each row's whole cache (to float32 rounding; bf16 rounds the
    output once); the prefix is read from row 1's copy, so rows 2-3 may hold garbage there."""
    import torch

    dtype = getattr(torch, dtype_name)
    q, keys, values, mask, shared, want = _caches(dtype)
    width = mask.shape[1] - 1
    got = ragged_attention.RaggedPlan.plan(shared, mask).attend(q, [(keys, values)], 3)
    assert got.dtype == dtype and got.shape == q.shape
    torch.testing.assert_close(got.float(), want, atol=tolerance, rtol=tolerance)
    keys[2:4, :, 5:23] = values[2:4, :, 5:23] = 1e4  # their own copies are not read
    parts = [(keys[:3, :, 5:], values[:3, :, 5:]), (keys[3:], values[3:])]
    in_parts = ragged_attention.RaggedPlan.plan(shared, mask, [(0, 3, width - 4), (3, 6, width + 1)]).attend(
        q, parts, 3)
    torch.testing.assert_close(in_parts.float(), want, atol=tolerance, rtol=tolerance)


@needs_kernel
def test_the_kernel_reads_cache_views_with_spare_room_as_they_lie():
    """The decoder's caches are views of bigger buffers (spare columns, cut-off left
    columns): the kernel follows their strides instead of copying them."""
    import torch

    from fitness.backends.kv_rows import SharedPrefixes

    q, keys, values, mask, _, _ = _caches(torch.bfloat16)
    rows, heads, width, dim = keys.shape
    buffer_k = torch.full((rows, heads, width + 30, dim), float("nan"), dtype=keys.dtype)
    buffer_v = buffer_k.clone()
    buffer_k[:, :, 7:7 + width], buffer_v[:, :, 7:7 + width] = keys, values
    view_k, view_v = buffer_k[:, :, 7:7 + width], buffer_v[:, :, 7:7 + width]
    assert not view_k.is_contiguous() and ragged_attention.compatible(q.reshape(rows, 3, 3, dim), [(view_k, view_v)])
    shared = SharedPrefixes((), own_start=(10, 5, 5, 8, 0, 0))
    plan = ragged_attention.RaggedPlan.plan(shared, mask)
    got = plan.attend(q, [(view_k, view_v)], 3)
    torch.testing.assert_close(got, plan.attend(q, [(keys.contiguous(), values.contiguous())], 3), atol=0, rtol=0)
    assert not got.isnan().any()


def test_without_a_compiler_the_kernel_is_none_and_says_why(monkeypatch, capsys, tmp_path):
    """No compiler: one line on stderr, and the lean forward keeps torch's attention."""
    import torch

    monkeypatch.setattr(ragged_attention.shutil, "which", lambda name: None)
    monkeypatch.setenv("EVO_CACHE_DIR", str(tmp_path))
    ragged_attention.reset()
    try:
        assert ragged_attention.kernel() is None and ragged_attention.prefill_kernel() is None
        assert not ragged_attention.usable(torch.zeros(1, dtype=torch.bfloat16))
        assert "ragged attention kernels unavailable (no C compiler found)" in capsys.readouterr().err
    finally:
        ragged_attention.reset()


def test_a_source_that_does_not_compile_falls_back(monkeypatch, capsys, tmp_path):
    broken = tmp_path / "broken.c"
    broken.write_text("this is not C\n")
    monkeypatch.setattr(ragged_attention, "SOURCE", broken)
    monkeypatch.setenv("EVO_CACHE_DIR", str(tmp_path))
    ragged_attention.reset()
    try:
        if not any(ragged_attention.shutil.which(c) for c in ("cc", "gcc", "clang")):
            pytest.skip("no C compiler")
        assert ragged_attention.kernel() is None
        assert "failed" in capsys.readouterr().err
        assert not list((tmp_path / "kernels").glob("*.so"))  # nothing half-built left behind
        assert ragged_attention.prefill_kernel() is None
    finally:
        ragged_attention.reset()


def test_turned_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("EVO_RAGGED_ATTENTION", "0")
    ragged_attention.reset()
    try:
        assert ragged_attention.kernel() is None and ragged_attention.prefill_kernel() is None
    finally:
        ragged_attention.reset()


@needs_kernel
def test_the_prefill_kernel_alone_is_turned_off_by_its_variable(monkeypatch):
    monkeypatch.setenv("EVO_RAGGED_PREFILL", "off")
    ragged_attention.reset()
    try:
        assert ragged_attention.kernel() is not None and ragged_attention.prefill_kernel() is None
    finally:
        ragged_attention.reset()


@needs_kernel
@pytest.mark.slow
def test_decoding_with_the_kernel_equals_torchs_attention_in_float32(hf_backend, monkeypatch):
    """The bundled model, shared prefixes and parts (3 slots, 10 requests of two system
    prompts): greedy outputs with the kernel equal those of the flash-attention path."""
    from conformance import two_prefix_requests

    from fitness.backends.hf_decode import ContinuousDecoder
    from fitness.backends.lean_llama import LeanLlama

    lean = LeanLlama(hf_backend.base_model)
    requests = two_prefix_requests()
    calls = []
    attend = ragged_attention.attend

    def counted(*args):
        calls.append(args[0].shape[0])
        return attend(*args)

    def decode() -> list[list[int]]:
        queue = sorted((hf_backend._encode(i, r) for i, r in enumerate(requests)), key=lambda q: q.ids)
        out = [None] * len(requests)
        decoder = ContinuousDecoder(lambda ids, mask, positions, cache, names, shared=None, ragged_prefill=False:
                                    lean(ids, mask, positions, cache, shared, ragged_prefill), hf_backend.pad_id,
                                    hf_backend.stop_ids, token_budget=100_000, max_batch=3, with_names=False,
                                    share_prefix_attention=True)
        decoder.run(queue, lambda item, ids, reason: out.__setitem__(item.index, list(ids)))
        return out

    monkeypatch.setattr(ragged_attention, "attend", counted)
    with_kernel = decode()
    assert calls and max(calls) == 3  # one call a layer over every row
    monkeypatch.setattr(ragged_attention, "usable", lambda tensor: False)
    assert decode() == with_kernel


needs_prefill_kernel = pytest.mark.skipif(ragged_attention.prefill_kernel() is None,
                                          reason="no C compiler or no bf16 dot-product units: no prefill kernel")


def _prefill_case(group: int, rows: int = 5, new: int = 23, past: int = 30):
    """bf16 queries over a left-padded cache: row 0 unpadded, row 1 padded before its
    prefix, rows 2-3 between prefix and new tokens (as the decoder's suffix prefill lays
    them out), row 4 all padding among its new tokens but two; keys and values are views
    of wider buffers (the decoder's growing cache)."""
    import torch

    torch.manual_seed(group)
    kv_heads, dim, width = 2, 64, past + new
    mask = torch.ones(rows, width, dtype=torch.long)
    mask[1, :7] = mask[2, past:past + 5] = mask[3, past:past + 19] = mask[4, past:width - 2] = 0
    q = torch.randn(rows, new, kv_heads * group, dim, dtype=torch.bfloat16).transpose(1, 2)  # the lean forward's strides
    keys = torch.randn(rows, kv_heads, width + 9, dim, dtype=torch.bfloat16)[:, :, :width]
    values = torch.randn(rows, kv_heads, width + 9, dim, dtype=torch.bfloat16)[:, :, :width]
    return q, keys, values, mask


@needs_prefill_kernel
@pytest.mark.parametrize("group", [1, 3, 4, 12])
def test_prefill_kernel_equals_masked_attention_to_flash_rounding(group):
    """Every real query's output equals float32 attention under transformers' mask
    (causal, padding skipped) as closely as torch's bf16 flash kernel does; queries on
    padding give zeros, never NaN; the output is laid out for the output projection."""
    import torch

    from fitness.backends.lean_llama import _attention_mask

    q, keys, values, mask = _prefill_case(group)
    new = q.shape[2]
    sdpa = torch.nn.functional.scaled_dot_product_attention
    want = sdpa(q.float(), keys.float(), values.float(), attn_mask=_attention_mask(mask, new, torch.float32),
                enable_gqa=group > 1)
    flash = sdpa(q, keys, values, attn_mask=_attention_mask(mask, new, torch.bfloat16), enable_gqa=group > 1)
    assert ragged_attention.prefill_usable(q, keys, values)
    got = ragged_attention.prefill_attend(q, keys, values, mask)
    assert got.shape == q.shape and got.dtype == torch.bfloat16 and got.transpose(1, 2).is_contiguous()
    real = mask[:, -new:].bool().view(len(mask), 1, new, 1).expand_as(want)
    error, flash_error = (got.float() - want)[real].abs(), (flash.float() - want)[real].abs()
    assert error.max() <= 2 * flash_error.max() and error.mean() <= 1.2 * flash_error.mean(), \
        (error.max(), flash_error.max(), error.mean(), flash_error.mean())
    assert torch.isfinite(got).all() and not got[~real].any()


@needs_prefill_kernel
def test_prefill_kernel_serves_only_what_it_can_read():
    import torch

    q, keys, values, mask = _prefill_case(3)
    assert not ragged_attention.prefill_usable(q.float(), keys.float(), values.float())  # bf16 only
    assert not ragged_attention.prefill_usable(q, keys[..., :32], values[..., :32])  # head dim 64 only
    assert not ragged_attention.prefill_usable(q, keys, values.contiguous())  # keys and values alike
    assert not ragged_attention.prefill_usable(q, keys.transpose(2, 3), values.transpose(2, 3))
    assert ragged_attention.prefill_usable(q.contiguous(), keys.contiguous(), values.contiguous())
    del torch
