"""transformers + PEFT backend (CPU or GPU). Implements ``fitness.backends.base``.

How a call runs:
1. every request is rendered with the model's chat template (plus its prefill) and
   tokenised;
2. requests are sorted by prompt tokens (so one strategy's requests sit together)
   and cut into chunks whose padded size (rows x (longest prompt + largest
   max_new_tokens)) fits ``token_budget``; a prefix shared by a whole chunk is
   computed once;
3. each chunk is decoded with our own left-padded KV-cache loop. We do not use
   ``model.generate`` because one chunk mixes requests with different temperatures,
   top-p, token limits, seeds and adapters; the loop samples each row from its own
   ``torch.Generator`` (so a seeded sample does not depend on what else is in the
   batch) and drops rows from the batch as they finish;
4. requests with different adapters share a chunk through PEFT's ``adapter_names``;
   adapters are loaded once, named by content hash, and evicted least-recently-used
   beyond ``max_loaded_adapters``.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fitness.backends.base import Completion, ProgressCallback, Request
from fitness.backends.model_store import resolve_model
from genomes.errors import InputError

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in adapter_names
MIN_SHARED_PREFIX = 8  # shorter shared prefixes are not worth a separate forward pass


@dataclass
class _Encoded:
    index: int
    ids: list[int]
    request: Request
    prefix_len: int  # leading tokens that render the conversation before the last user turn


class HFBackend:
    """Batched generation with transformers; see the module docstring.

    ``token_budget`` bounds padded tokens per chunk (memory and padding waste);
    ``max_batch`` bounds rows per chunk.
    """

    def __init__(
        self,
        model: str = "default",
        cache_dir: str | Path | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        token_budget: int = 16_384,
        max_batch: int = 64,
        max_loaded_adapters: int = 64,
        adapter_store: str | Path | None = None,
    ) -> None:
        path = resolve_model(model, cache_dir)  # before the heavy imports: bad paths fail fast
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own progress display is the one that matters
        self._torch = torch
        self.model_path = path
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.tokenizer.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(
            path, dtype=getattr(torch, dtype), local_files_only=True
        ).to(self.device)
        self.model.eval()
        self.base_model = self.model
        self.token_budget = token_budget
        self.max_batch = max_batch
        self.max_loaded_adapters = max_loaded_adapters
        from fitness.backends.lora_weights import AdapterStore
        from fitness.backends.model_store import default_cache_dir

        self.adapter_store = AdapterStore(adapter_store or default_cache_dir() / "adapters")
        self._adapters: OrderedDict[str, str] = OrderedDict()  # adapter dir -> loaded name
        self._prefix_cache: dict[tuple[str, str | None], list[int]] = {}
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.stop_ids = self._stop_token_ids()

    # ---- contract ------------------------------------------------------------------
    def materialise_lora(self, gene) -> str:
        """The PEFT directory of a LoRA gene, built on first use (cached by weights hash)."""
        return str(self.adapter_store.path_for(gene, self.base_model, str(self.model_path)))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def generate(self, requests: Sequence[Request], progress: ProgressCallback | None = None) -> list[Completion]:
        encoded = [self._encode(i, r) for i, r in enumerate(requests)]
        adapter_names = self._load_adapters({r.adapter for r in requests if r.adapter})
        results: list[Completion | None] = [None] * len(requests)
        for chunk in self._chunks(encoded):
            names = [adapter_names.get(e.request.adapter, BASE_ADAPTER) for e in chunk]
            outputs = self._decode_chunk(chunk, names)
            for e, (ids, reason) in zip(chunk, outputs):
                text = e.request.prefill + self.tokenizer.decode(ids, skip_special_tokens=True)
                results[e.index] = Completion(text, len(e.ids), len(ids), reason)
            if progress:
                progress(len(chunk))
        return results  # type: ignore[return-value]

    # ---- preparation ---------------------------------------------------------------
    def _stop_token_ids(self) -> frozenset[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = self.model.generation_config.eos_token_id
        ids.update(configured if isinstance(configured, list) else [configured])
        return frozenset(i for i in ids if i is not None)

    def _encode(self, index: int, request: Request) -> _Encoded:
        prompt = self.tokenizer.apply_chat_template(
            list(request.messages), add_generation_prompt=True, tokenize=False
        )
        ids = self.tokenizer.encode(prompt + request.prefill, add_special_tokens=False)
        return _Encoded(index, ids, request, self._prefix_len(request, ids))

    def _prefix_len(self, request: Request, ids: list[int]) -> int:
        if len(request.messages) < 2:
            return 0
        history = self.tokenizer.apply_chat_template(list(request.messages[:-1]), tokenize=False)
        key = (history, request.adapter)
        if key not in self._prefix_cache:  # one strategy renders the same history for every task
            self._prefix_cache[key] = self.tokenizer.encode(history, add_special_tokens=False)
            if len(self._prefix_cache) > 4096:
                self._prefix_cache.pop(next(iter(self._prefix_cache)))
        return _shared_len(ids, self._prefix_cache[key])

    def _chunks(self, encoded: list[_Encoded]) -> list[list[_Encoded]]:
        """Longest prompts first, greedily packed under the token budget."""
        # lexicographic order puts requests that share a prompt prefix (one strategy's
        # system prompt and exemplars) side by side, so a chunk can compute it once
        ordered = sorted(encoded, key=lambda e: (e.request.adapter or "", e.ids, e.index))
        chunks: list[list[_Encoded]] = []
        current: list[_Encoded] = []
        width = 0
        for e in ordered:
            row = len(e.ids) + e.request.sampling.max_new_tokens
            new_width = max(width, row)
            if current and (len(current) + 1 > self.max_batch or (len(current) + 1) * new_width > self.token_budget):
                chunks.append(current)
                current, new_width = [], row
            current.append(e)
            width = new_width
        if current:
            chunks.append(current)
        return chunks

    # ---- adapters --------------------------------------------------------------------
    def _load_adapters(self, paths: set[str]) -> dict[str, str]:
        if not paths:
            return {}
        if len(paths) > self.max_loaded_adapters:
            raise ValueError(f"{len(paths)} distinct adapters in one call; max_loaded_adapters={self.max_loaded_adapters}")
        from peft import PeftModel

        for path in sorted(paths):
            if path in self._adapters:
                self._adapters.move_to_end(path)
                continue
            weights = Path(path) / "adapter_model.safetensors"
            if not weights.is_file():
                raise InputError(f"adapter directory has no adapter_model.safetensors: {path}")
            # named by content: a rewritten adapter at the same path is a new adapter
            name = "a" + hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
            if self.model is self.base_model:
                self.model = PeftModel.from_pretrained(self.base_model, path, adapter_name=name, is_trainable=False)
                self.model.eval()
            elif name not in self.model.peft_config:
                self.model.load_adapter(path, adapter_name=name, is_trainable=False)
            self._adapters[path] = name
            self._evict(keep=paths)
        return {p: self._adapters[p] for p in paths}

    def _evict(self, keep: set[str]) -> None:
        while len(self._adapters) > self.max_loaded_adapters:
            victim = next(p for p in self._adapters if p not in keep)
            name = self._adapters.pop(victim)
            if name not in self._adapters.values():
                self.model.delete_adapter(name)

    # ---- decoding --------------------------------------------------------------------
    def _decode_chunk(self, chunk: list[_Encoded], adapter_names: list[str]) -> list[tuple[list[int], str]]:
        torch = self._torch
        n = len(chunk)
        samplers = [_RowSampler(e.request, torch) for e in chunk]
        budgets = [e.request.sampling.max_new_tokens for e in chunk]
        outputs: list[list[int]] = [[] for _ in chunk]
        reasons = ["length"] * n
        alive = list(range(n))  # chunk rows still decoding, in batch order
        extra = {"adapter_names": adapter_names} if self.model is not self.base_model else {}

        with torch.inference_mode():
            cache, mask, logits = self._prefill(chunk, extra)
            while True:
                next_ids = [samplers[row].pick(logits[b]) for b, row in enumerate(alive)]
                still: list[int] = []  # batch positions that keep decoding
                for b, (row, token) in enumerate(zip(alive, next_ids)):
                    outputs[row].append(token)
                    if token in self.stop_ids:
                        reasons[row] = "stop"
                    elif len(outputs[row]) < budgets[row]:
                        still.append(b)
                if not still:
                    break
                if len(still) < len(alive):  # shrink the batch: finished rows cost nothing more
                    keep = torch.tensor(still, dtype=torch.long)
                    cache.batch_select_indices(keep.to(self.device))
                    mask = mask[keep]
                    if extra:
                        extra = {"adapter_names": [extra["adapter_names"][i] for i in still]}
                alive = [alive[b] for b in still]
                step_ids = torch.tensor([[outputs[row][-1]] for row in alive], dtype=torch.long)
                mask = torch.cat([mask, torch.ones((len(alive), 1), dtype=torch.long)], dim=1)
                logits = self._forward(step_ids, mask, mask.sum(-1, keepdim=True) - 1, cache, extra)
        return [(outputs[i], reasons[i]) for i in range(n)]

    def _prefill(self, chunk: list[_Encoded], extra: dict):
        """Run the prompts through the model; returns (cache, attention mask, last logits).

        Requests of one strategy share a long prefix (system prompt, exemplars): the
        rendered conversation before the final user turn. Each distinct prefix in the
        chunk (per adapter) is computed once, in one left-padded batch, and its KV
        cache is copied to the rows that use it. Each row's own suffix is then
        left-padded *after* its prefix: [pads][prefix][pads][suffix]. The mask zeroes
        the pads and positions count only real tokens, so every row sees exactly its
        own prompt at exactly its own positions.
        """
        torch = self._torch
        from transformers import DynamicCache

        n = len(chunk)
        names = extra.get("adapter_names", [BASE_ADAPTER] * n)
        groups: dict[tuple, list[int]] = {}
        for row, e in enumerate(chunk):
            groups.setdefault((names[row], tuple(e.ids[: e.prefix_len])), []).append(row)
        # every row keeps at least one suffix token: its logits start the decoding
        prefix_lens = [min(len(key[1]), min(len(chunk[r].ids) for r in rows) - 1) for key, rows in groups.items()]
        cache = DynamicCache()
        if n == 1 or max(prefix_lens) < MIN_SHARED_PREFIX or len(groups) == n:
            group_of_row, prefix_lens, prefix_mask = [0] * n, [0], torch.zeros((n, 0), dtype=torch.long)
        else:
            group_of_row = [0] * n
            for g, rows in enumerate(groups.values()):
                for row in rows:
                    group_of_row[row] = g
            keys = list(groups)
            prefix_ids, group_mask = _left_pad([list(k[1][:length]) for k, length in zip(keys, prefix_lens)], self.pad_id, torch)
            group_extra = {"adapter_names": [k[0] for k in keys]} if extra else {}
            self._forward(prefix_ids, group_mask, (group_mask.cumsum(-1) - 1).clamp(min=0), cache, group_extra)
            index = torch.tensor(group_of_row, dtype=torch.long)
            cache.batch_select_indices(index.to(self.device))  # repeated indices copy a group's KV to its rows
            prefix_mask = group_mask[index]
        suffix_ids, suffix_mask = _left_pad(
            [e.ids[prefix_lens[group_of_row[row]]:] for row, e in enumerate(chunk)], self.pad_id, torch
        )
        mask = torch.cat([prefix_mask, suffix_mask], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, prefix_mask.shape[1]:]
        logits = self._forward(suffix_ids, mask, positions, cache, extra)
        return cache, mask, logits

    @functools.cached_property
    def _cache_kwarg(self) -> str:
        """The name the model's forward takes its KV cache by: ``cache`` in current
        transformers (``past_key_values`` is deprecated there and warns on every call),
        ``past_key_values`` in older releases."""
        base = self.base_model
        return "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"

    def _forward(self, ids, mask, positions, cache, extra: dict):
        """One model call; returns float32 CPU logits of each row's last position."""
        out = self.model(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device), use_cache=True, **{self._cache_kwarg: cache},
            logits_to_keep=1, **extra,  # the full-vocab projection of every prompt position is wasted work
        )
        return out.logits[:, -1, :].float().cpu()


def _left_pad(rows: list[list[int]], pad_id: int, torch):
    """(ids, mask) tensors with every row right-aligned."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
    return ids, mask


def _shared_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class _RowSampler:
    """Next-token choice for one row: greedy, or temperature + top-p from the row's
    own generator, so a seeded sample never depends on the rest of the batch."""

    def __init__(self, request: Request, torch) -> None:
        self.torch = torch
        s = request.sampling
        self.greedy = s.greedy
        self.temperature = s.temperature
        self.top_p = s.top_p
        self.generator = None if self.greedy else torch.Generator().manual_seed(s.seed)

    def pick(self, logits) -> int:
        torch = self.torch
        if self.greedy:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            # keep the smallest prefix whose mass reaches top_p (always at least one token)
            drop = sorted_probs.cumsum(-1) - sorted_probs >= self.top_p
            sorted_probs[drop] = 0.0
            probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=self.generator))
