"""RNG states as checkpoint data: the engine's ``random.Random`` state as JSON, and
numpy's (and, when loaded, torch's) global generator states as arrays, with a check
that saved states load before anything is restored from them."""

from __future__ import annotations

import sys
from typing import Any


def rng_to_json(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def rng_from_json(data: list) -> tuple:
    version, internal, gauss = data
    return (version, tuple(internal), gauss)


def global_rng_arrays() -> tuple[dict[str, Any], dict[str, Any]]:
    """numpy's (and, when loaded, torch's) global RNG state: (arrays, JSON scalars).
    The loop itself never draws from them; they are saved so that user code or
    libraries that do see the same streams after a resume."""
    import numpy as np

    name, keys, pos, has_gauss, cached = np.random.get_state()
    arrays = {"numpy_keys": np.asarray(keys, dtype=np.uint32)}
    scalars = {"numpy": [name, int(pos), int(has_gauss), float(cached)]}
    if "torch" in sys.modules:
        import torch

        arrays["torch_cpu"] = torch.get_rng_state().numpy().copy()
    return arrays, scalars


def restore_global_rngs(arrays: dict[str, Any], scalars: dict[str, Any]) -> None:
    import numpy as np

    name, pos, has_gauss, cached = scalars["numpy"]
    np.random.set_state((name, arrays["numpy_keys"], pos, has_gauss, cached))
    if "torch_cpu" in arrays:
        import torch

        torch.set_rng_state(torch.from_numpy(arrays["torch_cpu"].copy()))


def check_global_rngs(arrays: dict[str, Any], scalars: dict[str, Any]) -> None:
    """Raise (ValueError, TypeError, RuntimeError, KeyError) if the saved states would
    not load, without touching the global generators: a damaged file must be found
    while an older checkpoint can still be used."""
    import numpy as np

    name, pos, has_gauss, cached = scalars["numpy"]
    np.random.RandomState().set_state((name, arrays["numpy_keys"], pos, has_gauss, cached))
    if "torch_cpu" in arrays:
        state = arrays["torch_cpu"]
        if state.dtype != np.uint8 or state.ndim != 1:
            raise ValueError("torch RNG state must be a flat uint8 array")
        import torch

        torch.Generator().set_state(torch.from_numpy(state.copy()))  # a scratch generator validates it
