"""Continuous batching for the hf backend: the decode loop behind ``HFBackend.generate``.

The queue of requests (sorted so that one strategy's requests sit together) feeds
one running batch. Each step picks a token for every row; a row that stops (end
token or its own ``max_new_tokens``) is returned at once (its slot is freed with
others', see ``_step``), and as soon as enough slots are free the next requests of
the queue are prefilled together (a shared prompt prefix once, suffixes of very
different lengths in separate forwards) and joined to the running batch
(:mod:`fitness.backends.kv_rows`; as new parts of a ``PartsCache``, uncopied, when
the forward reads shared prefixes once). So a batch never waits for its longest
member: real workloads mix answers that stop after 20 tokens with chains that run
to the limit, and without refilling most steps would run nearly empty.

Every row sees exactly its own tokens: rows are left-padded, the mask hides the
padding, positions count only real tokens, and each row samples from its own
``torch.Generator``. A request with a grammar (constrained decoding) has the tokens
its grammar forbids masked before its token is picked
(:mod:`fitness.backends.grammar_rows`) and stops when the grammar is complete.
Greedy outputs equal one-request-at-a-time decoding up to the
kernels' rounding, which depends on the batch's shape: equal on the tests' requests
(tests/fitness/backends/test_hf_backend.py), while on long mixed workloads a near
tie sometimes flips (docs/backends.md, "Batch invariance").

Memory: ``rows x (longest projected row)`` stays under ``token_budget`` padded
tokens, where a row's projection is its length so far plus the tokens it may still
generate; ``max_batch`` bounds the rows. With ``share_prefix_attention`` a row's
shared prompt prefix is left out of its projection: a decode step reads it once for
all rows, so it costs little time, while each row still holds a copy (memory can
then reach a few times the budget's tokens; a 135M model's KV is 23 KB a token in bf16).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from fitness.backends import kv_rows
from fitness.backends.base import Request
from fitness.backends.row_sampler import RowSampler

MIN_SHARED_PREFIX = 8  # shorter shared prefixes are not worth a separate forward pass
# admit new rows once at least 1/REFILL_SHARE of the batch could be refilled: a
# prefill of many rows at once is far cheaper per token than one row at a time
REFILL_SHARE = 4
# one more prefill forward costs about as much as this many padded tokens (it re-reads
# every weight: ~12 ms for SmolLM2-135M in bf16 here, where a prefill token costs ~0.3 ms)
BUCKET_OVERHEAD = 48

# forward(ids, mask, positions, cache, adapter names or None) -> last-position logits
Forward = Callable[..., object]


@dataclass
class Queued:
    """One request, tokenised. ``prefix_len``: leading tokens that render the
    conversation before the last user turn (shared by a strategy's requests)."""

    index: int
    ids: list[int]
    request: Request
    prefix_len: int
    adapter_name: str = ""


@dataclass
class _Row:
    item: Queued
    sampler: RowSampler
    span: int  # cache columns from this row's first real token to the end
    grammar: object = None  # a grammar_rows.RowGrammar for constrained requests
    outputs: list[int] = field(default_factory=list)
    reason: str = "length"
    done: bool = False  # finished, its slot not yet compacted away (see ContinuousDecoder._step)
    prefix_id: int = -1  # rows with the same id start with the same prompt prefix (ContinuousDecoder._prefix_of)
    prefix_len: int = 0

    @property
    def left(self) -> int:
        return self.item.request.sampling.max_new_tokens - len(self.outputs)


@dataclass
class _Batch:
    rows: list[_Row]
    cache: object
    mask: object  # long [rows, width]: 1 on real tokens
    logits: object  # float32 or bf16 [rows, vocab]: the next token of each row (argmax is the same on either)

    def live(self) -> list[_Row]:
        return [r for r in self.rows if not r.done]

    def projected_width(self) -> int:
        return max(r.span - r.prefix_len + r.left for r in self.live())


class ContinuousDecoder:
    """Runs a queue of requests to completion; see the module docstring.
    ``with_names``: pass each row's adapter name to ``forward`` (a PEFT model).
    ``grammars``: a :class:`fitness.backends.grammar_rows.GrammarCompiler`, needed
    only when some request carries a grammar (made on first need by ``grammars()``).
    ``share_prefix_attention``: decode steps pass ``shared=`` a
    :class:`fitness.backends.kv_rows.SharedPrefixes` to ``forward``, which can then
    read a prefix several rows share once (the lean forward does), and prefills pass
    ``ragged_prefill=True`` (the lean forward's prefill kernel; rounding as flash)."""

    def __init__(self, forward: Forward, pad_id: int, stop_ids: frozenset[int], token_budget: int,
                 max_batch: int, with_names: bool, grammars: Callable[[], object] | None = None,
                 share_prefix_attention: bool = False) -> None:
        import torch

        self.torch, self.forward, self.pad_id, self.stop_ids = torch, forward, pad_id, stop_ids
        self.token_budget, self.max_batch, self.with_names = token_budget, max_batch, with_names
        self.grammars = grammars
        self.share_prefix_attention = share_prefix_attention
        self._prefill_extra = {"ragged_prefill": True} if share_prefix_attention else {}
        self._prefix_ids: dict[tuple, int] = {}  # (adapter, prefix tokens) -> id
        self._prefix_of_item: dict[int, tuple[int, int]] = {}  # Queued.index -> (id, length)
        self.can_join: bool | None = None  # known after the first prefill (kv_rows.joinable)

    def run(self, queue: list[Queued], on_finish: Callable[[Queued, list[int], str], None]) -> None:
        """Decode every queued request; ``on_finish(item, token ids, "stop"|"length")``
        is called once per request, as soon as it is done."""
        position, batch = 0, None
        with self.torch.inference_mode():
            while position < len(queue) or batch is not None:
                admit = self._admissible(queue, position, batch)
                if admit:
                    parts = self._prefill(queue[position:position + admit])
                    position += admit
                    if batch is not None:
                        self._compact(batch)
                        parts.insert(0, batch)
                    batch = self._join(parts)
                batch = self._step(batch, on_finish)

    # ---- admission -------------------------------------------------------------------
    def _admissible(self, queue: list[Queued], position: int, batch: _Batch | None) -> int:
        """How many queued requests to prefill now (0: keep decoding)."""
        if position >= len(queue) or (batch is not None and not self.can_join):
            return 0
        rows = len(batch.live()) if batch is not None else 0
        width = batch.projected_width() if batch is not None else 0
        count = 0
        for item in itertools.islice(queue, position, None):  # no copy of the queue on every step
            new_width = max(width, len(item.ids) - self._prefix_of(item)[1] + item.request.sampling.max_new_tokens)
            total = rows + count + 1
            if total > 1 and (total > self.max_batch or total * new_width > self.token_budget):
                break
            width, count = new_width, count + 1
        if batch is None:
            return count
        worth_it = min(len(queue) - position, max(1, (rows + count) // REFILL_SHARE))
        return count if count >= worth_it else 0

    def _join(self, parts: list[_Batch]) -> _Batch:
        """One batch of every part's rows, in order: one copy of the KV caches, or
        none where the forward attends part by part (``kv_rows.PartsCache``)."""
        if len(parts) == 1:
            return parts[0]
        torch = self.torch
        width = max(p.mask.shape[1] for p in parts)
        masks = [torch.nn.functional.pad(p.mask, (width - p.mask.shape[1], 0)) for p in parts]
        if self.share_prefix_attention:  # the forward attends part by part: new rows become new parts, uncopied
            cache = parts[0].cache if isinstance(parts[0].cache, kv_rows.PartsCache) else kv_rows.PartsCache()
            for p in parts if cache is not parts[0].cache else parts[1:]:
                cache.add(p.cache)
        else:
            cache = kv_rows.join_rows(parts[0].cache, *(p.cache for p in parts[1:]))
        return _Batch([r for p in parts for r in p.rows], cache, torch.cat(masks),
                      torch.cat([p.logits for p in parts]))

    # ---- decoding --------------------------------------------------------------------
    def _step(self, batch: _Batch, on_finish) -> _Batch | None:
        """Pick every live row's next token, retire finished rows, run one forward.

        A finished row stays in the batch (fed padding, its logits ignored) until a
        quarter of the batch has finished or new rows are admitted: dropping rows
        copies every layer's KV cache, which on a real workload cost a fifth of the
        wall time when done at every finish, while a few idle rows in a memory-bound
        decode step cost little."""
        torch = self.torch
        constrained = [(b, row.grammar) for b, row in enumerate(batch.rows) if row.grammar is not None and not row.done]
        if constrained:
            self.grammars().mask_rows(batch.logits, constrained)
        # one call for every greedy row, not one per row; max's indices are argmax's (the
        # first maximum, documented for both) at a third of its time on a CPU
        greedy = batch.logits.max(dim=-1).indices.tolist()
        for b, row in enumerate(batch.rows):
            if row.done:
                continue
            token = greedy[b] if row.sampler.greedy else row.sampler.pick(batch.logits[b].float())
            row.outputs.append(token)
            complete = row.grammar is not None and row.grammar.advance(token)
            if token in self.stop_ids or complete:
                row.reason = "stop"
            if token in self.stop_ids or complete or row.left <= 0:
                row.done = True
                on_finish(row.item, row.outputs, row.reason)
        live = len(batch.live())
        if not live:
            return None
        if (len(batch.rows) - live) * REFILL_SHARE >= len(batch.rows):
            self._compact(batch)
        step_ids = torch.tensor([[self.pad_id if row.done else row.outputs[-1]] for row in batch.rows], dtype=torch.long)
        extra = {"shared": self._shared_prefixes(batch)} if self.share_prefix_attention else {}
        batch.mask = torch.cat([batch.mask, torch.ones((len(batch.rows), 1), dtype=torch.long)], dim=1)
        batch.logits = self.forward(step_ids, batch.mask, batch.mask.sum(-1, keepdim=True) - 1, batch.cache,
                                    self._names(batch.rows), **extra)
        for row in batch.rows:
            row.span += 1
        return batch

    def _shared_prefixes(self, batch: _Batch) -> kv_rows.SharedPrefixes:
        """Rows whose prompts start with the same prefix, found by the prefix's id: a
        row's prompt begins at its first real column (``width - span``), wherever the
        prefill that computed it put it. A prefix only one live row has is no group:
        that row attends to it as its own (one read either way, one call fewer)."""
        width = batch.mask.shape[1]
        groups: dict[int, tuple[list[int], list[int], int]] = {}
        own_start = []
        for b, row in enumerate(batch.rows):
            own_start.append(width if row.done else width - row.span)
            if not row.done and row.prefix_id >= 0:
                rows, starts, length = groups.setdefault(row.prefix_id, ([], [], row.prefix_len))
                rows.append(b)
                starts.append(width - row.span)
        shared = tuple((tuple(r), tuple(s), n) for r, s, n in groups.values() if len(r) > 1)
        for rows, starts, length in shared:
            for b, first in zip(rows, starts):
                own_start[b] = first + length
        return kv_rows.SharedPrefixes(shared, tuple(own_start))

    def _compact(self, batch: _Batch) -> None:
        """Drop finished rows from the cache, then columns that are padding in every row left."""
        torch = self.torch
        keep = [b for b, row in enumerate(batch.rows) if not row.done]
        if len(keep) == len(batch.rows):
            return
        index = torch.tensor(keep, dtype=torch.long)
        batch.cache.batch_select_indices(index.to(_device(batch.cache)))
        batch.rows, batch.mask, batch.logits = [batch.rows[b] for b in keep], batch.mask[index], batch.logits[index]
        cut = batch.mask.shape[1] - max(r.span for r in batch.rows) if self.can_join else 0
        if cut:
            batch.mask = batch.mask[:, cut:]
            if isinstance(batch.cache, kv_rows.PartsCache):  # parts may be narrower than the mask
                batch.cache.cut_to(batch.mask.shape[1])
            else:
                kv_rows.cut_left(batch.cache, cut)

    def _prefill(self, items: list[Queued]) -> list[_Batch]:
        """Run the prompts through the model: new batches, to be joined.

        Requests of one strategy share a long prefix (system prompt, exemplars): the
        rendered conversation before the final user turn. Each distinct prefix (per
        adapter) is computed once, in one left-padded batch, and its KV cache is
        copied to the rows that use it. Each row's own suffix is then left-padded
        *after* its prefix: [pads][prefix][pads][suffix]. The mask zeroes the pads
        and positions count only real tokens, so every row sees exactly its own
        prompt at exactly its own positions. Suffixes of very different lengths are
        prefilled in separate forwards (:func:`length_buckets`) whose rows are then
        joined by the caller, as admitted rows are joined to a running batch.
        """
        torch = self.torch
        n = len(items)
        groups: dict[tuple, list[int]] = {}
        for row, item in enumerate(items):
            groups.setdefault((item.adapter_name, tuple(item.ids[: item.prefix_len])), []).append(row)
        # every row keeps at least one suffix token: its logits start the decoding
        prefix_lens = [min(len(key[1]), min(len(items[r].ids) for r in rows) - 1) for key, rows in groups.items()]
        cache = kv_rows.growing_cache()  # one row per group's prefix, then (one bucket) one per row
        group_of_row = [0] * n
        if n == 1 or max(prefix_lens) < MIN_SHARED_PREFIX or len(groups) == n:
            prefix_lens, group_mask = [0], torch.zeros((1, 0), dtype=torch.long)
        else:
            for g, rows in enumerate(groups.values()):
                for row in rows:
                    group_of_row[row] = g
            keys = list(groups)
            prefix_ids, group_mask = left_pad([list(k[1][:length]) for k, length in zip(keys, prefix_lens)], self.pad_id)
            names = [k[0] for k in keys] if self.with_names else None
            self.forward(prefix_ids, group_mask, (group_mask.cumsum(-1) - 1).clamp(min=0), cache, names,
                         **self._prefill_extra)
        suffixes = [item.ids[prefix_lens[group_of_row[row]]:] for row, item in enumerate(items)]
        buckets = length_buckets([len(s) for s in suffixes])
        if len(buckets) > 1 and not self._joinable(cache, items[0]):
            buckets = [list(range(n))]
        parts = []
        for rows in buckets:
            groups_index = torch.tensor([group_of_row[r] for r in rows], dtype=torch.long)
            if len(buckets) == 1:
                bucket_cache = cache
                if cache.layers and cache.layers[0].is_initialized:
                    cache.batch_select_indices(groups_index.to(_device(cache)))  # repeated rows copy a group's KV
            else:
                bucket_cache = kv_rows.select_rows(cache, groups_index)
            parts.append(self._prefill_suffix([items[r] for r in rows], [suffixes[r] for r in rows], bucket_cache,
                                              group_mask[groups_index]))
        return parts

    def _prefill_suffix(self, items: list[Queued], suffixes: list[list[int]], cache, prefix_mask) -> _Batch:
        """One forward of the rows' own prompt tokens on top of their prefix KV (``cache``)."""
        torch = self.torch
        suffix_ids, suffix_mask = left_pad(suffixes, self.pad_id)
        mask = torch.cat([prefix_mask, suffix_mask], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, prefix_mask.shape[1]:]
        rows = [_Row(item, RowSampler(item.request, torch), 0, self._grammar(item.request)) for item in items]
        for row in rows:
            row.prefix_id, row.prefix_len = self._prefix_of(row.item)
        logits = self.forward(suffix_ids, mask, positions, cache, self._names(rows), **self._prefill_extra)
        if self.can_join is None:
            self.can_join = kv_rows.joinable(cache)
        first_real = mask.argmax(dim=1)  # argmax returns the first 1 of each row
        for row, first in zip(rows, first_real.tolist()):
            row.span = mask.shape[1] - first
        return _Batch(rows, cache, mask, logits)

    def _prefix_of(self, item: Queued) -> tuple[int, int]:
        """(id, length) of the shared prompt prefix the row starts with, or (-1, 0).
        The id names the adapter and tokens, so rows prefilled at different times
        (or without a shared prefill) with the same prefix get the same id."""
        if not self.share_prefix_attention:
            return -1, 0
        if item.index not in self._prefix_of_item:  # asked at every step while the item waits in the queue
            length = min(item.prefix_len, len(item.ids) - 1)
            if length < MIN_SHARED_PREFIX:
                self._prefix_of_item[item.index] = (-1, 0)
            else:
                key = (item.adapter_name, tuple(item.ids[:length]))
                self._prefix_of_item[item.index] = (self._prefix_ids.setdefault(key, len(self._prefix_ids)), length)
        return self._prefix_of_item[item.index]

    def _joinable(self, cache, item: Queued) -> bool:
        """Whether prefilled rows can be joined (so a prefill may be split into length buckets).

        Known after the first forward; before it, one forward of a single padding
        token on a scratch cache finds out (a few milliseconds, once per decoder)."""
        if self.can_join is None:
            if kv_rows.joinable(cache):  # the shared prefix's forward already told
                self.can_join = True
            else:
                probe = kv_rows.growing_cache()
                ids = self.torch.full((1, 1), self.pad_id, dtype=self.torch.long)
                self.forward(ids, self.torch.ones_like(ids), self.torch.zeros_like(ids), probe,
                             [item.adapter_name] if self.with_names else None)
                self.can_join = kv_rows.joinable(probe)
        return self.can_join

    def _grammar(self, request: Request):
        return self.grammars().matcher(request.grammar) if request.grammar else None

    def _names(self, rows: list[_Row]) -> list[str] | None:
        return [r.item.adapter_name for r in rows] if self.with_names else None


def length_buckets(lengths: list[int], overhead: int = BUCKET_OVERHEAD) -> list[list[int]]:
    """Split rows into groups of similar prompt length, each prefilled by its own forward.

    One left-padded forward computes every row at the longest row's length; real
    workloads mix 20-token questions with 150-token ones, so most of such a forward
    would be padding. The split minimises the padded tokens plus ``overhead``
    token-equivalents per extra forward (dynamic programming over the rows sorted by
    length). Returns lists of row indices, shortest rows first."""
    order = sorted(range(len(lengths)), key=lambda r: lengths[r])
    ordered = [lengths[r] for r in order]
    # best[j]: least cost of the first j rows; cut[j]: where the last group starts
    best, cut = [0.0] + [float("inf")] * len(order), [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):
        for i in range(j):
            cost = best[i] + (j - i) * ordered[j - 1] + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], len(order)
    while j > 0:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


def _device(cache):
    if isinstance(cache, kv_rows.PartsCache):
        cache = cache.parts[0]
    return cache.layers[0].keys.device


def left_pad(rows: list[list[int]], pad_id: int):
    """(ids, mask) long tensors with every row right-aligned."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
    return ids, mask
