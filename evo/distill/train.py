"""`evo distill --train`: TRL ``DPOTrainer`` + a PEFT LoRA on the base model.

How the loss weights of evolution map onto the training loss::

    loss = L_DPO(chosen ≻ rejected)  +  w_sft · L_SFT(chosen)      w_sft = γ / ((α + β) / 2)

- β (L_constrained, a verified answer) and α (L_reason, correct and short chains)
  decide which preferences exist: β > 0 makes pairs against wrong answers, α > 0
  pairs against much longer correct chains, and α picks the chosen side (the
  shortest correct chain). Their common weight is DPO's sigmoid loss (TRL
  ``loss_type="sigmoid"``, weight 1).
- γ (L_response, a well-formed explanation) becomes the SFT (negative log-likelihood)
  term on the chosen completion, which carries the well-formed response block:
  TRL ``loss_type="sft"`` weighted relative to the mean of α and β, so the defaults
  (α = β = 1, γ = 0.2) give w_sft = 0.2 and γ = 0 trains pure DPO.
- δ (L_diff, working at the edge of ability) has no training counterpart: the tasks in
  the journal were already drawn around the curriculum frontier, which is what δ
  rewarded; every pair counts once.

DPO's own temperature (TRL ``beta``) is ``TrainSettings.dpo_beta``: a different β
from the loss weight. The reference model is the base model with the adapter
switched off (PEFT), so no second copy of the weights is held.

The adapter is saved in PEFT format in the run's adapter store,
``RUN_DIR/adapters/trained/<hash>/`` (``adapter_config.json``,
``adapter_model.safetensors``, ``README.md`` model card, ``training.json``), where
``<hash>`` is the content hash a LoRA gene with ``source = "trained"`` refers to.
TRL, datasets and torch are imported lazily; without TRL, ``--train`` fails with
an install hint before anything loads.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fitness.backends.lora_weights import (
    _shape_fields,
    adapter_hash,
)
from genomes.errors import InputError
from genomes.lora import KNOWN_TARGETS, RANK_RANGE, LoraGene

TRAINED_DIR = "trained"


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 40  # optimiser steps
    batch_size: int = 4  # pairs per step
    learning_rate: float = 2e-4
    rank: int = 8
    lora_alpha: float = 16.0
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    dpo_beta: float = 0.1  # DPO's temperature (TRL `beta`), not the loss weight β
    max_length: int = 768  # prompt + completion tokens; longer pairs are truncated
    seed: int = 0

    def check(self) -> None:
        for name in ("steps", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not RANK_RANGE[0] <= self.rank <= RANK_RANGE[1]:
            raise InputError(f"--rank must be in [{RANK_RANGE[0]}, {RANK_RANGE[1]}], got {self.rank}")
        for name in ("learning_rate", "lora_alpha", "dpo_beta"):
            if not getattr(self, name) > 0:
                raise InputError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        unknown = [t for t in self.targets if t not in KNOWN_TARGETS]
        if not self.targets or unknown:
            raise InputError(f"--targets: unknown module {', '.join(unknown) or '(none given)'}; "
                             f"choose from {', '.join(KNOWN_TARGETS)}")


def sft_weight(alpha: float, beta: float, gamma: float) -> float:
    """w_sft = γ / ((α + β) / 2); see the module docstring."""
    if alpha + beta <= 0:
        raise InputError("loss weights: α + β must be > 0 to train on preferences")
    return gamma / ((alpha + beta) / 2)


def require_trl() -> None:
    missing = [m for m in ("trl", "datasets") if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"--train needs {' and '.join(missing)}: pip install 'evo-reason[trl]'")


@dataclass(frozen=True)
class TrainedAdapter:
    path: Path  # RUN_DIR/adapters/trained/<hash>
    trained_hash: str
    gene: LoraGene  # an enabled gene with source "trained" that resolves to ``path``
    record: dict[str, Any]  # what training.json holds


def train_adapter(rows: list[dict[str, Any]], run_dir: str | Path, weights: dict[str, float],
                  settings: TrainSettings = TrainSettings(), model: str = "default", cache_dir: str | None = None,
                  device: str = "cpu", log=None) -> TrainedAdapter:
    """Train a LoRA adapter with DPO (+ SFT) on TRL preference ``rows`` and store it in
    ``run_dir``'s adapter store. Deterministic for a given ``settings.seed`` on CPU."""
    settings.check()
    require_trl()
    if not rows:
        raise InputError("no pairs to train on")
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOTrainer

    from fitness.backends.model_store import resolve_model

    w_sft = sft_weight(weights["alpha"], weights["beta"], weights["gamma"])
    model_dir = resolve_model(model, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(settings.seed)  # the LoRA A initialisation
    base = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    lora = LoraConfig(r=settings.rank, lora_alpha=settings.lora_alpha, target_modules=list(settings.targets),
                      lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    adapters = Path(run_dir) / "adapters"
    adapters.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".train-", dir=adapters))
    started = time.perf_counter()
    try:
        trainer = DPOTrainer(model=base, args=_dpo_config(settings, w_sft, work, device, quiet=log is None),
                             train_dataset=Dataset.from_list(rows), processing_class=tokenizer, peft_config=lora)
        output = trainer.train()
        staging = work / "adapter"
        trainer.model.save_pretrained(str(staging))
        history = [{k: v for k, v in entry.items() if isinstance(v, (int, float))} for entry in trainer.state.log_history]
        trained_hash = adapter_hash(staging)
        record = {
            "trained_hash": trained_hash, "pairs": len(rows), "settings": asdict(settings),
            "loss_weights": dict(weights), "training_loss": ["sigmoid (DPO)"] + (["sft"] if w_sft > 0 else []),
            "sft_weight": w_sft, "train_loss": output.training_loss,
            "wall_s": round(time.perf_counter() - started, 1), "log": history,
            "base_model": str(model_dir),
        }
        target = _store(staging, record, adapters / TRAINED_DIR / trained_hash)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return TrainedAdapter(target, trained_hash, trained_gene(target, trained_hash), record)


def _dpo_config(settings: TrainSettings, w_sft: float, work: Path, device: str, quiet: bool):
    """TRL's DPOConfig for the sigmoid DPO loss (+ SFT weighted by ``w_sft``), constant
    learning rate, no checkpoints, deterministic for ``settings.seed``."""
    from trl import DPOConfig

    return DPOConfig(
        output_dir=str(work / "trainer"), max_steps=settings.steps, per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=1, learning_rate=settings.learning_rate, lr_scheduler_type="constant",
        warmup_steps=0, beta=settings.dpo_beta, loss_type=["sigmoid"] + (["sft"] if w_sft > 0 else []),
        loss_weights=[1.0, w_sft] if w_sft > 0 else None, max_length=settings.max_length,
        seed=settings.seed, data_seed=settings.seed, logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=device == "cpu", bf16=False, fp16=False, dataloader_num_workers=0,
        disable_tqdm=quiet, gradient_checkpointing=False,
    )


def _store(staging: Path, record: dict[str, Any], target: Path) -> Path:
    """Write the training record and model card into ``staging``, then move it to
    ``target`` (the store keeps the copy it has when the same weights come again)."""
    (staging / "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (staging / "README.md").write_text(model_card(record), encoding="utf-8")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(staging)
    else:
        os.rename(staging, target)
    return target


def trained_gene(adapter_dir: str | Path, trained_hash: str | None = None) -> LoraGene:
    """An enabled LoRA gene with source "trained" whose shape mirrors ``adapter_dir``."""
    adapter_dir = Path(adapter_dir)
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    shape = _shape_fields(config, adapter_dir)
    targets = tuple(t for t in KNOWN_TARGETS if t in shape["target_modules"])
    return LoraGene(enabled=True, rank=shape["r"], alpha=shape["lora_alpha"], targets=targets,
                    layers=tuple(shape["layers"]), source="trained",
                    trained_hash=trained_hash or adapter_hash(adapter_dir)).validate()


def model_card(record: dict[str, Any]) -> str:
    s = record["settings"]
    w = record["loss_weights"]
    return f"""---
library_name: peft
tags: [lora, dpo, trl, evo-reason]
---
# Distilled reasoning adapter {record['trained_hash']}

LoRA adapter trained by `evo distill --train` with TRL's DPOTrainer on {record['pairs']} preference
pairs mined from an evolution run's journal: chosen = the shortest verified-correct chain of the
fittest lineages, rejected = a wrong or much longer completion, all under the canonical prompt
(the answer-format rules and the question, no evolved instruction).

- base model: `{record['base_model']}`
- rank {s['rank']}, alpha {s['lora_alpha']}, targets {', '.join(s['targets'])}
- {s['steps']} steps, batch {s['batch_size']}, learning rate {s['learning_rate']}, DPO beta {s['dpo_beta']}, seed {s['seed']}
- loss: DPO sigmoid + {record['sft_weight']:.3f} x SFT on chosen (from α={w['alpha']}, β={w['beta']}, γ={w['gamma']}, δ={w['delta']})
- final training loss {record['train_loss']:.4f}; {record['wall_s']} s

Load with `PeftModel.from_pretrained(base, this_dir)`, or put it into an evolution with
`evo resume RUN_DIR --inject-adapter this_dir`.
"""
