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


def joinable(cache) -> bool:
    """True when every layer is an initialised ``DynamicLayer`` or ``GrowingLayer`` (nothing else)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    kinds = (DynamicLayer, growing_layer())
    return bool(layers) and all(type(layer) in kinds and layer.is_initialized for layer in layers)


def join_rows(first, second):
    """``first`` with the rows of ``second`` appended (in place on ``first``).

    Both caches must be :func:`joinable` with the same number of layers; the result's
    width is the larger of the two, the narrower side left-padded with zeros."""
    import torch

    for a, b in zip(first.layers, second.layers, strict=True):
        width = max(a.keys.shape[-2], b.keys.shape[-2])
        a.keys = torch.cat([_left_pad(a.keys, width), _left_pad(b.keys, width)], dim=0)
        a.values = torch.cat([_left_pad(a.values, width), _left_pad(b.values, width)], dim=0)
    return first


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


def _left_pad(tensor, width: int):
    import torch

    missing = width - tensor.shape[-2]
    if missing == 0:
        return tensor
    pad = torch.zeros((*tensor.shape[:-2], missing, tensor.shape[-1]), dtype=tensor.dtype, device=tensor.device)
    return torch.cat([pad, tensor], dim=-2)


@functools.cache
def growing_layer():
    """``GrowingLayer``, a ``DynamicLayer`` appending in place; built once, on first use (lazy transformers)."""
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """Keys and values are views of buffers with room to grow, so a decode step
        writes one column instead of copying the whole cache (``DynamicLayer``
        concatenates, which on a CPU costs more than the step's matmuls). Anything
        that replaces ``keys``/``values`` (joining rows, say) is noticed and the next
        append starts a new buffer."""

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
            view = buffer[..., start:end + n, :]
            self._grown[name] = (buffer, start, end + n, view)
            return view

        def batch_select_indices(self, indices) -> None:
            for name in ("keys", "values"):
                buffer, start, end, view = self._grown[name]
                if getattr(self, name) is view:  # keep the spare room
                    buffer = buffer.index_select(0, indices)
                    view = buffer[..., start:end, :]
                    self._grown[name] = (buffer, start, end, view)
                    setattr(self, name, view)
                else:
                    setattr(self, name, getattr(self, name)[indices, ...])

        def cut_left(self, columns: int) -> None:
            for name in ("keys", "values"):
                buffer, start, end, view = self._grown[name]
                if getattr(self, name) is view:
                    view = buffer[..., start + columns:end, :]
                    self._grown[name] = (buffer, start + columns, end, view)
                    setattr(self, name, view)
                else:
                    setattr(self, name, getattr(self, name)[..., columns:, :])

    return GrowingLayer


GROW_COLUMNS = 64  # least spare room a new buffer gets (a quarter of a typical answer)


def growing_cache():
    """An empty cache whose layers are ``GrowingLayer`` (see :func:`growing_layer`)."""
    from transformers.cache_utils import Cache

    return Cache(layer_class_to_replicate=growing_layer())
