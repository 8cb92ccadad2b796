"""Close the loop: put a trained adapter into a run's population
(`evo resume RUN_DIR --inject-adapter PATH`).

Contract of :func:`import_adapter`: the PEFT directory is copied (if it is not there
already) into the run's adapter store as ``RUN_DIR/adapters/trained/<hash>/``, where
``<hash>`` is its content hash, and an enabled LoRA gene with source "trained" that
resolves to that copy is returned; the run stays self-contained if PATH is deleted.
Anything that is not a LoRA adapter over known target modules is refused with an
InputError before the model loads.

:func:`injected_strategies` gives the strategies that carry it into the population:
the canonical prompt the adapter was trained for (see ``evo.distill.pairs``), and the
run's current best strategy, each with the adapter. The engine adds them as new
individuals (operator ``inject``) that are scored in the next generation and then
compete under the usual selection: an adapter that does not help is dropped.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

from evo.distill.pairs import canonical_strategy
from evo.distill.train import TRAINED_DIR, adapter_hash, trained_gene
from fitness.backends.lora_weights import ADAPTER_FILES, missing_adapter_files
from genomes.errors import InputError
from genomes.lora import LoraGene
from genomes.strategy import Strategy

CARD_FILES = ("README.md", "training.json")  # copied along when present


def import_adapter(run_dir: str | Path, adapter_dir: str | Path) -> LoraGene:
    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise InputError(f"--inject-adapter: no such directory: {adapter_dir}")
    trained_hash = adapter_hash(adapter_dir)
    gene = trained_gene(adapter_dir, trained_hash)
    copy_into_store(Path(run_dir) / "adapters" / TRAINED_DIR, adapter_dir, trained_hash)
    return gene


def copy_into_store(store: Path, adapter_dir: Path, trained_hash: str) -> Path:
    """``adapter_dir`` as ``store/<trained_hash>/`` (the layout a backend's adapter store
    reads trained adapters from), copied atomically unless a complete copy is there."""
    target = store / trained_hash
    if missing_adapter_files(target):
        store.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".import-", dir=store))
        try:
            for name in ADAPTER_FILES + CARD_FILES:
                if (adapter_dir / name).is_file():
                    shutil.copyfile(adapter_dir / name, staging / name)
            shutil.rmtree(target, ignore_errors=True)  # an incomplete copy from a crash
            os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def trained_lora(strategy: Strategy) -> LoraGene | None:
    """``strategy``'s LoRA gene when it is an active trained adapter (source "trained",
    named by its content hash), else None."""
    gene = strategy.lora
    return gene if isinstance(gene, LoraGene) and gene.is_active and gene.source == "trained" else None


def stage_exported_adapters(strategies, store_of, search: list[Path]) -> None:
    """Make the trained adapters that ``strategies`` name findable where their backend
    looks (``store_of(strategy)``: that backend's adapter store): an adapter already
    there stays; else one of ``search`` (an ``evo export`` directory's
    ``trained-adapters/*`` and ``rank-N/adapter/``) whose content hashes to the gene's
    ``trained_hash`` is copied in. None found: one InputError naming the adapter,
    before any model loads."""
    for strategy in strategies:
        gene = trained_lora(strategy)
        if gene is None:
            continue
        store = Path(store_of(strategy)) / TRAINED_DIR
        if not missing_adapter_files(store / gene.trained_hash):
            continue
        found = next((d for d in search if not missing_adapter_files(d) and adapter_hash(d) == gene.trained_hash),
                     None)
        if found is None:
            raise InputError(f"strategy {strategy.name}: its trained adapter {gene.trained_hash} is neither in "
                             f"{store} nor in the `evo export` directory of the strategy file; pass "
                             "--config with the run directory that trained it")
        copy_into_store(store, found, gene.trained_hash)


def injected_strategies(gene: LoraGene, best: Strategy) -> list[Strategy]:
    """The canonical prompt (with ``best``'s decoding) and ``best`` itself, each
    carrying ``gene``; one strategy when the two coincide. Both run on the gene's
    base model (``evo distill`` trains the primary model: "default"), whatever model
    ``best`` used: an adapter fits only the model it was trained on."""
    decoding = dataclasses.replace(best.decoding, model=gene.base or "default")
    canonical = dataclasses.replace(canonical_strategy(), decoding=decoding, lora=gene)
    carried = dataclasses.replace(best, decoding=decoding, lora=gene)
    out = [canonical, carried]
    return out if canonical.content_hash() != carried.content_hash() else out[:1]
