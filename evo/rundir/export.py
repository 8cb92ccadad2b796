"""`evo export RUN_DIR --top K --out DIR`: take the best strategies away.

For each of the best K of the latest checkpoint's hall of fame (a killed run exports
as well as a finished one; under ``tasks.pick = "best_validated"`` also every
strategy validated in an earlier generation), ranked by validation accuracy where
it was scored (``tasks.pick``) and by training fitness after those, so the choice
of what to export reads the validation split, never the test split::

    DIR/index.json                      rank, hash, fitness, accuracy per exported strategy
    DIR/routes.json                     a strategy per task family: rank 1 as the default, and the
                                        routes the run took (evo.engine.routing); `evo eval` reads it
    DIR/config.json                     the run's config: `evo eval --config DIR` serves each strategy
                                        on the model it names (a run's [models] names resolve there)
    DIR/trained-adapters/<hash>/        each trained adapter an exported strategy or route builds on
                                        (`evo eval` finds them by content hash: the export is enough)
    DIR/rank-1-<hash>/strategy.json     the strategy file (`evo eval` and seeds accept it)
    DIR/rank-1-<hash>/prompt.txt        the rendered prompt template, {question} as placeholder
    DIR/rank-1-<hash>/card.json         fitness, loss terms, lineage (ancestor chain), run config
    DIR/rank-1-<hash>/adapter/          LoRA individuals only: a PEFT directory
        adapter_config.json, adapter_model.safetensors, README.md (model card)

The adapter directory loads as it is with ``PeftModel.from_pretrained(base, path)``
and with vLLM's ``LoRARequest(name, id, path)``.
"""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from evo.rundir import checkpoint
from evo.rundir.files import RunDir
from evo.rundir.lineage import walk
from fitness.backends.lora_weights import ADAPTER_FILES, missing_adapter_files
from genomes.errors import InputError
from genomes.exemplar_choice import DESCRIPTIONS, FIXED
from genomes.strategy import Strategy


def export_top(run_dir: str | Path, top: int, out: str | Path) -> list[Path]:
    """Write the best ``top`` strategies of ``run_dir`` into ``out``; returns their dirs."""
    run_dir, out = Path(run_dir), Path(out)
    if top < 1:
        raise InputError(f"--top must be >= 1, got {top}")
    if not run_dir.is_dir():
        raise InputError(f"run directory not found: {run_dir}")
    saved = checkpoint.load_latest(run_dir)
    hall, scores = ranked_candidates(saved)
    hall = hall[:top]
    lineage = {row["id"]: row for row in RunDir(run_dir).read_jsonl("lineage.jsonl")}
    out.mkdir(parents=True, exist_ok=True)
    written, index = [], []
    for rank, row in enumerate(hall, 1):
        strategy = Strategy.decode(row["strategy"], where=f"hall of fame entry {rank}")
        genome_hash = strategy.content_hash()
        target = out / f"rank-{rank}-{genome_hash}"
        target.mkdir(exist_ok=True)
        strategy.save(target / "strategy.json")
        (target / "prompt.txt").write_text(render_template(strategy), encoding="utf-8")
        card = {
            "rank": rank, "hash": genome_hash, "run": str(run_dir), "generation": saved.generation,
            "fitness": row["fitness"], "l_total": row["l_total"], "train_accuracy": row["accuracy"],
            "mean_chain_tokens": row["chain_tokens"], "loss_terms": row["terms"],
            "validation_accuracy": scores.get(genome_hash),
            "lineage": ancestry(lineage, row["id"]),
            "run_config": saved.state["config"],
        }
        (target / "card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        source = adapter_source(strategy, run_dir, saved.state["config"])
        if source is not None:
            export_adapter(source, target / "adapter", card)
        index.append({k: card[k] for k in ("rank", "hash", "fitness", "train_accuracy", "validation_accuracy")}
                     | {"path": target.name, "adapter": (target / "adapter").is_dir()})
        written.append(target)
    (out / "index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    (out / "config.json").write_text(json.dumps(saved.state["config"], indent=2) + "\n", encoding="utf-8")
    if hall:
        from evo.engine.routing import routes_of_run

        default = Strategy.decode(hall[0]["strategy"], where="hall of fame entry 1")
        routes = routes_of_run(run_dir, default)
        routes.save(out / "routes.json")
        exported = [Strategy.decode(row["strategy"], where="hall of fame") for row in hall]
        export_trained_adapters([*exported, *routes.routes.values()], run_dir, saved.state["config"],
                                out / "trained-adapters")
    return written


def ranked_candidates(saved: checkpoint.Checkpoint, pick: str | None = None) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The run's candidates for its best, best first, and the validation scores that
    ranked them: the hall and, under ``tasks.pick = "best_validated"``, every strategy
    validated in an earlier generation (the latest first), by validation accuracy of
    any generation (of the last one under "last_generation"), the rest after them in
    hall order. The loop picks the same way each generation
    (:mod:`evo.engine.validation`). ``pick`` overrides the run's own ``tasks.pick``."""
    state = saved.state
    individuals = state["individuals"]
    pick = pick or (state.get("config", {}).get("tasks") or {}).get("pick", "last_generation")
    rows = [individuals[i] for i in state["hall"]]
    if pick == "best_validated":
        rows += [individuals[i] for i in reversed(state.get("validated") or [])]
    unique = {}
    for row in rows:
        unique.setdefault(Strategy.decode(row["strategy"], where="hall of fame").content_hash(), row)
    scores = pick_scores(state["metrics"], pick)
    return rank_by_validation(list(unique.values()), scores), scores


def pick_scores(metrics: list[dict[str, Any]], pick: str) -> dict[str, float]:
    """Validation accuracy by strategy hash that the run's pick reads: the last
    generation's, or under "best_validated" every generation's (the validation tasks
    never change within a run, so a strategy scores the same each time)."""
    if not metrics:
        return {}
    if pick != "best_validated":
        return validation_scores(metrics[-1])
    scores: dict[str, float] = {}
    for record in metrics:
        scores.update(validation_scores(record))
    return scores


def pick_validation(metrics: dict[str, Any]) -> float | None:
    """Validation accuracy of the run's best after one generation (its hall's best's
    in runs made before ``tasks.pick``)."""
    return metrics["pick_validation"] if "pick_validation" in metrics else metrics.get("heldout_accuracy")


def validation_scores(metrics: dict[str, Any]) -> dict[str, float]:
    """Validation accuracy by strategy hash in one generation's metrics (runs made
    before ``validation_scores`` was recorded scored only the best)."""
    if "validation_scores" in metrics:
        return dict(metrics["validation_scores"])
    if metrics.get("best_hash") and metrics.get("heldout_accuracy") is not None:
        return {metrics["best_hash"]: metrics["heldout_accuracy"]}
    return {}


def rank_by_validation(hall: list[dict[str, Any]], scores: dict[str, float]) -> list[dict[str, Any]]:
    """The hall's rows, those with a validation score first (highest first, hall order
    breaking ties), the rest after them in hall order."""
    def key(item: tuple[int, dict[str, Any]]) -> tuple[int, float, int]:
        position, row = item
        score = scores.get(Strategy.decode(row["strategy"], where="hall of fame").content_hash())
        return (0, -score, position) if score is not None else (1, 0.0, position)

    return [row for _, row in sorted(enumerate(hall), key=key)]


def adapter_source(strategy: Strategy, run_dir: Path, config: dict[str, Any]) -> Path | None:
    """The PEFT directory behind a strategy's LoRA slot: a fixed adapter as it is; a
    seed-chain gene from the run's adapter store of the gene's base model (``lora.base``,
    as the run kept it), materialised there on that model if missing (which loads it
    once)."""
    from genomes.lora import LoraGene

    lora = strategy.lora
    if isinstance(lora, dict):
        return Path(lora["adapter_dir"]) if lora.get("adapter_dir") else None
    if not (isinstance(lora, LoraGene) and lora.is_active and lora.has_weights):
        return None
    from evo.config.sections import RunConfig, gene_model, model_entry
    from evo.engine.backend import adapter_store_dir
    from fitness.backends.lora_weights import AdapterStore

    run_config = RunConfig.from_saved(config, "the run's config")
    base = gene_model(run_config, lora.base or "default")
    model = _base_model(model_entry(run_config, base).source, run_config.model.cache_dir or None)
    return AdapterStore(adapter_store_dir(run_dir, base)).path_for(lora, model)


@functools.lru_cache(maxsize=1)  # one export reads one run's model; a second model replaces it
def _base_model(name: str, cache_dir: str | None):
    from transformers import AutoModelForCausalLM

    from fitness.backends.model_store import resolve_model

    return AutoModelForCausalLM.from_pretrained(resolve_model(name, cache_dir), local_files_only=True)


def render_template(strategy: Strategy) -> str:
    """The chat a model sees, with ``{question}`` where each task's question goes.

    Where the exemplars are chosen per question (``prompt.exemplar_choice``), the
    template shows all of them in gene order under a first line that says so."""
    choice = strategy.prompt.exemplar_choice
    every_exemplar = replace(strategy, prompt=replace(strategy.prompt, exemplar_choice=FIXED))
    rendered = every_exemplar.render("{question}")
    parts = [f"<{m['role']}>\n{m['content']}\n</{m['role']}>" for m in rendered.messages]
    parts.append(f"<assistant>\n{rendered.prefill}...")
    if choice != FIXED and strategy.prompt.exemplars:
        parts.insert(0, f"# exemplar_choice = {choice}: each question sees {DESCRIPTIONS[choice]}; "
                        "here all are shown in gene order. Strategy.load('strategy.json').render(question) "
                        "gives the exact chat.")
    return "\n\n".join(parts) + "\n"


def ancestry(lineage: dict[int, dict[str, Any]], ident: int) -> list[dict[str, Any]]:
    """The individual and every ancestor (breadth first): id, generation, operator, parents."""
    return [{"id": i, "generation": lineage[i]["generation"], "op": lineage[i]["op"], "parents": lineage[i]["parents"]}
            for i in walk(lineage, ident)]


def export_trained_adapters(strategies, run_dir: Path, config: dict[str, Any], target: Path) -> None:
    """Copy each trained adapter that ``strategies`` build on (LoRA genes of source
    "trained") from the run's store into ``target/<trained_hash>/``: it lives only in
    the run, while a seed-chain gene is remade from its recipe and a fixed adapter is
    named by its path. A rank's ``adapter/`` holds what it serves, which for a trained
    gene with noise on top is not the trained adapter itself."""
    from evo.config.sections import RunConfig, gene_model
    from evo.distill.train import TRAINED_DIR
    from evo.engine.backend import adapter_store_dir
    from evo.rundir.inject import copy_into_store, trained_lora

    run_config = RunConfig.from_saved(config, "the run's config")
    for gene in filter(None, map(trained_lora, strategies)):
        store = adapter_store_dir(run_dir, gene_model(run_config, gene.base or "default")) / TRAINED_DIR
        copy_into_store(target, store / gene.trained_hash, gene.trained_hash)


def export_adapter(source: Path, target: Path, card: dict[str, Any]) -> None:
    missing = missing_adapter_files(source)
    if missing:
        raise InputError(f"adapter of rank {card['rank']} is incomplete: {source} lacks {', '.join(missing)}")
    target.mkdir(exist_ok=True)
    for name in ADAPTER_FILES:
        shutil.copyfile(source / name, target / name)
    (target / "README.md").write_text(model_card(card, json.loads((source / "adapter_config.json").read_text())),
                                      encoding="utf-8")


def model_card(card: dict[str, Any], adapter_config: dict[str, Any]) -> str:
    base = adapter_config.get("base_model_name_or_path") or "SmolLM2-135M-Instruct (bundled)"
    lineage = "\n".join(f"- #{a['id']} (generation {a['generation']}, {a['op']}, parents {a['parents']})"
                        for a in card["lineage"])
    terms = ", ".join(f"{k} {v:+.3f}" for k, v in (card["loss_terms"] or {}).items())
    validation = "n/a" if card["validation_accuracy"] is None else f"{card['validation_accuracy']:.1%}"
    return f"""---
library_name: peft
base_model: {base}
tags: [lora, evo-reason]
---

# Evolved LoRA adapter, rank {card['rank']} of run `{card['run']}`

Strategy hash `{card['hash']}`, from generation {card['generation']} of the run.

| metric | value |
|---|---|
| fitness (−L_total) | {-card['l_total']:+.4f} |
| train accuracy | {card['train_accuracy']:.1%} |
| validation accuracy | {validation} |
| mean chain tokens | {card['mean_chain_tokens']:.1f} |
| loss terms | {terms} |

Load with `PeftModel.from_pretrained(base_model, "<this directory>")`, or in vLLM with
`LoRARequest("<name>", <id>, "<this directory>")`. Use it with the strategy in
`../strategy.json` (prompt template in `../prompt.txt`).

## Lineage

{lineage}

## Run config

```json
{json.dumps(card['run_config'], indent=2)}
```
"""
