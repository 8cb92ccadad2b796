"""Two runs of runs/bench_search.py side by side: the paired test gain of one
setting's evolved best over another's, per family, pooled over the run seeds both hold.

    python runs/bench_search.py --config A.toml --heldout 250 --seed 0 --out-dir runs/out/a
    python runs/bench_search.py --config B.toml --heldout 250 --seed 0 --out-dir runs/out/b
    python runs/compare_search.py runs/out/a runs/out/b [--method evolution]

Each seed's test tasks depend on the seed and the task settings only, so two configs
that differ in a search setting (population.proposals, say) score the same tasks:
the script checks that, then pairs task by task (95 % percentile bootstrap).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from evo.report.stats import bootstrap_ci


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="bench_search --out-dir of the setting to measure")
    parser.add_argument("b", type=Path, help="bench_search --out-dir of the setting to compare with")
    parser.add_argument("--method", default="evolution", help="which pick to compare (default: evolution)")
    args = parser.parse_args()
    a_seeds = {p.parent.name for p in args.a.glob("seed*/result.json")}
    b_seeds = {p.parent.name for p in args.b.glob("seed*/result.json")}
    seeds = sorted(a_seeds & b_seeds)
    if not seeds:
        raise SystemExit(f"no run seed has a result.json in both {args.a} and {args.b}")
    rows: list[tuple[str, float]] = []  # (family, a - b) per task
    for seed in seeds:
        a, b = (json.loads((d / seed / "result.json").read_text()) for d in (args.a, args.b))
        if a["families"] != b["families"] or a["constant"] != b["constant"]:
            raise SystemExit(f"{seed}: the two runs scored different test tasks; compare runs of the same task settings")
        diffs = [x - y for x, y in zip(a["correct"][args.method], b["correct"][args.method])]
        rows += list(zip(a["families"], diffs))
        print(f"{seed}: {args.method} {mean(a['correct'][args.method]):.1%} vs {mean(b['correct'][args.method]):.1%} "
              f"({len(diffs)} tasks; strategies {a['strategies'].get(args.method)} vs {b['strategies'].get(args.method)})")
    rng = random.Random(0)
    print(f"\n{args.a.name} - {args.b.name}, pooled over {', '.join(seeds)} (95 % paired bootstrap CI):")
    for family in [*sorted({f for f, _ in rows}), "all"]:
        diffs = [d for f, d in rows if family in (f, "all")]
        low, high = bootstrap_ci(diffs, rng)
        print(f"  {family:<22}{len(diffs):>6} tasks  {100 * mean(diffs):+5.1f} [{100 * low:+5.1f}, {100 * high:+5.1f}]")


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


if __name__ == "__main__":
    main()
