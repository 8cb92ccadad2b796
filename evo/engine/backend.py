"""The backend the engine drives: built from ``config.model`` (hf or vllm, in this
process or sharded over Ray actors), wrapped to count the time spent inside it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from evo.config.sections import RunConfig
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
    """What ``config.model`` asks for, as a picklable spec (Ray actors build from it)."""
    m, p = config.model, config.population
    common = {"model": m.name, "cache_dir": m.cache_dir or None, "adapter_store": str(config.run_dir / "adapters")}
    if m.backend == "vllm":
        # every individual of a generation (and the held-out top) may carry its own adapter
        max_loras = m.max_loras or p.size + p.offspring + config.tasks.heldout_top
        return BackendSpec("vllm", {**common, "max_loras": max_loras, "max_lora_rank": m.max_lora_rank,
                                    "gpu_memory_utilization": m.gpu_memory_utilization, "seed": config.run.seed,
                                    "batch_invariant": m.batch_invariant})
    return BackendSpec("hf", {**common, "device": m.device, "dtype": m.dtype, "token_budget": m.token_budget})


def build_backend(config: RunConfig) -> Backend:
    """The configured backend: hf or vllm, in this process or sharded over Ray actors."""
    m = config.model
    spec = backend_spec(config)
    if m.ray_actors:
        from fitness.backends.ray_pool import RayBackend

        return RayBackend(spec, actors=m.ray_actors, address=m.ray_address or None,
                          cpus_per_actor=m.cpus_per_actor, gpus_per_actor=m.gpus_per_actor)
    return build_backend_from_spec(spec)

