"""Several base models behind one backend: requests are routed by ``Request.model``.

Contract (the backend contract of :mod:`fitness.backends.base`, per model):
- ``generate(requests)`` groups the requests by model, runs each group through that
  model's own backend (hf or vllm, built from its :class:`BackendSpec`), and returns
  the completions in input order. A group's outputs are what that model's backend
  alone gives for them: batching happens per model, never across models;
- ``""`` and ``"default"`` name the primary model; any other name must be one of the
  configured models (anything else raises InputError naming it, before any load);
- backends are built lazily, on the first request for their model, and at most
  ``max_resident`` are held at once, weighing together at most ``max_resident_bytes``
  (0: no such bound) by their weight files' size (``size_of``; a model alone over
  the bound still loads, alone): the least recently used one is dropped first (its
  memory freed) when another must load. Models already resident are served
  first within a call, so a call never loads a model it could have served before
  evicting it;
- ``count_tokens`` counts with the primary model's tokenizer: chain length is a
  measure of the text, compared across models on one scale;
- ``materialise_lora(gene)`` builds the adapter on the gene's base model
  (``gene.base``; "" = the primary model).
"""

from __future__ import annotations

import gc
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

from fitness.backends.base import Completion, ProgressCallback, Request
from fitness.backends.factory import BackendSpec
from genomes.errors import InputError

PRIMARY_ALIASES = ("", "default")


class MultiModelBackend:
    """See the module docstring. ``specs``: model name -> the spec of its backend;
    ``primary``: the name requests without a model go to; ``build``: spec -> backend
    (:func:`fitness.backends.factory.build_backend_from_spec`, or a fake in tests)."""

    def __init__(self, specs: Mapping[str, BackendSpec], primary: str, max_resident: int = 2,
                 build: Callable[[BackendSpec], object] | None = None, max_resident_bytes: int = 0,
                 size_of: Callable[[BackendSpec], int] | None = None) -> None:
        if primary not in specs:
            raise InputError(f"primary model {primary!r} is not among the configured models ({', '.join(specs)})")
        if max_resident < 1:
            raise InputError("model.max_resident_models: must be >= 1")
        if build is None:
            from fitness.backends.factory import build_backend_from_spec as build
        self.specs, self.primary, self.max_resident, self._build = dict(specs), primary, max_resident, build
        self.max_resident_bytes, self._size_of = max_resident_bytes, size_of or weight_bytes
        self._sizes: dict[str, int] = {}
        self._resident: OrderedDict[str, object] = OrderedDict()  # model name -> backend, oldest first
        self.loads = 0  # backends built so far (evictions make a model load again)
        self._tokenizer = None  # the primary model's, when it is not resident

    # ---- routing -----------------------------------------------------------------------
    def name_of(self, model: str) -> str:
        """The configured model a request or gene names."""
        if model in PRIMARY_ALIASES:
            return self.primary
        if model not in self.specs:
            raise InputError(f"unknown model {model!r} (configured: {', '.join(self.specs)})")
        return model

    def backend(self, model: str = ""):
        """The backend of ``model``, loaded (and another evicted) if need be."""
        name = self.name_of(model)
        if name in self._resident:
            self._resident.move_to_end(name)
            return self._resident[name]
        while self._resident and self._no_room_for(name):
            _, victim = self._resident.popitem(last=False)
            close = getattr(victim, "close", None)
            if close:
                close()
            del victim
            gc.collect()
            _free_device_memory()
        built = self._build(self.specs[name])
        self.loads += 1
        self._resident[name] = built
        return built

    def _no_room_for(self, name: str) -> bool:
        if len(self._resident) >= self.max_resident:
            return True
        if not self.max_resident_bytes:
            return False
        return self._size(name) + sum(self._size(n) for n in self._resident) > self.max_resident_bytes

    def _size(self, name: str) -> int:
        if name not in self._sizes:
            self._sizes[name] = self._size_of(self.specs[name])
        return self._sizes[name]

    @property
    def resident(self) -> tuple[str, ...]:
        """Loaded models, least recently used first."""
        return tuple(self._resident)

    # ---- contract ----------------------------------------------------------------------
    def generate(self, requests: Sequence[Request], progress: ProgressCallback | None = None) -> list[Completion]:
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(self.name_of(r.model), []).append(i)
        # resident models first (most recent last, so it stays resident after the call)
        order = sorted(groups, key=lambda m: (m not in self._resident, self.resident.index(m)
                                              if m in self._resident else 0, m))
        out: list[Completion | None] = [None] * len(requests)
        for name in order:
            indices = groups[name]
            completions = self.backend(name).generate([requests[i] for i in indices], progress=progress)
            for i, c in zip(indices, completions):
                out[i] = c
        return out  # type: ignore[return-value]

    def count_tokens(self, text: str) -> int:
        if self.primary in self._resident:
            return self._resident[self.primary].count_tokens(text)
        # counting must not evict the model that is generating (max_resident 1)
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            from fitness.backends.model_store import resolve_model

            options = self.specs[self.primary].options
            path = resolve_model(options.get("model", "default"), options.get("cache_dir"))
            self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def materialise_lora(self, gene) -> str:
        backend = self.backend(getattr(gene, "base", ""))
        if not hasattr(backend, "materialise_lora"):
            raise InputError("this backend cannot serve LoRA genes")
        return backend.materialise_lora(gene)


def weight_bytes(spec: BackendSpec) -> int:
    """Bytes of a model's weight files (its local directory, after any conversion):
    what loading it costs, give or take the dtype it loads in."""
    from pathlib import Path

    from fitness.backends.model_store import resolve_model

    path = resolve_model(spec.options.get("model", "default"), spec.options.get("cache_dir"))
    files = [path] if Path(path).is_file() else [f for f in Path(path).iterdir()
                                                 if f.suffix in (".safetensors", ".bin", ".gguf", ".pt")]
    return sum(f.stat().st_size for f in files)


def _free_device_memory() -> None:
    """Return an evicted model's GPU memory to the driver (nothing on a CPU)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
