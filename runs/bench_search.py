"""Benchmark: does evolution find better strategies than the baselines?

    python runs/bench_search.py                       # the quickstart recipe, one run seed
    python runs/bench_search.py --config runs/search.toml --heldout 250 --seed 1
    python runs/bench_search.py --config runs/any_family.toml --seeds 3 --heldout 150
    python runs/bench_search.py ... --resume          # after a kill: finished seeds are not rerun

For each run seed (``--seeds N``: seeds S, S+1, ..., S+N-1 with S = ``--seed`` or the
config's), on one shared backend and one enlarged set of that seed's test tasks (the
test split: no choice ever reads it), compares the test accuracy of:

  (a) the best seed strategy   (of ``population.seeds``, by training fitness on the
                                run's first batch),
  (b) random search            (random prompt, chain and constrained-decoding genes,
                                exemplars from the run's own pool, a seed's decoding,
                                scored on the run's first training batch until as many
                                training rollouts as (c) spent are spent, each vote
                                counted; the best by training fitness is kept),
  (c) evolution                (the config's run; the hall of fame's best),
  (d) evolution + routes       (what `evo export` writes as routes.json: the export
                                pick, and a strategy per family where the run took a
                                route, evo.engine.routing).

Per seed and pooled over seeds, per family and overall: accuracy of each, the mean
held-out gain of (c) over (a) and over (b) with a 95 % paired bootstrap CI (the
per-task differences of every seed pooled), and the share of well-formed answers of
(c), next to the "constant answer" baseline (always the family's most common
training answer: on a True/False family about 50 % is chance, not reasoning). Each
seed's figures are saved in ``--out-dir/seed<S>/result.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from pathlib import Path

from evo.config.sections import RunConfig, load_config, served_models
from evo.engine.backend import build_backend
from evo.engine.exemplar_pool import build_pool
from evo.engine.loop import usable_constrain_modes
from evo.engine.run import resume_evolution, run_evolution
from evo.engine.task_pool import TaskPool, answer_key
from evo.report.stats import bootstrap_ci
from fitness.curriculum import estimate_ability
from fitness.journal import Journal, evaluate_with_journal
from fitness.loss import individual_loss
from genomes.operators import random_strategy
from genomes.strategy import Strategy

METHODS = ("best seed", "random search", "evolution", "evolution + routes")


def main() -> None:
    args = parse_args()
    config = load_config(args.config, {"run": {"out_dir": args.out_dir}})
    first = args.seed if args.seed is not None else config.run.seed
    backend = None
    results = []
    for seed in range(first, first + args.seeds):
        out_dir = Path(args.out_dir) / f"seed{seed}"
        saved = out_dir / "result.json"
        if args.resume and saved.is_file():
            print(f"seed {seed}: finished before, read from {saved}")
            results.append(json.loads(saved.read_text()))
            continue
        seed_config = seeded_config(args, seed, out_dir)
        backend = backend or build_backend(seed_config)
        result = run_seed(args, seed_config, backend, out_dir)
        saved.write_text(json.dumps(result) + "\n")
        results.append(result)
        print_seed(result)
    report = pooled(results)
    print_pooled(report)
    print(json.dumps(report))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="runs/quickstart.toml")
    parser.add_argument("--heldout", type=int, default=24,
                        help="held-out tasks per family for the comparison (a family whose held-out split "
                             "is smaller gives all of it: chain_sum level 0 has 39)")
    parser.add_argument("--out-dir", default="runs/out/bench_search")
    parser.add_argument("--generations", type=int, default=None, help="override run.generations of the config")
    parser.add_argument("--seed", type=int, default=None, help="first run seed (default: the config's run.seed)")
    parser.add_argument("--seeds", type=int, default=1, help="run seeds to pool (default 1)")
    parser.add_argument("--resume", action="store_true",
                        help="continue in --out-dir: finished seeds are read back, an interrupted evolution resumes "
                             "from its last checkpoint, journaled scores are not recomputed. Pass the same --config, "
                             "--seed and --generations")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    return args


def seeded_config(args, seed: int, out_dir: Path) -> RunConfig:
    run = {"name": "evolution", "out_dir": str(out_dir), "seed": seed}
    if args.generations is not None:
        run["generations"] = args.generations
    return load_config(args.config, {"run": run})


def run_seed(args, config: RunConfig, backend, out_dir: Path) -> dict:
    """Evolution, the best seed and random search at equal rollouts, scored on one held-out set."""
    weights = config.loss_weights()
    big = dataclasses.replace(config, tasks=dataclasses.replace(config.tasks, heldout_per_family=args.heldout))
    pool = TaskPool(big)
    heldout = pool.test(args.heldout, fewer_ok=True)  # reported only: the test split, which no choice reads
    constant = pool.majority_answers()  # per family: always giving this answer is the floor to beat
    out_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal(out_dir / "bench_journal.sqlite")

    def score(strategies: list[Strategy], tasks) -> list[list]:
        return evaluate_with_journal([(s, tasks) for s in strategies], backend, journal, config.run.seed, 0)[0]

    def train_fitness(results, tasks) -> float:
        return -individual_loss(results, tasks, estimate_ability(results), weights, config.loss.reference_tokens)[0]

    started = time.perf_counter()
    evo = evolve(args, config, backend)
    evo_s = time.perf_counter() - started  # with --resume: this session's share only
    last = evo.metrics[-1]
    train_rollouts = last["rollouts"] - last["heldout_rollouts"]
    first_batch = evo.training_batches[0]  # what every individual of generation 0 was scored on

    seeds = [Strategy.load(s) for s in config.population.seeds]
    seed_train = score(seeds, first_batch)
    best_seed = max(zip(seeds, seed_train), key=lambda p: train_fitness(p[1], first_batch))[0]

    candidates = random_candidates(config, pool, seeds, len(first_batch), train_rollouts)
    random_train = score(candidates, first_batch)
    best_random = max(zip(candidates, random_train), key=lambda p: train_fitness(p[1], first_batch))[0]

    from evo.engine.routing import routes_of_run
    from genomes.routes import jobs_for_all

    routes = routes_of_run(config.run_dir)
    picks = dict(zip(METHODS, (best_seed, best_random, evo.best, routes)))
    jobs, per_answerer = jobs_for_all(picks, heldout)
    scored = per_answerer(evaluate_with_journal(jobs, backend, journal, config.run.seed, 0)[0])
    journal.close()
    return {
        "seed": config.run.seed,
        "families": [t.family for t in heldout],
        "constant": [float(answer_key(t) == constant.get(t.family)) for t in heldout],
        "correct": {m: [float(r.correct) for r in rs] for m, rs in scored.items()},
        "well_formed": {m: [float(bool(r.steps) and r.answer is not None and r.response is not None) for r in rs]
                        for m, rs in scored.items()},
        "strategies": {m: s.content_hash() for m, s in picks.items() if isinstance(s, Strategy)},
        "routes": {family: s.content_hash() for family, s in routes.routes.items()},
        "evolved_constrain": evo.best.decoding.constrain,
        "train_rollouts": train_rollouts,
        "random_candidates": len(candidates),
        "random_rollouts": sum(len(first_batch) * c.decoding.votes for c in candidates),
        "evolution_s": round(evo_s, 1),
        "outside_backend_share": round(1 - last["backend_s"] / last["wall_s"], 4),
    }


def evolve(args, config: RunConfig, backend):
    if args.resume and (config.run_dir / "checkpoints").is_dir():
        saved = RunConfig.from_saved(json.loads((config.run_dir / "config.json").read_text()), "config.json")
        if saved.to_dict() != config.to_dict():  # another --config or --seed: its batches would not match
            raise SystemExit(f"--resume: {config.run_dir} holds a run of another config; "
                             "pass the --config, --seed and --generations it was started with")
        return resume_evolution(config.run_dir, config.run.generations, backend=backend)
    return run_evolution(config, backend=backend, overwrite=True)


def random_candidates(config: RunConfig, pool: TaskPool, seeds: list[Strategy], batch: int, rollouts: int) -> list:
    """Random strategies until their rollouts on a ``batch``-task batch reach ``rollouts``
    (at least one): prompts and chains from the fragment library, exemplars from the
    run's own pool (library and labeled; evolution adds bootstrapped ones as it goes),
    constrained decoding from the run's modes, a seed's decoding otherwise (greedy,
    <= 128 tokens: random self-consistency with 5 votes x 256 tokens would take hours
    on a CPU)."""
    rng = random.Random(config.run.seed + 1)
    exemplars = build_pool(config, pool, show_progress=False).exemplars()
    modes = usable_constrain_modes(config, pool, show_progress=False)
    candidates: list[Strategy] = []
    spent = 0
    while not candidates or spent < rollouts:
        s = random_strategy(rng, served_models(config), exemplars, constrain_modes=modes)
        decoding = dataclasses.replace(rng.choice(seeds).decoding, constrain=s.decoding.constrain)
        candidates.append(dataclasses.replace(s, decoding=decoding))
        spent += batch * decoding.votes
    return candidates


# ---- figures -----------------------------------------------------------------------
def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def pooled(results: list[dict]) -> dict:
    """Per family and overall, pooled over seeds: accuracy per method, gains of
    evolution with paired bootstrap CIs, well-formed share of evolution."""
    rng = random.Random(0)
    families = sorted({f for r in results for f in r["families"]})
    report: dict = {"seeds": [r["seed"] for r in results], "groups": {}}
    for group in [*families, "all"]:
        rows = [(r, i) for r in results for i, f in enumerate(r["families"]) if group in (f, "all")]
        entry = {"tasks": len(rows)}
        for method in methods_of(results):
            entry[method] = _mean([r["correct"][method][i] for r, i in rows])
        gains = [("evolution", "best seed"), ("evolution", "random search")]
        if "evolution + routes" in entry:
            gains += [("evolution + routes", "evolution"), ("evolution + routes", "random search")]
        for method, base in gains:
            diffs = [r["correct"][method][i] - r["correct"][base][i] for r, i in rows]
            low, high = bootstrap_ci(diffs, rng)
            name = f"gain over {base}" if method == "evolution" else f"routes gain over {base}"
            entry[name] = {"mean": _mean(diffs), "ci95": [low, high]}
        if all("constant" in r for r, _ in rows):
            entry["constant answer"] = _mean([r["constant"][i] for r, i in rows])
        entry["evolution well-formed"] = _mean([r["well_formed"]["evolution"][i] for r, i in rows])
        entry["best seed well-formed"] = _mean([r["well_formed"]["best seed"][i] for r, i in rows])
        report["groups"][group] = entry
    report["train_rollouts"] = [r["train_rollouts"] for r in results]
    report["random_rollouts"] = [r["random_rollouts"] for r in results]
    return report


def methods_of(results: list[dict]) -> list[str]:
    """The methods every result scored (seeds saved before routes lack the last)."""
    return [m for m in METHODS if all(m in r["correct"] for r in results)]


def print_seed(result: dict) -> None:
    accs = ", ".join(f"{m} {_mean(result['correct'][m]):.1%}" for m in methods_of([result]))
    print(f"seed {result['seed']}: {len(result['families'])} held-out tasks; {accs}; rollouts evolution "
          f"{result['train_rollouts']}, random {result['random_rollouts']} ({result['random_candidates']} candidates); "
          f"evolved constrain={result['evolved_constrain']}; outside backend {result['outside_backend_share']:.2%}")


def print_pooled(report: dict) -> None:
    print(f"\npooled over run seeds {report['seeds']} (95% paired bootstrap CIs over tasks):")
    print(f"{'family':<22}{'tasks':>6}{'const':>8}{'seed':>8}{'random':>8}{'evolved':>8}   {'gain over seed':<26}"
          f"{'gain over random':<26}{'well-formed (seed -> evolved)'}")
    for group, e in report["groups"].items():
        gains = []
        for base in ("best seed", "random search"):
            g = e[f"gain over {base}"]
            gains.append(f"{g['mean'] * 100:+5.1f} [{g['ci95'][0] * 100:+5.1f}, {g['ci95'][1] * 100:+5.1f}]")
        const = f"{e['constant answer']:>8.1%}" if "constant answer" in e else f"{'-':>8}"
        print(f"{group:<22}{e['tasks']:>6}{const}{e['best seed']:>8.1%}{e['random search']:>8.1%}{e['evolution']:>8.1%}   "
              f"{gains[0]:<26}{gains[1]:<26}{e['best seed well-formed']:.0%} -> {e['evolution well-formed']:.0%}")
    routed = {g: e for g, e in report["groups"].items() if "evolution + routes" in e}
    if routed:
        print(f"\n{'family':<22}{'tasks':>6}{'routes':>8}   {'routes - evolved':<26}{'routes - random':<26}")
        for group, e in routed.items():
            gains = [f"{g['mean'] * 100:+5.1f} [{g['ci95'][0] * 100:+5.1f}, {g['ci95'][1] * 100:+5.1f}]"
                     for g in (e["routes gain over evolution"], e["routes gain over random search"])]
            print(f"{group:<22}{e['tasks']:>6}{e['evolution + routes']:>8.1%}   {gains[0]:<26}{gains[1]:<26}")


if __name__ == "__main__":
    main()
