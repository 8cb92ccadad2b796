"""`evo distill --train`: TRL's DPOTrainer + a PEFT LoRA on the base model, trained
with the unified loss on the tokens of the reasoning format.

How the loss weights of evolution become the training loss
(:mod:`evo.distill.weighted_trainer` has the formula)::

    loss = mean_pairs  e · ( L_pref(chosen ≻ rejected; w) + s · L_SFT(chosen; w) )

- α, β, γ weight the tokens of each segment of a completion: α the ``<cot>`` chain,
  β the answer block, γ the response block (:mod:`evo.distill.token_weights`). They
  weight the log-likelihoods inside the preference term (sigmoid DPO on weighted
  sequence log-probabilities) and the SFT term on the chosen completion alike.
- δ weights whole pairs by how close their task's difficulty is to the model's
  frontier (the run's curriculum level per family, the curriculum's D_model vs
  D_task): ``e = 1 + δ · (closeness − mean closeness)``, so δ = 0 weighs all alike.
- β and α also decide which preferences exist: β > 0 makes pairs against wrong
  answers, α > 0 pairs against much longer correct chains (:mod:`evo.distill.pairs`).
- ``s`` (``TrainSettings.sft``, default 1) is the SFT term's weight: it is what lets a
  small model learn the format from the chosen completions at all.

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
from evo.distill.token_weights import SegmentWeights
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
    sft: float = 1.0  # weight of the SFT term on chosen completions (0: preferences only)
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
        if not self.sft >= 0:
            raise InputError(f"--sft must be >= 0, got {self.sft}")
        unknown = [t for t in self.targets if t not in KNOWN_TARGETS]
        if not self.targets or unknown:
            raise InputError(f"--targets: unknown module {', '.join(unknown) or '(none given)'}; "
                             f"choose from {', '.join(KNOWN_TARGETS)}")


def segment_weights(weights: dict[str, float]) -> SegmentWeights:
    """α, β, γ as per-token weights of the chain, answer and response segments."""
    if weights["alpha"] + weights["beta"] + weights["gamma"] <= 0:
        raise InputError("loss weights: α + β + γ must be > 0: every token would weigh nothing")
    return SegmentWeights.from_loss(weights)


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
                  device: str = "cpu", log=None, example_weights: list[float] | None = None) -> TrainedAdapter:
    """Train a LoRA adapter with the unified loss (weighted DPO + SFT) on TRL preference
    ``rows`` and store it in ``run_dir``'s adapter store; ``example_weights`` (δ, one
    per row; default all 1) weight the pairs. Deterministic for ``settings.seed`` on CPU."""
    settings.check()
    require_trl()
    if not rows:
        raise InputError("no pairs to train on")
    if example_weights is not None and len(example_weights) != len(rows):
        raise InputError(f"{len(example_weights)} example weights for {len(rows)} pairs")
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evo.distill.weighted_trainer import EXAMPLE_WEIGHT, weighted_trainer
    from fitness.backends.model_store import resolve_model

    segments = segment_weights(weights)
    model_dir = resolve_model(model, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(settings.seed)  # the LoRA A initialisation
    base = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    base.config.pad_token_id = tokenizer.pad_token_id
    if example_weights is not None:
        rows = [{**row, EXAMPLE_WEIGHT: float(w)} for row, w in zip(rows, example_weights)]
    lora = LoraConfig(r=settings.rank, lora_alpha=settings.lora_alpha, target_modules=list(settings.targets),
                      lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    adapters = Path(run_dir) / "adapters"
    adapters.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".train-", dir=adapters))
    started = time.perf_counter()
    try:
        trainer = weighted_trainer(tokenizer, segments, settings.sft, model=base,
                                   args=_dpo_config(settings, work, device, quiet=log is None),
                                   train_dataset=Dataset.from_list(rows), peft_config=lora)
        output = trainer.train()
        staging = work / "adapter"
        trainer.model.save_pretrained(str(staging))
        history = [{k: v for k, v in entry.items() if isinstance(v, (int, float))} for entry in trainer.state.log_history]
        trained_hash = adapter_hash(staging)
        record = {
            "trained_hash": trained_hash, "pairs": len(rows), "settings": asdict(settings),
            "loss_weights": dict(weights),
            "training_loss": "weighted sigmoid DPO + SFT (evo.distill.weighted_trainer)",
            "token_weights": asdict(segments), "sft_weight": settings.sft,
            "example_weights": _spread(example_weights), "train_loss": output.training_loss,
            "wall_s": round(time.perf_counter() - started, 1), "log": history,
            "base_model": str(model_dir),
        }
        target = _store(staging, record, adapters / TRAINED_DIR / trained_hash)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return TrainedAdapter(target, trained_hash, trained_gene(target, trained_hash), record)


def train_on_pairs(trainer, pairs_path: str | Path, run_dir: str | Path, config, settings: TrainSettings,
                   log=None) -> TrainedAdapter:
    """Train on a mined pairs file (``evo.distill.pairs.distill_run``) with the run
    config's loss weights (α β γ on the tokens, δ on the pairs by distance to the run's
    frontier) on its primary model: what `evo improve` and `evo tune` (with
    ``tune.train``) do after an evolution. ``trainer`` is :func:`train_adapter` or a
    fake with its signature."""
    from types import SimpleNamespace

    from evo.cli.distill import frontier_weights
    from evo.distill.pairs import read_pairs

    rows = read_pairs(pairs_path)
    meta = Path(pairs_path).with_name("pairs.meta.jsonl")  # line-aligned provenance: family, level (δ)
    pairs = [SimpleNamespace(**json.loads(line)) for line in meta.read_text(encoding="utf-8").splitlines()]
    weights = asdict(config.loss_weights())
    m = config.model
    return trainer(rows, run_dir, weights, settings, model=m.name, cache_dir=m.cache_dir or None, device=m.device,
                   log=log, example_weights=frontier_weights(run_dir, pairs, weights["delta"]))


def _spread(values: list[float] | None) -> dict[str, float] | None:
    return None if not values else {"min": min(values), "max": max(values)}


def _dpo_config(settings: TrainSettings, work: Path, device: str, quiet: bool):
    """TRL's DPOConfig (its loss is replaced by ours; see the module doc): constant
    learning rate, no checkpoints, deterministic for ``settings.seed``."""
    from dataclasses import fields

    from trl import DPOConfig

    # TRL turns activation (gradient) checkpointing on by default: it recomputes every
    # forward in the backward pass, time a 135M model with short sequences does not
    # need to save memory for. transformers >= 5.2x names it activation_checkpointing
    # and warns (FutureWarning) whenever only the old name is set
    names = {f.name for f in fields(DPOConfig)}
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return DPOConfig(
        **{checkpointing: False},
        output_dir=str(work / "trainer"), max_steps=settings.steps, per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=1, learning_rate=settings.learning_rate, lr_scheduler_type="constant",
        warmup_steps=0, beta=settings.dpo_beta, loss_type=["sigmoid"], max_length=settings.max_length,
        seed=settings.seed, data_seed=settings.seed, logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=device == "cpu", bf16=False, fp16=False, dataloader_num_workers=0,
        disable_tqdm=quiet,
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

LoRA adapter trained by `evo distill --train` (TRL's DPOTrainer, the unified loss) on {record['pairs']} preference
pairs mined from an evolution run's journal: chosen = the shortest verified-correct chain of the
fittest lineages, rejected = a wrong or much longer completion, all under the canonical prompt
(the answer-format rules and the question, no evolved instruction).

- base model: `{record['base_model']}`
- rank {s['rank']}, alpha {s['lora_alpha']}, targets {', '.join(s['targets'])}
- {s['steps']} steps, batch {s['batch_size']}, learning rate {s['learning_rate']}, DPO beta {s['dpo_beta']}, seed {s['seed']}
- loss: weighted sigmoid DPO + {record['sft_weight']:.3f} x SFT on chosen; tokens weighted α={w['alpha']} (chain),
  β={w['beta']} (answer), γ={w['gamma']} (response); pairs weighted by δ={w['delta']} (frontier)
- final training loss {record['train_loss']:.4f}; {record['wall_s']} s

Load with `PeftModel.from_pretrained(base, this_dir)`, or put it into an evolution with
`evo resume RUN_DIR --inject-adapter this_dir`.
"""
