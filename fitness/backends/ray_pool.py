"""Ray: shard a generation's requests over N actors, each owning its own backend.

Contract (the backend contract of ``fitness.backends.base``, unchanged):
- ``generate(requests)`` splits the list into one contiguous shard per actor (a
  strategy's requests stay together, so each actor's prefix sharing still works),
  runs the shards in parallel and returns the completions in input order;
- greedy results and seeded samples are functions of the request alone, so the
  output equals a single-process run whatever the sharding (tested on the hf
  backend with two local actors);
- an actor that dies (node lost, out of memory, killed) is replaced by a fresh one
  and its shard is retried, up to ``max_retries`` times per shard; an error raised
  by the backend itself (a missing adapter) is re-raised as it is, not retried.

Actors are created with ``num_cpus`` / ``num_gpus`` per actor (one GPU per actor for
vLLM). Without ``address`` a local Ray instance is started, large enough for the
actors. LoRA genes are materialised by actor 0: on more than one node, put the run
directory (its adapter store) on a shared filesystem. Ray is imported lazily; a
missing Ray is an InputError with the install hint.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from fitness.backends.base import Completion, ProgressCallback, Request
from fitness.backends.factory import BackendSpec, build_backend_from_spec
from genomes.errors import InputError


class _BackendActor:
    """Runs inside a Ray worker process: one backend, built from its spec."""

    def __init__(self, spec: BackendSpec, threads: int) -> None:
        if threads > 0:
            import torch

            torch.set_num_threads(threads)  # actors share the machine's cores
        self.backend = build_backend_from_spec(spec)

    def generate(self, requests: list[Request]) -> list[Completion]:
        return self.backend.generate(requests)

    def count_tokens(self, text: str) -> int:
        return self.backend.count_tokens(text)

    def materialise_lora(self, gene) -> str:
        return self.backend.materialise_lora(gene)

    def pid(self) -> int:
        return os.getpid()


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) slices of ``range(n)``, at most ``shards``, sizes
    differing by at most one, none empty."""
    shards = max(1, min(shards, n))
    base, extra = divmod(n, shards)
    bounds, start = [], 0
    for i in range(shards):
        end = start + base + (1 if i < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


class RayBackend:
    def __init__(self, spec: BackendSpec, actors: int = 2, address: str | None = None, cpus_per_actor: float = 1.0,
                 gpus_per_actor: float = 0.0, max_retries: int = 2) -> None:
        if actors < 1:
            raise InputError(f"model.ray_actors must be >= 1, got {actors}")
        try:
            import ray
        except ImportError:
            raise InputError("model.ray_actors needs Ray: pip install 'evo-reason[ray]'") from None
        self._ray = ray
        if not ray.is_initialized():
            local = {} if address else {"num_cpus": max(os.cpu_count() or 1, math.ceil(actors * cpus_per_actor))}
            ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                     ignore_reinit_error=True, **local)
        self.spec = spec
        self.max_retries = max_retries
        threads = max(1, int(cpus_per_actor)) if gpus_per_actor == 0 else 0
        self._actor_class = ray.remote(num_cpus=cpus_per_actor, num_gpus=gpus_per_actor, max_restarts=0)(_BackendActor)
        self._threads = threads
        self.actors = [self._new_actor() for _ in range(actors)]
        self.replaced = 0  # actors replaced after dying, over this backend's life
        ray.get([a.pid.remote() for a in self.actors])  # fail here, not mid-generation, if a backend cannot load

    def _new_actor(self):
        return self._actor_class.remote(self.spec, self._threads)

    def _replace(self, index: int) -> None:
        try:
            self._ray.kill(self.actors[index], no_restart=True)
        except Exception:  # already gone
            pass
        self.actors[index] = self._new_actor()
        self.replaced += 1

    # ---- contract ------------------------------------------------------------------
    def generate(self, requests: Sequence[Request], progress: ProgressCallback | None = None) -> list[Completion]:
        from ray.exceptions import (
            ActorDiedError,
            ActorUnavailableError,
            RayActorError,
            RayTaskError,
            WorkerCrashedError,
        )

        requests = list(requests)
        if not requests:
            return []
        results: list[Completion | None] = [None] * len(requests)
        bounds = shard_bounds(len(requests), len(self.actors))
        pending = {}  # object ref -> (shard index, actor index, attempt)

        def submit(shard: int, actor: int, attempt: int) -> None:
            start, end = bounds[shard]
            pending[self.actors[actor].generate.remote(requests[start:end])] = (shard, actor, attempt)

        for shard in range(len(bounds)):
            submit(shard, shard, 0)
        while pending:
            [ready], _ = self._ray.wait(list(pending), num_returns=1)
            shard, actor, attempt = pending.pop(ready)
            try:
                shard_out = self._ray.get(ready)
            except RayTaskError as e:  # the backend raised: not a dead actor
                raise e.as_instanceof_cause() from None
            except (ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError) as e:
                if attempt >= self.max_retries:
                    raise RuntimeError(f"Ray actor {actor} died {attempt + 1} times on shard {bounds[shard]}: {e}") from e
                self._replace(actor)
                submit(shard, actor, attempt + 1)
                continue
            start, end = bounds[shard]
            results[start:end] = shard_out
            if progress:
                progress(end - start, tokens=sum(c.completion_tokens for c in shard_out))
        return results  # type: ignore[return-value]

    def count_tokens(self, text: str) -> int:
        return self._tokenizer_count(text)

    def materialise_lora(self, gene) -> str:
        return self._ray.get(self.actors[0].materialise_lora.remote(gene))

    def close(self) -> None:
        for actor in self.actors:
            try:
                self._ray.kill(actor, no_restart=True)
            except Exception:
                pass
        self.actors = []

    def _tokenizer_count(self, text: str) -> int:
        """Token counts from a local copy of the model's tokenizer (no round trip)."""
        if not hasattr(self, "_tokenizer"):
            from transformers import AutoTokenizer

            from fitness.backends.model_store import resolve_model

            options = self.spec.options
            if self.spec.kind == "multi":  # chain length is counted with the primary model's tokenizer
                options = options["models"][options["primary"]].options
            path = resolve_model(options.get("model", "default"), options.get("cache_dir"))
            self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        return len(self._tokenizer.encode(text, add_special_tokens=False))
