"""Build a backend from a plain, picklable description (what a Ray actor receives).

``BackendSpec(kind, options)``: ``kind`` is ``"hf"`` (transformers + PEFT, CPU or
GPU) or ``"vllm"`` (GPU); ``options`` are the keyword arguments of that backend's
constructor. ``"multi"`` (several models, :mod:`fitness.backends.multi`) takes
``{"primary": name, "models": {name: BackendSpec}, "max_resident": n, "max_resident_gb": x}``. Heavy libraries are imported only by :func:`build_backend_from_spec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from genomes.errors import InputError

BACKEND_KINDS = ("hf", "vllm")


@dataclass(frozen=True)
class BackendSpec:
    kind: str = "hf"
    options: dict[str, Any] = field(default_factory=dict)


def build_backend_from_spec(spec: BackendSpec):
    if spec.kind == "hf":
        from fitness.backends.hf import HFBackend

        return HFBackend(**spec.options)
    if spec.kind == "vllm":
        from fitness.backends.vllm_engine import VLLMBackend

        return VLLMBackend(**spec.options)
    if spec.kind == "multi":
        from fitness.backends.multi import MultiModelBackend

        o = spec.options
        return MultiModelBackend(o["models"], o["primary"], o.get("max_resident", 2),
                                 max_resident_bytes=int(o.get("max_resident_gb", 0) * 2**30))
    raise InputError(f"model.backend: unknown backend {spec.kind!r} (choose from {', '.join(BACKEND_KINDS)})")
