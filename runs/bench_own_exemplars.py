"""Benchmark: does the run's own data give the model exemplars it can use?

    python runs/bench_own_exemplars.py                                    # three families no library exemplar covers
    python runs/bench_own_exemplars.py --families products,ransom_note --heldout 50 --seeds direct,fewshot

Builds the exemplar pool a run on ``--families`` starts from (the fitting library
exemplars and labeled training tasks, :mod:`evo.engine.exemplar_pool`), makes the
paired-up seed a run adds to its initial population (the first seed, two pool
exemplars of every kind, ``nearest_two``), and scores it and the seed strategies on
the same held-out tasks (held-out split, never in the pool). Prints per family and
overall: accuracy, well-formed answers (an answer block was written), and the paired
bootstrap CI of the paired-up seed minus the best seed. Resumable: scores are
journaled in ``--out-dir``.
"""

from __future__ import annotations

import argparse
import random
from collections import defaultdict
from pathlib import Path

from evo.config.sections import RunConfig
from evo.engine.backend import build_backend
from evo.engine.exemplar_pool import build_pool
from evo.engine.task_pool import TaskPool
from evo.report.stats import bootstrap_ci
from fitness.journal import Journal, evaluate_with_journal
from genomes.operators import paired_up
from genomes.strategy import Strategy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="products,ransom_note,isomorphic_strings")
    parser.add_argument("--seeds", default="direct,stepwise,fewshot", help="seed strategies; the first is paired up")
    parser.add_argument("--heldout", type=int, default=40, help="held-out tasks per family")
    parser.add_argument("--seed", type=int, default=0, help="run seed: labeled draws, pairing and held-out draws")
    parser.add_argument("--out-dir", default="runs/out/bench_own_exemplars")
    args = parser.parse_args()

    config = RunConfig.from_dict({
        "run": {"name": "bench-own-exemplars", "out_dir": args.out_dir, "seed": args.seed},
        "population": {"seeds": args.seeds.split(",")},
        "tasks": {"families": args.families.split(","), "heldout_per_family": args.heldout},
    })
    task_pool = TaskPool(config)
    pool = build_pool(config, task_pool).exemplars()
    seeds = [Strategy.load(name) for name in config.population.seeds]
    paired = paired_up(seeds[0], pool, random.Random(args.seed))
    print(f"pool: {len(pool)} exemplars; {paired.name} holds {len(paired.prompt.exemplars)}: "
          + "; ".join(e.source or "library" for e in paired.prompt.exemplars))
    heldout = task_pool.test(args.heldout, fewer_ok=True)  # reported only: the test split
    strategies = seeds + [paired]
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    with Journal(Path(args.out_dir) / "journal.sqlite") as journal:
        results, new, reused = evaluate_with_journal([(s, heldout) for s in strategies], build_backend(config),
                                                     journal, config.run.seed, 0)
    print(f"{len(heldout)} held-out tasks; {new} completions generated, {reused} reused\n")
    report(strategies, results)


def report(strategies: list[Strategy], results: list[list]) -> None:
    families = sorted({r.family for r in results[0]})
    header = f"{'strategy':<18}" + "".join(f"{f[:18]:>20}" for f in families) + f"{'all':>16}"
    print(header + "\n" + " " * 18 + "".join(f"{'acc / well-formed':>20}" for _ in families))
    for strategy, rs in zip(strategies, results):
        by_family = defaultdict(list)
        for r in rs:
            by_family[r.family].append(r)
        cells = [f"{_acc(by_family[f]):>11} / {_formed(by_family[f]):>5}" for f in families]
        print(f"{strategy.name:<18}" + "".join(f"{c:>20}" for c in cells) + f"{_acc(rs):>9} / {_formed(rs):>4}")
    seeds, paired = results[:-1], results[-1]
    best = max(range(len(seeds)), key=lambda i: sum(r.correct for r in seeds[i]))
    diffs = [float(p.correct) - float(s.correct) for p, s in zip(paired, seeds[best])]
    lo, hi = bootstrap_ci(diffs, random.Random(0))
    print(f"\n{strategies[-1].name} minus {strategies[best].name}: {100 * sum(diffs) / len(diffs):+.1f} points "
          f"(paired 95 % CI [{100 * lo:+.1f}, {100 * hi:+.1f}], {len(diffs)} tasks)")


def _acc(rs) -> str:
    return f"{100 * sum(r.correct for r in rs) / max(len(rs), 1):.1f} %"


def _formed(rs) -> str:
    return f"{100 * sum(r.answer is not None for r in rs) / max(len(rs), 1):.0f} %"


if __name__ == "__main__":
    main()
