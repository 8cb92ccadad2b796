"""Continuous batching for the hf backend: the decode loop behind ``HFBackend.generate``.

The queue of requests (sorted so that one strategy's requests sit together) feeds
one running batch. Each step picks a token for every row; a row that stops (end
token or its own ``max_new_tokens``) is returned at once (its slot is freed with
others', see ``_step``), and as soon as enough slots are free the next requests of the queue are prefilled together and joined to
the running batch (:mod:`fitness.backends.kv_rows`). So a batch never waits for its
longest member: real workloads mix answers that stop after 20 tokens with chains
that run to the limit, and without refilling most steps would run nearly empty.

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
generate; ``max_batch`` bounds the rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from fitness.backends import kv_rows
from fitness.backends.base import Request

MIN_SHARED_PREFIX = 8  # shorter shared prefixes are not worth a separate forward pass
# admit new rows once at least 1/REFILL_SHARE of the batch could be refilled: a
# prefill of many rows at once is far cheaper per token than one row at a time
REFILL_SHARE = 4

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
    sampler: _RowSampler
    span: int  # cache columns from this row's first real token to the end
    grammar: object = None  # a grammar_rows.RowGrammar for constrained requests
    outputs: list[int] = field(default_factory=list)
    reason: str = "length"
    done: bool = False  # finished, its slot not yet compacted away (see ContinuousDecoder._step)

    @property
    def left(self) -> int:
        return self.item.request.sampling.max_new_tokens - len(self.outputs)


@dataclass
class _Batch:
    rows: list[_Row]
    cache: object
    mask: object  # long [rows, width]: 1 on real tokens
    logits: object  # float [rows, vocab]: the next token of each row

    def live(self) -> list[_Row]:
        return [r for r in self.rows if not r.done]

    def projected_width(self) -> int:
        return max(r.span + r.left for r in self.live())


class ContinuousDecoder:
    """Runs a queue of requests to completion; see the module docstring.
    ``with_names``: pass each row's adapter name to ``forward`` (a PEFT model).
    ``grammars``: a :class:`fitness.backends.grammar_rows.GrammarCompiler`, needed
    only when some request carries a grammar (made on first need by ``grammars()``)."""

    def __init__(self, forward: Forward, pad_id: int, stop_ids: frozenset[int], token_budget: int,
                 max_batch: int, with_names: bool, grammars: Callable[[], object] | None = None) -> None:
        import torch

        self.torch, self.forward, self.pad_id, self.stop_ids = torch, forward, pad_id, stop_ids
        self.token_budget, self.max_batch, self.with_names = token_budget, max_batch, with_names
        self.grammars = grammars
        self.can_join: bool | None = None  # known after the first prefill (kv_rows.joinable)

    def run(self, queue: list[Queued], on_finish: Callable[[Queued, list[int], str], None]) -> None:
        """Decode every queued request; ``on_finish(item, token ids, "stop"|"length")``
        is called once per request, as soon as it is done."""
        position, batch = 0, None
        with self.torch.inference_mode():
            while position < len(queue) or batch is not None:
                admit = self._admissible(queue, position, batch)
                if admit:
                    new = self._prefill(queue[position:position + admit])
                    position += admit
                    if batch is not None:
                        self._compact(batch)
                    batch = new if batch is None else self._join(batch, new)
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
            new_width = max(width, len(item.ids) + item.request.sampling.max_new_tokens)
            total = rows + count + 1
            if total > 1 and (total > self.max_batch or total * new_width > self.token_budget):
                break
            width, count = new_width, count + 1
        if batch is None:
            return count
        worth_it = min(len(queue) - position, max(1, (rows + count) // REFILL_SHARE))
        return count if count >= worth_it else 0

    def _join(self, batch: _Batch, new: _Batch) -> _Batch:
        torch = self.torch
        width = max(batch.mask.shape[1], new.mask.shape[1])
        masks = [torch.nn.functional.pad(m, (width - m.shape[1], 0)) for m in (batch.mask, new.mask)]
        kv_rows.join_rows(batch.cache, new.cache)
        return _Batch(batch.rows + new.rows, batch.cache, torch.cat(masks), torch.cat([batch.logits, new.logits]))

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
        greedy = batch.logits.argmax(dim=-1).tolist()  # one call for every greedy row, not one per row
        for b, row in enumerate(batch.rows):
            if row.done:
                continue
            token = greedy[b] if row.sampler.greedy else row.sampler.pick(batch.logits[b])
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
        batch.mask = torch.cat([batch.mask, torch.ones((len(batch.rows), 1), dtype=torch.long)], dim=1)
        batch.logits = self.forward(step_ids, batch.mask, batch.mask.sum(-1, keepdim=True) - 1, batch.cache,
                                    self._names(batch.rows))
        for row in batch.rows:
            row.span += 1
        return batch

    def _compact(self, batch: _Batch) -> None:
        """Drop finished rows from the cache, then columns that are padding in every row left."""
        torch = self.torch
        keep = [b for b, row in enumerate(batch.rows) if not row.done]
        if len(keep) == len(batch.rows):
            return
        index = torch.tensor(keep, dtype=torch.long)
        batch.cache.batch_select_indices(index.to(_device(batch.cache)))
        batch.rows, batch.mask, batch.logits = [batch.rows[b] for b in keep], batch.mask[index], batch.logits[index]
        if self.can_join:
            cut = batch.mask.shape[1] - max(r.span for r in batch.rows)
            kv_rows.cut_left(batch.cache, cut)
            batch.mask = batch.mask[:, cut:]

    def _prefill(self, items: list[Queued]) -> _Batch:
        """Run the prompts through the model as one new batch.

        Requests of one strategy share a long prefix (system prompt, exemplars): the
        rendered conversation before the final user turn. Each distinct prefix (per
        adapter) is computed once, in one left-padded batch, and its KV cache is
        copied to the rows that use it. Each row's own suffix is then left-padded
        *after* its prefix: [pads][prefix][pads][suffix]. The mask zeroes the pads
        and positions count only real tokens, so every row sees exactly its own
        prompt at exactly its own positions.
        """
        torch = self.torch
        n = len(items)
        groups: dict[tuple, list[int]] = {}
        for row, item in enumerate(items):
            groups.setdefault((item.adapter_name, tuple(item.ids[: item.prefix_len])), []).append(row)
        # every row keeps at least one suffix token: its logits start the decoding
        prefix_lens = [min(len(key[1]), min(len(items[r].ids) for r in rows) - 1) for key, rows in groups.items()]
        cache = kv_rows.growing_cache()
        group_of_row = [0] * n
        if n == 1 or max(prefix_lens) < MIN_SHARED_PREFIX or len(groups) == n:
            prefix_lens, prefix_mask = [0], torch.zeros((n, 0), dtype=torch.long)
        else:
            for g, rows in enumerate(groups.values()):
                for row in rows:
                    group_of_row[row] = g
            keys = list(groups)
            prefix_ids, group_mask = left_pad([list(k[1][:length]) for k, length in zip(keys, prefix_lens)], self.pad_id)
            names = [k[0] for k in keys] if self.with_names else None
            self.forward(prefix_ids, group_mask, (group_mask.cumsum(-1) - 1).clamp(min=0), cache, names)
            index = torch.tensor(group_of_row, dtype=torch.long)
            cache.batch_select_indices(index.to(_device(cache)))  # repeated rows copy a group's KV
            prefix_mask = group_mask[index]
        suffix_ids, suffix_mask = left_pad([item.ids[prefix_lens[group_of_row[row]]:] for row, item in enumerate(items)],
                                           self.pad_id)
        mask = torch.cat([prefix_mask, suffix_mask], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, prefix_mask.shape[1]:]
        rows = [_Row(item, _RowSampler(item.request, torch), 0, self._grammar(item.request)) for item in items]
        logits = self.forward(suffix_ids, mask, positions, cache, self._names(rows))
        if self.can_join is None:
            self.can_join = kv_rows.joinable(cache)
        first_real = mask.argmax(dim=1)  # argmax returns the first 1 of each row
        for row, first in zip(rows, first_real.tolist()):
            row.span = mask.shape[1] - first
        return _Batch(rows, cache, mask, logits)

    def _grammar(self, request: Request):
        return self.grammars().matcher(request.grammar) if request.grammar else None

    def _names(self, rows: list[_Row]) -> list[str] | None:
        return [r.item.adapter_name for r in rows] if self.with_names else None


def _device(cache):
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


class _RowSampler:
    """Next-token choice for one sampled row: temperature + top-p from the row's own
    generator, so a seeded sample never depends on the rest of the batch. Greedy
    rows (``greedy``) are picked for the whole batch at once, in ``_step``."""

    def __init__(self, request: Request, torch) -> None:
        self.torch = torch
        s = request.sampling
        self.greedy = s.greedy
        self.temperature = s.temperature
        self.top_p = s.top_p
        self.generator = None if self.greedy else torch.Generator().manual_seed(s.seed)

    def pick(self, logits) -> int:
        torch = self.torch
        probs = torch.softmax(logits / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            # keep the smallest prefix whose mass reaches top_p (always at least one token)
            drop = sorted_probs.cumsum(-1) - sorted_probs >= self.top_p
            sorted_probs[drop] = 0.0
            probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=self.generator))
