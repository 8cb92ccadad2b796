"""Row surgery on a transformers ``DynamicCache``: what continuous batching needs.

A running batch keeps every row right-aligned in one left-padded KV cache
(``[batch, heads, width, head_dim]`` per layer). Admitting new rows means joining
two such caches whose widths differ: the narrower one is padded on the left with
zeros, which the attention mask hides. Finished rows are dropped with
``batch_select_indices`` (transformers' own), and columns that have become padding
in every remaining row are cut off the left.

The decoder's caches are :func:`growing_cache`: full-attention layers that append
in place instead of concatenating (a CPU decode step otherwise spends more time
copying the cache than multiplying). Only those and plain ``DynamicLayer`` layers
are joined. Sliding-window, quantised or linear-attention layers keep state this
module does not understand: :func:`joinable` says no, and the caller falls back to
decoding one group at a time.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True)
class SharedPrefixes:
    """Which cache columns rows share, for one decode step (columns as in the mask
    before the step's new token).

    ``groups``: (rows, each row's first prefix column, prefix length): those rows'
    caches hold the same prompt prefix (the same tokens at the same positions), so
    one row's copy serves them all. ``own_start``: per row, the first column the row
    attends to on its own (past its prefix; a finished row's is the mask's width, so
    it attends only to the step's token). An attention that knows this reads each
    shared prefix once (:mod:`fitness.backends.lean_llama`)."""

    groups: tuple[tuple[tuple[int, ...], tuple[int, ...], int], ...]
    own_start: tuple[int, ...]


def joinable(cache) -> bool:
    """True when every layer is an initialised ``DynamicLayer`` or ``GrowingLayer`` (nothing else)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    kinds = (DynamicLayer, growing_layer())
    return bool(layers) and all(type(layer) in kinds and layer.is_initialized for layer in layers)


def join_rows(first, *others):
    """``first`` with the rows of ``others`` appended after its own (in place on ``first``).

    Every cache must be :func:`joinable` with the same number of layers; the result's
    width is the largest, narrower rows left-padded with zeros. All caches are copied
    once, into one new buffer per layer; for a ``GrowingLayer`` that buffer has spare
    room, so the next decode step appends in place instead of copying it again."""
    import torch

    for layers in zip(first.layers, *(o.layers for o in others), strict=True):
        width = max(layer.keys.shape[-2] for layer in layers)
        rows = sum(layer.keys.shape[0] for layer in layers)
        head = layers[0]
        grows = hasattr(head, "_hold")  # a GrowingLayer: it takes the buffer, spare room included
        spare = max(GROW_COLUMNS, width // 2) if grows else 0
        joined = {}
        for name in ("keys", "values"):
            parts = [getattr(layer, name) for layer in layers]
            shape = (rows, *parts[0].shape[1:-2], width + spare, parts[0].shape[-1])
            buffer = torch.empty(shape, dtype=parts[0].dtype, device=parts[0].device)
            row = 0
            for part in parts:
                pad = width - part.shape[-2]
                buffer[row:row + part.shape[0], ..., :pad, :] = 0  # hidden by the mask, but must not be NaN
                buffer[row:row + part.shape[0], ..., pad:width, :] = part
                row += part.shape[0]
            joined[name] = buffer
        if grows:
            head._hold("keys", joined["keys"], 0, width)
            head._hold("values", joined["values"], 0, width)
        else:
            head.keys, head.values = joined["keys"], joined["values"]
    return first


def select_rows(cache, index):
    """A new :func:`growing_cache` holding rows ``index`` of ``cache`` (repeats allowed);
    ``cache`` is left as it was. An empty ``cache`` gives an empty one."""
    selected = growing_cache()
    for layer_index, layer in enumerate(getattr(cache, "layers", [])):
        if not layer.is_initialized:
            break
        rows = index.to(layer.keys.device)
        selected.update(layer.keys.index_select(0, rows), layer.values.index_select(0, rows), layer_index)
    return selected


def cut_left(cache, columns: int) -> None:
    """Drop the first ``columns`` positions of every row (they must be padding everywhere)."""
    if columns <= 0:
        return
    for layer in cache.layers:
        if hasattr(layer, "cut_left"):
            layer.cut_left(columns)  # keeps its spare room
        else:
            layer.keys = layer.keys[..., columns:, :]
            layer.values = layer.values[..., columns:, :]


@functools.cache
def growing_layer():
    """``GrowingLayer``, a ``DynamicLayer`` appending in place; built once, on first use (lazy transformers)."""
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """Keys and values are views of buffers with room to grow: a decode step writes
        one column instead of copying the cache (``DynamicLayer`` concatenates, which on
        a CPU costs more than the step's matmuls). A replaced ``keys``/``values`` is
        noticed and the next append starts a new buffer."""

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self._grown = {}
            self.keys = self._append("keys", key_states)
            self.values = self._append("values", value_states)
            return self.keys, self.values

        def _append(self, name: str, new):
            import torch

            current = getattr(self, name)
            buffer, start, end, view = self._grown.get(name, (None, 0, 0, None))
            n = new.shape[-2]
            if view is None or current is not view or end + n > buffer.shape[-2]:
                length = current.shape[-2] if current.numel() else 0
                spare = max(GROW_COLUMNS, length // 2)
                buffer = torch.empty((*new.shape[:-2], length + n + spare, new.shape[-1]), dtype=new.dtype,
                                     device=new.device)
                if length:
                    buffer[..., :length, :] = current
                start, end = 0, length
            buffer[..., end:end + n, :] = new
            return self._hold(name, buffer, start, end + n)

        def _hold(self, name: str, buffer, start: int, end: int):
            """Make columns ``[start, end)`` of ``buffer`` the layer's ``name`` (keys or values)."""
            view = buffer[..., start:end, :]
            self._grown[name] = (buffer, start, end, view)
            setattr(self, name, view)
            return view

        def batch_select_indices(self, indices) -> None:
            keep = indices.tolist()
            for name in ("keys", "values"):
                buffer, start, end, view = self._grown[name]
                if getattr(self, name) is not view:
                    setattr(self, name, getattr(self, name)[indices, ...])
                else:  # the spare room is kept either way
                    self._hold(name, _select_buffer_rows(buffer, keep, indices, start, end), start, end)

        def cut_left(self, columns: int) -> None:
            for name in ("keys", "values"):
                buffer, start, end, view = self._grown[name]
                if getattr(self, name) is view:
                    self._hold(name, buffer, start + columns, end)
                else:
                    setattr(self, name, getattr(self, name)[..., columns:, :])

    return GrowingLayer


GROW_COLUMNS = 64  # least spare room a new buffer gets (a quarter of a typical answer)


def _select_buffer_rows(buffer, keep: list[int], indices, start: int, end: int):
    """Rows ``keep`` of a growing layer's buffer (columns ``[start, end)`` are live).

    Ascending without repeats (a compaction): the kept rows' live columns move down
    within the buffer, and its first ``len(keep)`` rows are returned: no new buffer to
    fault in, no copy of spare room or of rows that stay where they are (a new buffer
    per compaction measured ~60 ms at 60 rows, most of it page faults). Otherwise
    (repeats: a prefix copied per row) a copy."""
    if keep != sorted(set(keep)):
        return buffer.index_select(0, indices)
    for row, source in enumerate(keep):
        if row != source:
            buffer[row, ..., start:end, :].copy_(buffer[source, ..., start:end, :])
    return buffer[:len(keep)]


def growing_cache():
    """An empty cache whose layers are ``GrowingLayer`` (see :func:`growing_layer`)."""
    from transformers.cache_utils import Cache

    return Cache(layer_class_to_replicate=growing_layer())


MAX_PARTS = 4  # more parts cost a few small ops per layer each; adjacent small ones are merged


class PartsCache:
    """A running batch's KV cache kept as consecutive parts, each a cache of its own
    rows and width (rows ``[0, n0)`` in the first part, ``[n0, n0 + n1)`` in the next...).

    Why: joining admitted rows into one cache copies every running row's KV (on a
    real workload, half a second per admission at 64 rows); as a new part they are
    copied not at all, and dropping finished rows copies only the parts they were
    in. Only a forward that attends part by part can use it (the lean forward's
    decode steps, :mod:`fitness.backends.lean_llama`); each part is right-aligned to
    the batch's mask, so part ``p``'s columns are the mask's last ``width(p)``.
    Beyond :data:`MAX_PARTS` the two adjacent parts with the fewest rows are merged."""

    def __init__(self) -> None:
        self.parts: list = []

    def add(self, cache) -> None:
        """Append ``cache``'s rows (a growing cache or another ``PartsCache``) after ours."""
        self.parts.extend(cache.parts if isinstance(cache, PartsCache) else [cache])
        while len(self.parts) > MAX_PARTS:
            sizes = [rows_of(a) + rows_of(b) for a, b in zip(self.parts, self.parts[1:])]
            first = sizes.index(min(sizes))
            join_rows(self.parts[first], self.parts.pop(first + 1))

    def ranges(self):
        """``(first row, last row + 1, part)`` of every part, in row order."""
        first = 0
        for part in self.parts:
            rows = rows_of(part)
            yield first, first + rows, part
            first += rows

    def width(self) -> int:
        return max(part.layers[0].keys.shape[-2] for part in self.parts)

    def batch_select_indices(self, index) -> None:
        """Keep rows ``index`` (ascending, no repeats): a part loses rows by a copy of
        itself alone, and goes when it keeps none."""
        keep = index.tolist()
        kept_parts, position = [], 0
        for first, last, part in list(self.ranges()):
            local = []
            while position < len(keep) and keep[position] < last:
                local.append(keep[position] - first)
                position += 1
            if len(local) == last - first:
                kept_parts.append(part)
            elif local:
                part.batch_select_indices(_tensor(local, index))
                kept_parts.append(part)
        self.parts = kept_parts

    def cut_to(self, width: int) -> None:
        """The batch's mask is now ``width`` columns (its first ones, padding in every
        row, were dropped): each part loses what of them it had."""
        for part in self.parts:
            cut_left(part, part.layers[0].keys.shape[-2] - width)


def rows_of(cache) -> int:
    return cache.layers[0].keys.shape[0]


def _tensor(values: list[int], like):
    import torch

    return torch.tensor(values, dtype=torch.long, device=like.device)
