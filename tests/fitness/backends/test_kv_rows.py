"""KV-cache row surgery (fitness.backends.kv_rows) on small tensors: the growing
layer holds exactly what transformers' DynamicLayer holds, and joining / cutting
rows keeps every row's real columns right-aligned and untouched."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers.cache_utils import DynamicLayer

from fitness.backends import kv_rows


def states(rows: int, columns: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 2, columns, 4, generator=g), torch.randn(rows, 2, columns, 4, generator=g)


def test_growing_layer_equals_dynamic_layer_through_appends_selects_and_cuts():
    grow, plain = kv_rows.growing_layer()(), DynamicLayer()
    for step, columns in enumerate([7, 1, 1, 70, 1]):  # 70 overflows the spare room: a new buffer
        k, v = states(3, columns, step)
        a, b = grow.update(k, v), plain.update(k, v)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    index = torch.tensor([2, 0])
    grow.batch_select_indices(index)
    plain.batch_select_indices(index)
    grow.cut_left(3)
    plain.keys, plain.values = plain.keys[..., 3:, :], plain.values[..., 3:, :]
    k, v = states(2, 1, 99)
    a, b = grow.update(k, v), plain.update(k, v)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[0].shape == (2, 2, 78, 4)


def test_appending_writes_in_place_instead_of_copying():
    grow = kv_rows.growing_layer()()
    grow.update(*states(2, 10, 0))
    before = grow.keys.data_ptr()
    grow.update(*states(2, 1, 1))
    assert grow.keys.data_ptr() == before  # the same buffer, one more column


def test_dropping_rows_moves_the_kept_ones_down_in_place_and_appends_still_fit():
    """Kept rows ascending without repeats (a compaction): the same buffer, rows moved
    down, then appends and a second drop equal transformers' DynamicLayer."""
    grow, plain = kv_rows.growing_layer()(), DynamicLayer()
    for step, columns in enumerate([6, 1]):
        k, v = states(5, columns, step)
        grow.update(k, v), plain.update(k, v)
    before = grow.keys.data_ptr()
    for index in (torch.tensor([0, 2, 4]), torch.tensor([1, 2])):
        grow.batch_select_indices(index)
        plain.batch_select_indices(index)
        k, v = states(len(index), 1, 10 + len(index))
        a, b = grow.update(k, v), plain.update(k, v)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert grow.keys.data_ptr() == before  # row 0 stayed where it was: no new buffer
    grow.batch_select_indices(torch.tensor([1, 1, 0]))  # repeats (a prefix copied per row): a copy
    plain.batch_select_indices(torch.tensor([1, 1, 0]))
    assert torch.equal(grow.keys, plain.keys) and torch.equal(grow.values, plain.values)


def test_join_left_pads_the_narrower_cache():
    first, second = kv_rows.growing_cache(), kv_rows.growing_cache()
    k1, v1 = states(2, 5, 0)
    k2, v2 = states(1, 8, 1)
    first.update(k1, v1, 0)
    second.update(k2, v2, 0)
    assert kv_rows.joinable(first)
    kv_rows.join_rows(first, second)
    keys = first.layers[0].keys
    assert keys.shape == (3, 2, 8, 4)
    assert torch.equal(keys[:2, :, 3:], k1) and not keys[:2, :, :3].any() and torch.equal(keys[2:], k2)
    first.update(*states(3, 1, 2), 0)  # a joined cache keeps growing
    assert first.layers[0].keys.shape == (3, 2, 9, 4)
    kv_rows.cut_left(first, 3)
    assert torch.equal(first.layers[0].keys[:2, :, :5], k1)


def test_other_layer_kinds_are_not_joinable():
    from transformers.cache_utils import Cache, DynamicSlidingWindowLayer

    cache = Cache(layers=[DynamicSlidingWindowLayer(sliding_window=4)])
    cache.update(*states(1, 2, 0), 0)
    assert not kv_rows.joinable(cache)


def test_finished_rows_are_compacted_in_batches_not_one_by_one():
    """Eight rows finishing one per step: every output is right (length, tokens, and
    the rows still running never see a finished row's padding), while the KV cache is
    compacted only when a quarter of the batch has finished: 5 copies instead of 7."""
    import torch

    from fitness.backends.base import Request, SamplingParams
    from fitness.backends.hf_decode import ContinuousDecoder, Queued

    vocab = 16

    def forward(ids, mask, positions, cache, names):
        rows, new = ids.shape
        cache.update(torch.zeros(rows, 1, new, 2), torch.zeros(rows, 1, new, 2), 0)
        logits = torch.zeros(rows, vocab)
        logits[torch.arange(rows), (positions[:, -1] % 7) + 3] = 1.0  # each row's next token: from its own position
        return logits

    queue = [Queued(i, [1] * 5, Request(({"role": "user", "content": "q"},), SamplingParams(max_new_tokens=i + 1)), 0)
             for i in range(8)]
    decoder = ContinuousDecoder(forward, pad_id=0, stop_ids=frozenset({99}), token_budget=10_000, max_batch=8,
                                with_names=False)
    selects = []
    original = kv_rows.growing_layer().batch_select_indices
    kv_rows.growing_layer().batch_select_indices = lambda self, idx: (selects.append(len(idx)), original(self, idx))
    try:
        done = {}
        decoder.run(queue, lambda item, ids, reason: done.setdefault(item.index, (list(ids), reason)))
    finally:
        kv_rows.growing_layer().batch_select_indices = original
    assert {i: len(ids) for i, (ids, _) in done.items()} == {i: i + 1 for i in range(8)}
    assert all(ids == [(4 + k) % 7 + 3 for k in range(len(ids))] for ids, _ in done.values())
    assert {reason for _, reason in done.values()} == {"length"}
    assert selects == [6, 4, 3, 2, 1]  # rows kept by each copy (one layer)


def test_length_buckets_split_short_prompts_from_long_ones():
    from fitness.backends.hf_decode import length_buckets

    lengths = [102, 19, 154, 28, 19, 104, 33, 125]
    buckets = length_buckets(lengths, overhead=48)
    assert sorted(r for b in buckets for r in b) == list(range(len(lengths)))  # every row once
    assert sorted(lengths[r] for r in buckets[0]) == [19, 19, 28, 33]  # short questions alone, shortest first
    assert all(min(lengths[r] for r in b) > 100 for b in buckets[1:])
    assert length_buckets([20, 21, 22], overhead=48) == [[0, 1, 2]]  # little padding: one forward
    assert length_buckets([5], overhead=48) == [[0]]


def test_join_many_and_select_rows():
    """Three caches joined at once (rows in order, each right-aligned); rows selected
    (with a repeat) into a new cache, leaving the source as it was."""
    parts = [kv_rows.growing_cache() for _ in range(3)]
    tensors = [states(rows, columns, seed) for seed, (rows, columns) in enumerate([(2, 5), (1, 8), (2, 3)])]
    for cache, (k, v) in zip(parts, tensors):
        cache.update(k, v, 0)
    picked = kv_rows.select_rows(parts[0], torch.tensor([1, 1, 0]))
    assert torch.equal(picked.layers[0].keys, tensors[0][0][[1, 1, 0]]) and parts[0].layers[0].keys.shape[0] == 2
    kv_rows.join_rows(*parts)
    keys = parts[0].layers[0].keys
    assert keys.shape == (5, 2, 8, 4)
    assert torch.equal(keys[:2, :, 3:], tensors[0][0]) and torch.equal(keys[2:3], tensors[1][0])
    assert torch.equal(keys[3:, :, 5:], tensors[2][0]) and not keys[3:, :, :5].any()
    before = keys.data_ptr()
    parts[0].update(*states(5, 1, 9), 0)  # the joined buffer has room: the next step appends in place
    assert parts[0].layers[0].keys.data_ptr() == before


def test_parts_cache_adds_without_copying_and_drops_rows_part_by_part(monkeypatch):
    """Admitted rows become a new part (no copy of the running rows); compaction
    copies only parts that lose rows, drops emptied ones; beyond MAX_PARTS the
    smallest adjacent pair is merged; cutting columns trims each part to the batch."""
    monkeypatch.setattr(kv_rows, "MAX_PARTS", 3)
    caches = []
    for seed, (rows, columns) in enumerate([(3, 9), (2, 6), (1, 4), (2, 7)]):
        cache = kv_rows.growing_cache()
        cache.update(*states(rows, columns, seed), 0)
        caches.append(cache)
    running = caches[0].layers[0].keys.data_ptr()
    parts = kv_rows.PartsCache()
    for cache in caches[:3]:
        parts.add(cache)
    assert [(f, l) for f, l, _ in parts.ranges()] == [(0, 3), (3, 5), (5, 6)] and parts.width() == 9
    assert parts.parts[0].layers[0].keys.data_ptr() == running  # untouched
    parts.add(caches[3])  # four parts: the two with fewest rows together (2 + 1) merge
    assert [(f, l) for f, l, _ in parts.ranges()] == [(0, 3), (3, 6), (6, 8)]
    assert parts.parts[1].layers[0].keys.shape == (3, 2, 6, 4)
    parts.batch_select_indices(torch.tensor([0, 1, 2, 6]))  # the middle part loses every row, the last one row
    assert [(f, l) for f, l, _ in parts.ranges()] == [(0, 3), (3, 4)]
    assert parts.parts[0].layers[0].keys.data_ptr() == running
    k3, _ = states(2, 7, 3)
    assert torch.equal(parts.parts[1].layers[0].keys, k3[:1])
    parts.cut_to(7)  # the batch's mask 9 -> 7 columns: the first part loses 2, the other (7 wide) none
    assert parts.parts[0].layers[0].keys.shape[-2] == 7 and torch.equal(parts.parts[1].layers[0].keys, k3[:1])
