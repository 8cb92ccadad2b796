"""transformers + PEFT backend (CPU or GPU). Implements ``fitness.backends.base``.

How a call runs:
1. every request is rendered with the model's chat template (plus its prefill) and
   tokenised;
2. requests are sorted by adapter and prompt tokens, so that one strategy's requests
   (which share the system prompt and exemplars) sit together in the queue;
3. the queue is decoded with continuous batching (:mod:`fitness.backends.hf_decode`):
   a finished row is returned at once, its slot freed once a quarter of the batch
   has finished or new requests join, and new requests are prefilled into free
   slots: a prefix shared by the requests admitted together is computed once,
   prompts of very different lengths are prefilled by separate forwards, and each
   row samples from its own ``torch.Generator``. We do not
   use ``model.generate``: one batch mixes temperatures, top-p, token limits, seeds
   and adapters;
4. a request with a grammar (constrained decoding) is masked by it at every step
   (:mod:`fitness.backends.grammar_rows`);
5. requests with different adapters share a batch through PEFT's ``adapter_names``;
   adapters are loaded once, named by content hash, and evicted least-recently-used
   beyond ``max_loaded_adapters``. Requests on the base weights run in a batch of their
   own on the lean forward, PEFT loaded or not (through PEFT they ran 2.5-3.6x slower);
   adapter requests run on it too, each row adding its adapter's LoRA deltas as PEFT
   does (:mod:`fitness.backends.lean_lora`), unless an adapter is of a kind it does
   not serve (DoRA and other variants, LoRA on embeddings or the head): then PEFT.

A tokenizer without a chat template (pretrained models, some GGUF files) gets one
from :mod:`fitness.backends.chat_templates`. ``max_context`` caps prompt + generated
tokens: a request's token limit shrinks to fit, and a prompt that alone fills the
context gets an empty completion (finish reason "length", scored 0), never an error.

``dtype``: ``bfloat16`` runs the matmuls on the CPU's bf16 units (AMX, AVX512-BF16)
where present: several times the float32 throughput, with greedy outputs that can
differ from float32 ones (docs/benchmarks.md measures both, paired). There the
weights are pre-packed for those units (:mod:`fitness.backends.packed`), and a
Llama model without adapters runs a lean forward of its own
(:mod:`fitness.backends.lean_llama`). ``lean_forward=False`` / ``packed_weights=False``
turn them off (benchmarks compare; results are the same). On the lean forward,
decode steps also read a prompt prefix that several rows share once for all of them
(``shared_prefix_attention``; the same function, rounded differently: off, the lean
forward's logits equal transformers' bit for bit).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from fitness.backends.base import Completion, ProgressCallback, Request
from fitness.backends.hf_decode import ContinuousDecoder, Queued
from fitness.backends.model_store import resolve_dtype, resolve_model
from genomes.errors import InputError

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in adapter_names


class HFBackend:
    """Batched generation with transformers; see the module docstring.

    ``token_budget`` bounds padded tokens in the running batch (memory and padding
    waste); ``max_batch`` bounds its rows (None: 32768 and 96 where shared prefixes
    are read once, else 16384 and 64); ``dtype``: see the module docstring and
    :func:`fitness.backends.model_store.resolve_dtype`.
    """

    def __init__(
        self,
        model: str = "default",
        cache_dir: str | Path | None = None,
        device: str = "cpu",
        dtype: str = "auto",
        token_budget: int | None = None,
        max_batch: int | None = None,
        max_loaded_adapters: int = 64,
        adapter_store: str | Path | None = None,
        max_context: int = 0,
        lean_forward: bool = True,
        packed_weights: bool = True,
        shared_prefix_attention: bool = True,
    ) -> None:
        path = resolve_model(model, cache_dir)  # before the heavy imports: bad paths fail fast
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own progress display is the one that matters
        self._torch = torch
        self.model_path = path
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype, device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            loaded = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, self.dtype), local_files_only=True)
        except MemoryError:
            raise
        except Exception as e:  # damaged or foreign files (safetensors, json, ...): one line, not a trace
            raise InputError(f"model {model!r} does not load from {path}: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}") from None
        self.tokenizer.padding_side = "left"
        from fitness.backends.chat_templates import ensure_chat_template

        self._turn_end_ids = ensure_chat_template(self.tokenizer)
        self.max_context = max_context
        self.model = loaded.to(self.device)
        self.model.eval()
        self.base_model = self.model
        from fitness.backends.lean_llama import lean_forward_for
        from fitness.backends.packed import pack_linears

        if packed_weights:  # bf16 on a CPU with bf16 units; each layer packed on first use
            pack_linears(self.model.modules())
        self._lean = lean_forward_for(self.model) if lean_forward and packed_weights else None
        self.shared_prefix_attention = shared_prefix_attention and self._lean is not None
        self.token_budget, self.max_batch = token_budget, max_batch  # None: batch_limits() picks
        self.max_loaded_adapters = max_loaded_adapters
        from fitness.backends.lora_weights import AdapterStore
        from fitness.backends.model_store import default_adapter_store

        self.adapter_store = AdapterStore(adapter_store or default_adapter_store())
        self._adapters: OrderedDict[str, str] = OrderedDict()  # adapter dir -> loaded name
        self._lora = None  # lean_lora.LoraLayers of the loaded adapters, made on first need
        self._prefix_cache: dict[tuple[str, str | None], list[int]] = {}
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.stop_ids = self._stop_token_ids()
        self._grammars = None  # grammar_rows.GrammarCompiler, on the first constrained request

    # ---- contract ------------------------------------------------------------------
    def materialise_lora(self, gene) -> str:
        """The PEFT directory of a LoRA gene, built on first use (cached by weights hash)."""
        return str(self.adapter_store.path_for(gene, self.base_model, str(self.model_path)))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def generate(self, requests: Sequence[Request], progress: ProgressCallback | None = None) -> list[Completion]:
        adapter_names = self._load_adapters({r.adapter for r in requests if r.adapter})
        queue = [self._encode(i, r, adapter_names.get(r.adapter, BASE_ADAPTER)) for i, r in enumerate(requests)]
        results: list[Completion | None] = [None] * len(requests)
        if self.max_context:
            queue = self._fit_context(queue, results, progress)
        # lexicographic order puts requests that share a prompt prefix (one strategy's
        # system prompt and exemplars) side by side, so one prefill computes it once
        queue.sort(key=lambda q: (q.request.adapter or "", q.ids, q.index))

        def finish(item: Queued, ids: list[int], reason: str) -> None:
            text = item.request.prefill + self.tokenizer.decode(ids, skip_special_tokens=True)
            results[item.index] = Completion(text, len(item.ids), len(ids), reason)
            if progress:
                progress(1, tokens=len(ids))

        peft_loaded = self.model is not self.base_model
        if peft_loaded and self._lean is not None:
            # base-weight requests keep the lean forward, which reads its own packed base
            # weights and never PEFT's layers: through PEFT they ran 2.5-3.6x slower (bf16);
            # adapter requests take it too, with their LoRA deltas, where it serves them all
            lean_queue = [q for q in queue if q.request.adapter is None]
            queue = [q for q in queue if q.request.adapter is not None]
            if lean_queue:
                self._decode(lean_queue, finish, lean=True)
            if queue and all(self._lean_lora().serves(q.adapter_name) for q in queue):
                self._decode(queue, finish, lean=True, names=True)
                queue = []
        if queue:
            self._decode(queue, finish, lean=not peft_loaded, names=peft_loaded)
        return results  # type: ignore[return-value]

    def _decode(self, queue: list, finish, lean: bool, names: bool = False) -> None:
        """One continuous-batching run. ``lean``: the lean forward (shared prefixes read
        once where configured), with each row's LoRA deltas when ``names``; otherwise
        every row names its adapter and the batch goes through PEFT (transformers' forward)."""
        share = self.shared_prefix_attention and lean  # shared_prefix_attention implies a lean forward
        forward = functools.partial(self._forward, lora_on_lean=True) if lean and names else self._forward
        decoder = ContinuousDecoder(forward, self.pad_id, self.stop_ids, *self.batch_limits(share),
                                    with_names=names, grammars=self._grammar_compiler,
                                    share_prefix_attention=share)
        decoder.run(queue, finish)

    def _lean_lora(self):
        """The PEFT model's LoRA modules as the lean forward reads them (rebuilt after adapters load or go)."""
        if self._lora is None:
            from fitness.backends.lean_lora import lora_layers

            self._lora = lora_layers(self.base_model, self.base_model.config.num_hidden_layers)
        return self._lora

    def batch_limits(self, share_prefix_attention: bool = False) -> tuple[int, int]:
        """(token budget, rows) of a running batch: the configured ones, or where None,
        32768 and 96 when shared prefixes are read once (a row then costs little: the
        bigger batch measured ~15 % faster on bench_workload's requests), else 16384
        and 64 (without it, bigger batches measured slower: docs/benchmarks.md)."""
        return (self.token_budget or (32_768 if share_prefix_attention else 16_384),
                self.max_batch or (96 if share_prefix_attention else 64))

    # ---- preparation ---------------------------------------------------------------
    def _fit_context(self, queue: list[Queued], results: list, progress) -> list[Queued]:
        """Shrink token limits to ``max_context``; answer prompts that fill it at once."""
        kept = []
        for item in queue:
            room = self.max_context - len(item.ids)
            if room <= 0:
                results[item.index] = Completion(item.request.prefill, len(item.ids), 0, "length")
                if progress:
                    progress(1, tokens=0)
                continue
            if item.request.sampling.max_new_tokens > room:
                sampling = dataclasses.replace(item.request.sampling, max_new_tokens=room)
                item = dataclasses.replace(item, request=dataclasses.replace(item.request, sampling=sampling))
            kept.append(item)
        return kept

    def _stop_token_ids(self) -> frozenset[int]:
        ids = {self.tokenizer.eos_token_id, *self._turn_end_ids}
        configured = self.model.generation_config.eos_token_id
        ids.update(configured if isinstance(configured, list) else [configured])
        return frozenset(i for i in ids if i is not None)

    def _encode(self, index: int, request: Request, adapter_name: str = BASE_ADAPTER) -> Queued:
        prompt = self.tokenizer.apply_chat_template(
            list(request.messages), add_generation_prompt=True, tokenize=False
        )
        ids = self.tokenizer.encode(prompt + request.prefill, add_special_tokens=False)
        return Queued(index, ids, request, self._prefix_len(request, ids), adapter_name)

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
                with warnings.catch_warnings():
                    # PEFT reads transformers' deprecated ``is_gradient_checkpointing`` when it
                    # wraps a model: a FutureWarning in every run that loads an adapter, ours to hide
                    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
                    self.model = PeftModel.from_pretrained(self.base_model, path, adapter_name=name,
                                                           is_trainable=False)
                self.model.eval()
            elif name not in self.model.peft_config:
                self.model.load_adapter(path, adapter_name=name, is_trainable=False)
            self._adapters[path] = name
            self._lora = None  # new LoRA modules, or an evicted adapter's name reused
            self._evict(keep=paths)
        return {p: self._adapters[p] for p in paths}

    def _evict(self, keep: set[str]) -> None:
        while len(self._adapters) > self.max_loaded_adapters:
            victim = next(p for p in self._adapters if p not in keep)
            name = self._adapters.pop(victim)
            if name not in self._adapters.values():
                self.model.delete_adapter(name)

    def _grammar_compiler(self):
        """The llguidance view of the tokenizer, made when a request first needs it."""
        if self._grammars is None:
            from fitness.backends.grammar_rows import GrammarCompiler

            vocab = self.model.get_output_embeddings().weight.shape[0]
            self._grammars = GrammarCompiler(self.tokenizer, vocab, self.stop_ids)
        return self._grammars

    @functools.cached_property
    def _cache_kwarg(self) -> str:
        """The name the model's forward takes its KV cache by: ``cache`` in current
        transformers (``past_key_values`` is deprecated there and warns on every call),
        ``past_key_values`` in older releases."""
        base = self.base_model
        return "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"

    def _forward(self, ids, mask, positions, cache, adapter_names: list[str] | None, shared=None,
                 ragged_prefill: bool = False, lora_on_lean: bool = False):
        """One model call; returns CPU logits of each row's last position: float32, or
        bf16 from :mod:`fitness.backends.lean_llama`, which Llama models in bf16 take
        without adapters or with those :mod:`fitness.backends.lean_lora` serves (the same logits, fewer ops, no float copy; with ``shared`` prefix spans, a decode step reads
        each shared prefix once, which changes rounding only). Transformers' forward
        ignores ``shared``: every row's cache holds its own copy of the prefix; and ``ragged_prefill`` (the lean
        forward's prefill kernel, rounding as flash does). ``lora_on_lean``: rows naming
        adapters take the lean forward too, with their LoRA deltas (``_decode`` checked that it serves them)."""
        if self._lean is not None and adapter_names is None:  # base weights, PEFT loaded or not
            return self._lean(ids, mask, positions, cache, shared, ragged_prefill)
        if lora_on_lean:
            # several adapters grouped where the batch rounds differently anyway (shared-prefix attention)
            lora = self._lean_lora().rows(adapter_names, BASE_ADAPTER, grouped=shared is not None or ragged_prefill)
            return self._lean(ids, mask, positions, cache, shared, ragged_prefill, lora=lora)
        extra = {"adapter_names": adapter_names} if adapter_names is not None else {}
        out = self.model(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device), use_cache=True, **{self._cache_kwarg: cache},
            logits_to_keep=1, **extra,  # the full-vocab projection of every prompt position is wasted work
        )
        return out.logits[:, -1, :].float().cpu()


def _shared_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
