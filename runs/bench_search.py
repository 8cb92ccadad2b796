"""Benchmark: does evolution find better strategies than the baselines?

    python runs/bench_search.py                       # the quickstart recipe
    python runs/bench_search.py --config runs/search.toml --heldout 250 --seed 1
    python runs/bench_search.py --config runs/search.toml --heldout 250 --seed 1 --resume   # after a kill

On one shared backend and one enlarged held-out set (drawn from the held-out split,
never used for selection), compares the held-out accuracy of:

  (a) the best seed strategy   (the seed with the best training fitness),
  (b) random search            (random prompt and chain genes from the fragment
                                library with a seed's decoding gene, scored on the
                                run's first training batch until the same number of
                                training rollouts as (c) is spent; the best by
                                training fitness is kept),
  (c) evolution                (the config's run; the hall of fame's best).

Prints each with a 95 % bootstrap confidence interval over held-out tasks, the
paired bootstrap CI of (c) minus each baseline, and the share of generation wall
time spent outside the backend (target < 3 %). Targets: (c) beats (a) and (b).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from pathlib import Path

from evo.config.sections import RunConfig, load_config
from evo.engine.backend import build_backend
from evo.engine.run import resume_evolution, run_evolution
from evo.report.stats import bootstrap_ci
from evo.engine.task_pool import TaskPool
from fitness.curriculum import estimate_ability
from fitness.journal import Journal, evaluate_with_journal
from fitness.loss import individual_loss
from genomes.operators import random_strategy
from genomes.strategy import Strategy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="runs/quickstart.toml")
    parser.add_argument("--heldout", type=int, default=24,
                        help="held-out tasks per family for the comparison (a family whose held-out split "
                             "is smaller gives all of it: chain_sum level 0 has 39)")
    parser.add_argument("--out-dir", default="runs/out/bench_search")
    parser.add_argument("--generations", type=int, default=None, help="override run.generations of the config")
    parser.add_argument("--seed", type=int, default=None,
                        help="override run.seed of the config: other training batches, variation and held-out "
                             "draws (a design tuned on one seed's held-out set is measured on another)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted or finished benchmark in --out-dir: evolution resumes from "
                             "its last checkpoint (a finished run is reused), random-search and held-out scores "
                             "already in the benchmark journal are not recomputed. Pass the same --config, "
                             "--seed and --generations; --heldout may grow")
    args = parser.parse_args()

    run = {"name": "evolution", "out_dir": args.out_dir}
    if args.generations is not None:
        run["generations"] = args.generations
    if args.seed is not None:
        run["seed"] = args.seed
    config = load_config(args.config, {"run": run})
    weights = config.loss_weights()
    backend = build_backend(config)
    big = dataclasses.replace(config, tasks=dataclasses.replace(config.tasks, heldout_per_family=args.heldout))
    pool = TaskPool(big)
    heldout = pool.heldout(fewer_ok=True)
    journal = Journal(Path(args.out_dir) / "bench_journal.sqlite")

    def score(strategies: list[Strategy], tasks) -> list[list]:
        results, _, _ = evaluate_with_journal([(s, tasks) for s in strategies], backend, journal, config.run.seed, 0)
        return results

    def train_fitness(results, tasks) -> float:
        return -individual_loss(results, tasks, estimate_ability(results), weights, config.loss.reference_tokens)[0]

    # (c) evolution
    started = time.perf_counter()
    if args.resume and (config.run_dir / "checkpoints").is_dir():
        # through from_dict: fields added since the run was saved take their defaults
        saved = RunConfig.from_dict(json.loads((config.run_dir / "config.json").read_text())).to_dict()
        if saved != config.to_dict():  # another --config or --seed: its batches and picks would not match
            raise SystemExit(f"--resume: {config.run_dir} holds a run of another config; "
                             "pass the --config, --seed and --generations it was started with")
        evo = resume_evolution(config.run_dir, config.run.generations, backend=backend)
    else:
        evo = run_evolution(config, backend=backend, overwrite=True)
    evo_s = time.perf_counter() - started  # with --resume: this session's share only
    last = evo.metrics[-1]
    train_rollouts = last["rollouts"] - last["heldout_rollouts"]
    outside = 1 - last["backend_s"] / last["wall_s"]

    first_batch = evo.training_batches[0]  # what every individual of generation 0 was scored on

    # (a) seeds, picked on training fitness
    seeds = [Strategy.load(s) for s in config.population.seeds]
    seed_train = score(seeds, first_batch)
    best_seed = max(zip(seeds, seed_train), key=lambda p: train_fitness(p[1], first_batch))[0]

    # (b) random search with the same training rollouts
    rng = random.Random(config.run.seed + 1)
    n_random = max(1, train_rollouts // len(first_batch))
    # random prompts and chains from the fragment library; decoding from a random seed
    # (greedy, <= 128 tokens) so that a candidate costs what the seeds cost: random
    # self-consistency with 5 votes x 256 tokens would take hours on a CPU. Exemplars
    # come from the pool evolution mutates with (those that fit the run's tasks).
    exemplars = pool.exemplar_pool()
    candidates = [dataclasses.replace(random_strategy(rng, config.model.models, exemplars),
                                      decoding=rng.choice(seeds).decoding)
                  for _ in range(n_random)]
    random_train = score(candidates, first_batch)
    best_random = max(zip(candidates, random_train), key=lambda p: train_fitness(p[1], first_batch))[0]

    picks = {"best seed": best_seed, "random search": best_random, "evolution": evo.best}
    per_task = {name: [float(r.correct) for r in results] for name, results in zip(picks, score(list(picks.values()), heldout))}

    ci_rng = random.Random(0)
    report = {"heldout_tasks": len(heldout), "train_rollouts_each": train_rollouts, "random_candidates": n_random,
              "evolution_s": round(evo_s, 1), "outside_backend_share": round(outside, 4), "methods": {}}
    print(f"\nheld-out tasks: {len(heldout)}; training rollouts: evolution {train_rollouts}, "
          f"random search {n_random} x {len(first_batch)} = {n_random * len(first_batch)}")
    for name, values in per_task.items():
        acc = sum(values) / len(values)
        low, high = bootstrap_ci(values, ci_rng)
        report["methods"][name] = {"accuracy": acc, "ci95": [low, high], "strategy": picks[name].content_hash()}
        print(f"{name:<14} held-out accuracy {acc:6.1%}  95% CI [{low:.1%}, {high:.1%}]")
    families = sorted({task.family for task in heldout})
    report["per_family"] = {name: {} for name in per_task}
    print("per family:    " + "".join(f"{family:>18}" for family in families))
    print("  tasks        " + "".join(f"{sum(t.family == family for t in heldout):>18}" for family in families))
    for name, values in per_task.items():
        cells = []
        for family in families:
            mine = [v for v, task in zip(values, heldout) if task.family == family]
            report["per_family"][name][family] = acc = sum(mine) / len(mine)
            cells.append(f"{acc:>18.1%}")
        print(f"{name:<14}" + "".join(cells))
    for base in ("best seed", "random search"):
        diffs = [e - b for e, b in zip(per_task["evolution"], per_task[base])]
        low, high = bootstrap_ci(diffs, ci_rng)
        report[f"evolution_minus_{base.replace(' ', '_')}"] = {"mean": sum(diffs) / len(diffs), "ci95": [low, high]}
        print(f"evolution - {base:<13} {sum(diffs) / len(diffs):+6.1%}  95% CI [{low:+.1%}, {high:+.1%}]")
    print(f"share of generation wall time outside the backend: {outside:.2%} (target < 3%)")
    print(json.dumps(report))
    journal.close()


if __name__ == "__main__":
    main()
