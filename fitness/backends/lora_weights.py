"""Materialise LoRA genes into PEFT adapter directories (the torch side of
``genomes.lora.tensor_spec``).

Contract: the same gene gives bit-identical tensors on CPU in every process (every
tensor comes from its own ``torch.Generator`` seeded by ``genomes.lora.derive``), and
a directory that ``PeftModel.from_pretrained`` and vLLM's ``LoRARequest`` load as
they are. :class:`AdapterStore` caches directories by the gene's weights hash, writes
them atomically (temporary directory, rename) and keeps at most ``max_entries``,
evicting the least recently used.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from genomes.errors import InputError
from genomes.lora import KNOWN_TARGETS, LoraGene, TensorSpec, tensor_spec

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def decoder_linears(model) -> dict[tuple[int, str], tuple[str, object]]:
    """(layer, target) -> (module name, nn.Linear) for every KNOWN_TARGETS linear of a
    decoder layer of ``model``. Works on a model PEFT has already injected LoRA layers
    into: the wrapped ``base_layer`` is the linear, named as before the injection."""
    import torch

    found = {}
    for name, module in model.named_modules():
        parts = name.split(".")
        if parts[-1] == "base_layer":
            parts = parts[:-1]
        if "layers" not in parts or not isinstance(module, torch.nn.Linear) or parts[-1] not in KNOWN_TARGETS:
            continue
        at = parts.index("layers")
        if parts[at + 1].isdigit():
            found[(int(parts[at + 1]), parts[-1])] = (".".join(parts), module)
    return found


def lora_tensors(spec: TensorSpec, shapes: dict[tuple[int, str], tuple[str, int, int]],
                 trained: dict[str, "object"] | None = None) -> dict[str, "object"]:
    """PEFT-named float32 tensors for ``spec``; ``shapes`` maps (layer, target) to
    (module name, in_features, out_features). A trained source starts from the
    ``trained`` tensors (the stored adapter's, by PEFT name) instead of seeds."""
    import torch

    tensors = {}
    for recipe in spec.modules:
        if (recipe.layer, recipe.target) not in shapes:
            raise InputError(f"lora: the model has no {recipe.target} in layer {recipe.layer}")
        name, fan_in, fan_out = shapes[(recipe.layer, recipe.target)]
        key_a, key_b = f"base_model.model.{name}.lora_A.weight", f"base_model.model.{name}.lora_B.weight"
        if recipe.init_seed_a is None:
            if trained is None or key_a not in trained or key_b not in trained:
                raise InputError(f"lora: the trained adapter {spec.trained_hash} has no weights for {name}")
            a, b = trained[key_a].to(torch.float32).clone(), trained[key_b].to(torch.float32).clone()
            if tuple(a.shape) != (spec.rank, fan_in) or tuple(b.shape) != (fan_out, spec.rank):
                raise InputError(f"lora: the trained adapter {spec.trained_hash} does not match the gene's rank "
                                 f"or the model's shapes at {name}")
        else:
            gen = torch.Generator(device="cpu").manual_seed(recipe.init_seed_a)
            a = torch.randn((spec.rank, fan_in), generator=gen, dtype=torch.float32) / math.sqrt(fan_in)
            b = torch.zeros((fan_out, spec.rank), dtype=torch.float32)
        for seed_a, seed_b, sigma in recipe.noise:
            a += sigma * torch.randn((spec.rank, fan_in), generator=torch.Generator(device="cpu").manual_seed(seed_a),
                                     dtype=torch.float32)
            b += sigma * torch.randn((fan_out, spec.rank), generator=torch.Generator(device="cpu").manual_seed(seed_b),
                                     dtype=torch.float32)
        tensors[key_a] = a
        tensors[key_b] = b
    return tensors


def write_adapter(gene: LoraGene, model, out_dir: Path, base_model_path: str = "",
                  trained_dir: Path | None = None) -> None:
    """Materialise ``gene`` into ``out_dir``; a trained source reads its initial
    weights from ``trained_dir`` (the stored adapter)."""
    from peft import LoraConfig
    from safetensors.torch import load_file, save_file

    linears = decoder_linears(model)
    n_layers = 1 + max(layer for layer, _ in linears)
    spec = tensor_spec(gene, n_layers)
    shapes = {key: (name, m.in_features, m.out_features) for key, (name, m) in linears.items()}
    trained = load_file(str(trained_dir / "adapter_model.safetensors")) if trained_dir is not None else None
    save_file(lora_tensors(spec, shapes, trained), str(out_dir / "adapter_model.safetensors"))
    config = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, target_modules=list(spec.targets),
                        layers_to_transform=list(spec.layers_to_transform) if spec.layers_to_transform else None,
                        lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                        base_model_name_or_path=base_model_path or None)
    config.save_pretrained(str(out_dir))


TRAINED_HASH_DIGITS = 32  # hex digits of a trained adapter's content hash


def missing_adapter_files(adapter_dir: str | Path) -> list[str]:
    """The files of :data:`ADAPTER_FILES` that ``adapter_dir`` lacks (empty: a complete adapter)."""
    return [name for name in ADAPTER_FILES if not (Path(adapter_dir) / name).is_file()]


def adapter_hash(adapter_dir: str | Path) -> str:
    """Content hash of a PEFT adapter: its weights file and its config (JSON, sorted)."""
    adapter_dir = Path(adapter_dir)
    missing = missing_adapter_files(adapter_dir)
    if missing:
        raise InputError(f"not a PEFT adapter directory: {adapter_dir} lacks {', '.join(missing)}")
    digest = hashlib.sha256()
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    digest.update(json.dumps(_shape_fields(config, adapter_dir), sort_keys=True).encode())
    with open(adapter_dir / "adapter_model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:TRAINED_HASH_DIGITS]


def _shape_fields(config: dict[str, Any], where: Path) -> dict[str, Any]:
    """The adapter_config fields a LoRA gene mirrors, checked."""
    try:
        rank, alpha = int(config["r"]), float(config["lora_alpha"])
        targets = config["target_modules"]
        targets = [targets] if isinstance(targets, str) else sorted(targets)
        layers = config.get("layers_to_transform")
        layers = [layers] if isinstance(layers, int) else sorted(layers or [])
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{where}/adapter_config.json: not a LoRA config ({e})") from None
    unknown = [t for t in targets if t not in KNOWN_TARGETS]
    if unknown:
        raise InputError(f"{where}/adapter_config.json: target modules {', '.join(unknown)} cannot be a LoRA gene "
                         f"(known: {', '.join(KNOWN_TARGETS)})")
    return {"r": rank, "lora_alpha": alpha, "target_modules": targets, "layers": layers}



DIGEST_FILE = "weights.sha256"  # beside a cached adapter: SHA-256 of its two files


def _files_digest(adapter_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in ADAPTER_FILES:
        digest.update(name.encode())
        digest.update((adapter_dir / name).read_bytes())
    return digest.hexdigest()


class AdapterStore:
    """Materialised adapters on disk, one directory per weights hash."""

    def __init__(self, root: str | Path, max_entries: int = 256, trained_root: str | Path | None = None) -> None:
        self.root = Path(root)
        self.max_entries = max_entries
        # where trained adapters (source "trained") live: RUN_DIR/adapters/trained by default
        self.trained_root = Path(trained_root) if trained_root is not None else self.root / "trained"
        self._verified: set[Path] = set()  # adapters whose files were checked by this process

    def path_for(self, gene: LoraGene, model, base_model_path: str = "") -> Path:
        trained_dir = None
        if gene.source == "trained":
            trained_dir = self.trained_root / gene.trained_hash
            if not all((trained_dir / f).is_file() for f in ADAPTER_FILES):
                raise InputError(f"lora.trained_hash: no trained adapter {gene.trained_hash} in {self.trained_root}")
            self._check_trained(trained_dir, gene.trained_hash)
            if not gene.mutations:  # served as stored; with a chain, its noise goes on top (below)
                return trained_dir
        target = self.root / gene.weights_hash()
        if all((target / f).is_file() for f in ADAPTER_FILES) and self._intact(target):
            os.utime(target)  # recently used
            return target
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
        try:
            write_adapter(gene, model, staging, base_model_path, trained_dir)
            (staging / DIGEST_FILE).write_text(_files_digest(staging) + "\n", encoding="utf-8")
            try:
                os.rename(staging, target)
            except OSError:  # another process materialised the same gene first: same bytes
                if not (target / "adapter_model.safetensors").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._evict(keep=target)
        return target

    def _check_trained(self, trained_dir: Path, trained_hash: str) -> None:
        """A trained adapter is named by its content hash: one that no longer hashes to
        its name is damaged, and no copy of it can be made here (checked once a process)."""
        if trained_dir in self._verified:
            return
        if adapter_hash(trained_dir) != trained_hash:
            raise InputError(f"lora.trained_hash: the trained adapter {trained_dir} is damaged (its files no longer "
                             f"hash to {trained_hash}); restore it, or train it again with evo distill --train")
        self._verified.add(trained_dir)

    def _intact(self, target: Path) -> bool:
        """A cached adapter whose files match the digest written with them (checked once
        a process). A damaged or unverifiable entry is removed, with one warning line,
        and made again: it is a pure function of its gene."""
        if target in self._verified:
            return True
        digest = target / DIGEST_FILE
        if digest.is_file() and digest.read_text(encoding="utf-8").strip() == _files_digest(target):
            self._verified.add(target)
            return True
        print(f"evo: warning: cached adapter {target} is damaged or unverified; making it again",
              file=sys.stderr, flush=True)
        shutil.rmtree(target, ignore_errors=True)
        return False

    def _evict(self, keep: Path) -> None:
        entries = [p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "trained"]
        if len(entries) <= self.max_entries:
            return
        entries.sort(key=lambda p: p.stat().st_mtime if p.exists() else time.time())
        for old in entries[: len(entries) - self.max_entries]:
            if old != keep:
                shutil.rmtree(old, ignore_errors=True)
