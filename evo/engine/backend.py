"""The backend the engine drives: built from ``config.model`` (hf or vllm, in this
process or sharded over Ray actors), wrapped to count the time spent inside it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from evo.config.sections import RunConfig, model_entry, served_models
from fitness.backends.base import Backend, LoraBackend
from fitness.backends.factory import BackendSpec, build_backend_from_spec
from genomes.errors import InputError


@dataclass
class Counters:
    next_id: int = 0
    rollouts: int = 0
    heldout_rollouts: int = 0  # part of rollouts spent on reporting, not on search
    reused: int = 0
    tokens: int = 0
    backend_s: float = 0.0
    evaluated: int = 0  # individuals evaluated in the current generation
    raced_out: int = 0  # ... of which raced out (evo.engine.racing)
    left_out: int = 0  # children of the current generation the budget left unscored
    started: float = field(default_factory=time.perf_counter)


class TimedBackend:
    """Counts time spent inside the backend (for the overhead figure)."""

    def __init__(self, backend: Backend, counters: Counters) -> None:
        self.backend, self.counters = backend, counters

    def generate(self, requests, progress=None):
        started = time.perf_counter()
        try:
            return self.backend.generate(requests, progress=progress)
        finally:
            self.counters.backend_s += time.perf_counter() - started

    def count_tokens(self, text: str) -> int:
        return self.backend.count_tokens(text)

    def materialise_lora(self, gene) -> str:
        if not isinstance(self.backend, LoraBackend):
            raise InputError("this backend cannot serve LoRA genes")
        return self.backend.materialise_lora(gene)


def backend_spec(config: RunConfig) -> BackendSpec:
    """What ``config.model`` (and ``[models]``) ask for, as a picklable spec (Ray
    actors build from it): one model's backend, or with several models a "multi"
    spec holding one per model, keyed by ``decoding.model`` value."""
    models = served_models(config)
    if len(models) == 1:
        return model_spec(config, models[0])
    return BackendSpec("multi", {"primary": models[0], "models": {name: model_spec(config, name) for name in models},
                                 "max_resident": config.model.max_resident_models,
                                 "max_resident_gb": config.model.max_resident_gb})


def adapter_store_dir(run_dir, gene_model: str):
    """Where a run keeps the adapters of one model's LoRA genes: each model has a store
    of its own (a gene's weights have its model's shapes); the primary's is the run's."""
    return run_dir / "adapters" if gene_model == "default" else run_dir / "adapters" / f"model-{gene_model}"


def model_spec(config: RunConfig, gene_model: str) -> BackendSpec:
    """The backend of one model: ``config.model``'s settings, overridden by the
    model's ``[models.NAME]`` table where it has one."""
    m, p = config.model, config.population
    entry = model_entry(config, gene_model)
    store = adapter_store_dir(config.run_dir, gene_model)
    common = {"model": entry.source, "cache_dir": m.cache_dir or None, "adapter_store": str(store)}
    if m.backend == "vllm":
        # every individual of a generation (and the held-out top) may carry its own adapter
        max_loras = m.max_loras or p.size + p.offspring + config.tasks.heldout_top
        # resident engines share the GPU: each gets its part of the memory share
        resident = min(m.max_resident_models, len(served_models(config)))
        options = {**common, "max_loras": max_loras, "max_lora_rank": m.max_lora_rank,
                   "gpu_memory_utilization": m.gpu_memory_utilization / resident, "seed": config.run.seed,
                   "batch_invariant": m.batch_invariant}
        if entry.max_context:
            options["max_model_len"] = entry.max_context
        if entry.dtype:
            options["dtype"] = entry.dtype
        return BackendSpec("vllm", options)
    options = {**common, "device": m.device, "dtype": entry.dtype or m.dtype, "token_budget": m.token_budget or None}
    if entry.max_context:
        options["max_context"] = entry.max_context
    return BackendSpec("hf", options)


def build_backend(config: RunConfig) -> Backend:
    """The configured backend: hf or vllm, in this process or sharded over Ray actors."""
    m = config.model
    spec = backend_spec(config)
    if m.ray_actors:
        from fitness.backends.ray_pool import RayBackend

        return RayBackend(spec, actors=m.ray_actors, address=m.ray_address or None,
                          cpus_per_actor=m.cpus_per_actor, gpus_per_actor=m.gpus_per_actor)
    return build_backend_from_spec(spec)

