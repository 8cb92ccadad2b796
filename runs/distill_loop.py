"""Evidence for distillation: evolution -> distill -> DPO training -> held-out eval -> inject.

    python runs/distill_loop.py                      # quickstart recipe, ~25 min on 2 CPU cores
    python runs/distill_loop.py --reuse              # keep an existing evolution run, redo the rest

1. runs an evolution (the config, here with more generations and training tasks so
   the journal holds more verified completions) in OUT_DIR/distill-loop;
2. ``evo distill``: pairs from its journal; trains a LoRA adapter with TRL DPO;
3. scores on one enlarged held-out set (never used for selection or pairs), with one
   backend and greedy decoding:
      base      the base model under the canonical prompt (format rules + question)
      adapter   the base model + the trained adapter under the canonical prompt
      best      the evolved best strategy, base weights
      best+ad   the evolved best strategy + the adapter
   accuracy with 95 % bootstrap CIs and the paired CI of adapter - base;
4. resumes the run one generation with ``--inject-adapter`` and reports what became
   of the injected individuals.

Prints one JSON summary and writes it to OUT_DIR/distill-loop/evidence.json. The
numbers are what they are: on a 135M model and a short run, expect small effects.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from pathlib import Path

from evo.rundir import checkpoint
from evo.config.sections import load_config
from evo.distill.pairs import canonical_strategy, distill_run, read_pairs
from evo.distill.train import TrainedAdapter, TrainSettings, adapter_hash, train_adapter, trained_gene
from evo.engine.backend import build_backend
from evo.engine.run import resume_evolution, run_evolution
from evo.rundir.files import RunDir
from evo.report.stats import bootstrap_ci
from evo.engine.task_pool import TaskPool
from fitness.evaluate import evaluate_many
from genomes.strategy import Strategy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="runs/quickstart.toml")
    parser.add_argument("--out-dir", default="runs/out")
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--per-family", type=int, default=5, help="training tasks per family per generation")
    parser.add_argument("--heldout", type=int, default=24, help="held-out tasks per family for the comparison")
    parser.add_argument("--steps", type=int, default=60, help="DPO optimiser steps")
    parser.add_argument("--reuse", action="store_true", help="reuse an existing evolution run")
    parser.add_argument("--adapter", help="with --reuse: evaluate this trained adapter instead of training one")
    args = parser.parse_args()

    config = load_config(args.config, {"run": {"name": "distill-loop", "out_dir": args.out_dir,
                                               "generations": args.generations},
                                       "tasks": {"per_family": args.per_family}})
    backend = build_backend(config)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if not (args.reuse and RunDir(config.run_dir).holds_a_run()):
        run_evolution(config, backend=backend, overwrite=True)
    timings["evolution_s"] = time.perf_counter() - started

    started = time.perf_counter()
    distilled = distill_run(config.run_dir)
    rows = read_pairs(distilled.pairs_path)
    weights = dataclasses.asdict(config.loss)
    if args.adapter:
        trained = TrainedAdapter(Path(args.adapter), adapter_hash(args.adapter), trained_gene(args.adapter),
                                 json.loads((Path(args.adapter) / "training.json").read_text()))
    else:
        trained = train_adapter(rows, config.run_dir, weights, TrainSettings(steps=args.steps), log=True)
    timings["distill_train_s"] = time.perf_counter() - started

    started = time.perf_counter()
    # the evolved best without a trained adapter (after an earlier injection the hall of
    # fame may already hold descendants of the adapter)
    hall = json.loads((config.run_dir / "best.json").read_text())["hall_of_fame"]
    best = next(s for s in (Strategy.decode(row["strategy"]) for row in hall)
                if getattr(s.lora, "source", None) != "trained")
    canonical = dataclasses.replace(canonical_strategy(), decoding=best.decoding)
    big = dataclasses.replace(config, tasks=dataclasses.replace(config.tasks, heldout_per_family=args.heldout))
    tasks = TaskPool(big).test(args.heldout)  # reported only: the test split
    arms = {
        "base": canonical,
        "adapter": dataclasses.replace(canonical, lora=trained.gene),
        "best": best,
        "best+adapter": dataclasses.replace(best, lora=trained.gene),
    }
    results = dict(zip(arms, evaluate_many([(s, tasks) for s in arms.values()], backend, seed=config.run.seed)))
    timings["heldout_eval_s"] = time.perf_counter() - started

    rng = random.Random(0)
    correct = {arm: [float(r.correct) for r in rs] for arm, rs in results.items()}
    heldout = {}
    for arm, values in correct.items():
        low, high = bootstrap_ci(values, rng)
        rs = results[arm]
        heldout[arm] = {"accuracy": sum(values) / len(values), "ci95": [low, high],
                        "well_formed": sum(r.answer is not None for r in rs) / len(rs),
                        "mean_chain_tokens": sum(r.chain_tokens for r in rs) / len(rs),
                        "mean_completion_tokens": sum(r.completion_tokens for r in rs) / len(rs)}
    paired = {}
    for with_adapter, without in (("adapter", "base"), ("best+adapter", "best")):
        diffs = [a - b for a, b in zip(correct[with_adapter], correct[without])]
        paired[f"{with_adapter} - {without}"] = {"points": sum(diffs) / len(diffs), "ci95": list(bootstrap_ci(diffs, rng))}

    started = time.perf_counter()
    already = checkpoint.load_latest(config.run_dir).generation > args.generations  # a --reuse of a finished loop
    resumed = resume_evolution(config.run_dir, generations=args.generations + 1, backend=backend,
                               inject_adapters=[] if already else [trained.path])
    timings["inject_resume_s"] = time.perf_counter() - started
    lineage = RunDir(config.run_dir).read_jsonl("lineage.jsonl")
    injected = [row for row in lineage if row["op"] == "inject"]
    hall_hashes = [row["hash"] for row in resumed.hall_of_fame]

    evidence = {
        "pairs": distilled.summary,
        "adapter": {"path": str(trained.path), "train_loss": trained.record["train_loss"],
                    "steps": trained.record["settings"]["steps"], "log_first": trained.record["log"][0],
                    "log_last": trained.record["log"][-2]},
        "heldout_tasks": len(tasks),
        "heldout": heldout,
        "paired_differences": paired,
        "injected": [{"id": row["id"], "hash": row["hash"], "l_total": row["l_total"], "accuracy": row["accuracy"],
                      "in_hall_of_fame": row["hash"] in hall_hashes} for row in injected],
        "best_after_inject": {"hash": resumed.hall_of_fame[0]["hash"], "l_total": resumed.hall_of_fame[0]["l_total"],
                              "heldout_accuracy": resumed.metrics[-1]["heldout_accuracy"]},
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    (config.run_dir / "evidence.json").write_text(json.dumps(evidence, indent=2) + "\n")
    print(json.dumps(evidence, indent=2))
    for arm, h in heldout.items():
        print(f"{arm:>13}: held-out accuracy {h['accuracy']:5.1%} [{h['ci95'][0]:.1%}, {h['ci95'][1]:.1%}]  "
              f"well-formed {h['well_formed']:5.1%}  chain tokens {h['mean_chain_tokens']:.1f}")
    for name, d in paired.items():
        print(f"{name}: {d['points']:+.1%} [{d['ci95'][0]:+.1%}, {d['ci95'][1]:+.1%}]")


if __name__ == "__main__":
    main()
