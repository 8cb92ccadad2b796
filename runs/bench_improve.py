"""The improve loop's benchmark: K rounds of `evo improve` on the quickstart families,
then the one look at the test split.

    python runs/bench_improve.py                       # 3 rounds on runs/improve.toml; 515 test tasks
    python runs/bench_improve.py --rounds 3 --resume   # continue a killed benchmark where it stopped
    python runs/bench_improve.py --seed 1              # another run seed: another sample of the whole loop

Prints, per round, the validation accuracy of the canonical prompt, the champion and
the round's best strategy, each with and without that round's adapter, and at the
end, on the test split (never read by any round): the canonical prompt with and
without the last adapter, the first round's best, the final best with and without the
adapter, and the champion (what the loop hands back) alone and with its per-family
routes, with the paired gains over the first round's best of each and of the final
best + adapter, each with a 95 % bootstrap CI. Test: 250 tasks per family where the split holds them (chain_sum's test
split at level 0 holds 15). Validation, every round's decision: 250 a family too (524
tasks), each family weighted by its share of the test tasks; at 32 a family the
composition of so few tasks decided (letter_counting's most common answer, "1", was
31 % of its 32 validation tasks and 51 % of its 250 test tasks). The targets (issue
"close the loop"): canonical + adapter >= 15 % on test, and best + adapter >= first round's best + 8 points with a CI
excluding 0. Writes OUT_DIR/improve-bench/improve/state.json and report.md; about an
hour on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evo.config.sections import load_config  # noqa: E402
from evo.distill.train import TrainSettings  # noqa: E402
from evo.improve.report import round_rows, test_rows  # noqa: E402
from evo.improve.rounds import PAIR_PROMPTS, ImproveSettings, improve  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="runs/improve.toml")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--generations-per-round", type=int, default=3)
    parser.add_argument("--validation-per-family", type=int, default=250)
    parser.add_argument("--test-per-family", type=int, default=250)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--pair-prompts", choices=PAIR_PROMPTS, default=ImproveSettings.pair_prompts,
                        help="the prompts the adapter's pairs are trained under (evo improve --pair-prompts)")
    parser.add_argument("--harvest-per-family", type=int, default=ImproveSettings.harvest_per_family,
                        help="fresh training tasks per family the leading strategies answer before mining (default 0: none)")
    parser.add_argument("--harvest-strategies", type=int, default=ImproveSettings.harvest_strategies)
    parser.add_argument("--no-routes", dest="routes", action="store_false",
                        help="the champion alone, no per-family routes (evo improve --no-routes)")
    parser.add_argument("--seed", type=int, default=None,
                        help="run.seed: the evolution's and training's draws and which validation and test tasks are drawn "
                             "(the partition into splits keeps tasks.split_seed)")
    parser.add_argument("--name", default="improve-bench", help="run directory name under --out-dir")
    parser.add_argument("--out-dir", default="runs/out")
    parser.add_argument("--resume", action="store_true", help="keep an existing benchmark run and continue it")
    args = parser.parse_args()

    run = {"name": args.name, "out_dir": args.out_dir} | ({} if args.seed is None else {"seed": args.seed})
    config = load_config(args.config, {"run": run})
    if config.run_dir.exists() and not args.resume:
        shutil.rmtree(config.run_dir)
    settings = ImproveSettings(rounds=args.rounds, generations_per_round=args.generations_per_round,
                               validation_per_family=args.validation_per_family,
                               test_per_family=args.test_per_family, pair_prompts=args.pair_prompts,
                               harvest_per_family=args.harvest_per_family, harvest_strategies=args.harvest_strategies,
                               routes=args.routes, train=TrainSettings(steps=args.steps))
    started = time.perf_counter()
    state = improve(config, settings)
    print("\n".join(round_rows(state) + [""] + test_rows(state.final)))
    summary = {"rounds": state.rounds, "final": state.final, "wall_s": round(time.perf_counter() - started, 1),
               "command": " ".join(sys.argv)}
    (config.run_dir / "improve" / "bench.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
