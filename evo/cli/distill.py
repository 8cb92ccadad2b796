"""`evo distill RUN_DIR [--train]`: pairs from the journal, optionally a DPO adapter.

Writes into ``--out`` (default RUN_DIR/distill) the files of
:func:`evo.distill.pairs.distill_run` plus ``summary.md``; with ``--train`` the
adapter goes to the run's adapter store (see :mod:`evo.distill.train`) and the
summary gains an ``adapter`` section. Every argument is checked before any model
loads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from evo.distill.pairs import PairRules, distill_run, read_pairs
from evo.distill.train import TrainSettings, require_trl, train_adapter
from genomes.errors import InputError


def add_parser(sub) -> None:
    d = sub.add_parser(
        "distill", help="build DPO pairs from a run's journal, optionally train a LoRA adapter",
        description="Mine the run journal for preference pairs under the canonical prompt: chosen = the shortest "
                    "verified-correct chain of the fittest lineages, rejected = a wrong or much longer completion. "
                    "Writes TRL-format JSONL; --train fits a LoRA adapter with TRL's DPOTrainer.")
    d.add_argument("run_dir", help="a run directory written by `evo run`")
    d.add_argument("--out", help="output directory (default RUN_DIR/distill)")
    p = d.add_argument_group("pairs")
    defaults = PairRules()
    p.add_argument("--top-lineages", type=int, default=defaults.top_lineages,
                   help="hall-of-fame members whose lineages may give the chosen side "
                        f"(default {defaults.top_lineages}: every individual of every generation)")
    p.add_argument("--per-task", type=int, default=defaults.rejected_per_task,
                   help=f"pairs per task, each with another rejected completion (default {defaults.rejected_per_task})")
    p.add_argument("--long-ratio", type=float, default=defaults.long_ratio,
                   help=f"a correct completion is rejected as too long at this chain-length ratio (default {defaults.long_ratio})")
    p.add_argument("--min-extra-tokens", type=int, default=defaults.min_extra_tokens,
                   help=f"... and at least this many more chain tokens (default {defaults.min_extra_tokens})")
    t = d.add_argument_group("training (--train)")
    s = TrainSettings()
    t.add_argument("--train", action="store_true", help="train a LoRA adapter on the pairs (TRL DPOTrainer + PEFT)")
    t.add_argument("--steps", type=int, default=s.steps, help=f"optimiser steps (default {s.steps})")
    t.add_argument("--batch-size", type=int, default=s.batch_size, help=f"pairs per step (default {s.batch_size})")
    t.add_argument("--learning-rate", type=float, default=s.learning_rate, help=f"(default {s.learning_rate})")
    t.add_argument("--rank", type=int, default=s.rank, help=f"LoRA rank (default {s.rank})")
    t.add_argument("--lora-alpha", type=float, default=s.lora_alpha, help=f"LoRA alpha (default {s.lora_alpha})")
    t.add_argument("--targets", default=",".join(s.targets),
                   help=f"comma-separated target modules (default {','.join(s.targets)})")
    t.add_argument("--dpo-beta", type=float, default=s.dpo_beta,
                   help=f"DPO temperature, TRL's beta; not the loss weight β (default {s.dpo_beta})")
    t.add_argument("--sft", type=float, default=s.sft,
                   help=f"weight of the SFT term on chosen completions; 0: preferences only (default {s.sft})")
    t.add_argument("--max-length", type=int, default=s.max_length,
                   help=f"prompt + completion tokens kept per pair (default {s.max_length})")
    t.add_argument("--seed", type=int, default=s.seed, help=f"training seed (default {s.seed})")


def command(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise InputError(f"run directory not found: {run_dir}")
    settings = TrainSettings(
        steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate, rank=args.rank,
        lora_alpha=args.lora_alpha, targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
        dpo_beta=args.dpo_beta, sft=args.sft, max_length=args.max_length, seed=args.seed)
    if args.train:
        settings.check()
        require_trl()
    config = _run_config(run_dir)
    loss = config["loss"]
    rules = PairRules(top_lineages=args.top_lineages, rejected_per_task=args.per_task, long_ratio=args.long_ratio,
                      min_extra_tokens=args.min_extra_tokens, use_incorrect=loss["beta"] > 0, use_longer=loss["alpha"] > 0)
    result = distill_run(run_dir, args.out, rules)
    out = result.pairs_path.parent
    summary = result.summary
    print(_pairs_line(summary), file=sys.stderr)
    if args.train:
        rows = read_pairs(result.pairs_path)
        model = config["model"]
        print(f"training a rank-{settings.rank} LoRA adapter on {len(rows)} pairs ({settings.steps} steps)...",
              file=sys.stderr, flush=True)
        weights = frontier_weights(run_dir, result.pairs, loss["delta"])
        trained = train_adapter(rows, run_dir, loss, settings, model=model["name"], cache_dir=model["cache_dir"] or None,
                                device=model["device"], log=True, example_weights=weights)
        summary["adapter"] = {"path": str(trained.path), "trained_hash": trained.trained_hash,
                              "train_loss": trained.record["train_loss"], "sft_weight": trained.record["sft_weight"],
                              "steps": settings.steps, "wall_s": trained.record["wall_s"]}
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        print(f"adapter: {trained.path}", file=sys.stderr)
        print(f"put it into the population with: evo resume {run_dir} --inject-adapter {trained.path}", file=sys.stderr)
    (out / "summary.md").write_text(summary_markdown(summary), encoding="utf-8")
    print(result.pairs_path)
    return 0


def frontier_weights(run_dir: Path, pairs, delta: float) -> list[float]:
    """δ's weight of each pair (:func:`evo.distill.token_weights.example_weights`): the
    model's ability per family is the run's last curriculum frontier, a task's
    difficulty its level, both normalised by the family's number of levels."""
    from evo.config.sections import RunConfig
    from evo.distill.token_weights import example_weights
    from evo.engine.task_pool import TaskPool
    from evo.rundir import checkpoint

    saved = checkpoint.load_latest(run_dir, warn=lambda m: None)
    levels = TaskPool(RunConfig.from_saved(saved.state["config"], "checkpoint")).levels()
    frontier = (saved.state["metrics"][-1] if saved.state["metrics"] else {}).get("frontier", {})
    norm = lambda family, level: level / (levels.get(family, 1) - 1) if levels.get(family, 1) > 1 else 0.0  # noqa: E731
    weights: list[tuple[int, float]] = []
    for family in sorted({p.family for p in pairs}):  # one ability per family, examples weighted within it
        mine = [i for i, p in enumerate(pairs) if p.family == family]
        ability = norm(family, frontier.get(family, 0))
        for i, w in zip(mine, example_weights([norm(family, pairs[i].level) for i in mine], ability, delta)):
            weights.append((i, w))
    return [w for _, w in sorted(weights)]


def _run_config(run_dir: Path) -> dict[str, Any]:
    from evo.rundir import checkpoint
    return checkpoint.load_latest(run_dir, warn=lambda m: None).state["config"]


def _pairs_line(summary: dict[str, Any]) -> str:
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(summary["kinds"].items())) or "none"
    return (f"{summary['pairs']} pairs ({kinds}) from {summary['tasks_with_pairs']} of {summary['tasks_in_journal']} "
            f"training tasks; lineages used {summary['lineages']['used']}/{summary['lineages']['considered']}; "
            f"chosen chain {summary['chosen']['mean_chain_tokens']} tokens vs rejected "
            f"{summary['rejected']['mean_chain_tokens']}")


def summary_markdown(summary: dict[str, Any]) -> str:
    c, r = summary["chosen"], summary["rejected"]
    acc = lambda v: "n/a" if v is None else f"{v:.0%}"  # noqa: E731
    lines = [
        f"# Distillation of {summary['run_dir']}", "",
        f"- pairs: **{summary['pairs']}** ({', '.join(f'{n} {k}' for k, n in sorted(summary['kinds'].items())) or 'none'})",
        f"- training tasks in the journal: {summary['tasks_in_journal']}, with pairs: {summary['tasks_with_pairs']} "
        f"(held-out completions excluded: {summary['heldout_completions_excluded']})",
        f"- lineages used: {summary['lineages']['used']} of the top {summary['lineages']['considered']} "
        f"(ranks {summary['lineages']['ranks_used']}); genomes giving a chosen side: "
        f"{summary['lineages']['genomes_providing_chosen']}",
        "", "| | chain tokens | completion tokens | accuracy |", "|---|---|---|---|",
        f"| chosen | {c['mean_chain_tokens']} | {c['mean_completion_tokens']} | {acc(c['accuracy'])} |",
        f"| rejected | {r['mean_chain_tokens']} | {r['mean_completion_tokens']} | {acc(r['accuracy'])} |",
        "", "Per family: " + (", ".join(f"{f} {n}" for f, n in summary["families"].items()) or "none"),
    ]
    if "adapter" in summary:
        a = summary["adapter"]
        lines += ["", f"Adapter `{a['trained_hash']}` ({a['steps']} steps, final train loss {a['train_loss']:.4f}, "
                      f"SFT weight {a['sft_weight']:.3f}, {a['wall_s']} s): `{a['path']}`"]
    return "\n".join(lines) + "\n"
