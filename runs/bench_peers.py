"""Side by side with the tools people would pick instead, at an equal budget.

    pip install -e '.[peers]'          # gepa, dspy (runs/setup.sh installs them with the dev extra)
    python runs/bench_peers.py --config runs/search.toml --budget 600 --test 100
    python runs/bench_peers.py ... --methods ours,gepa      # a subset; the others are kept

Methods, on the same tasks, model, splits and budget:
- ``ours``: our evolution (``budget.rollouts`` = the budget, validation scoring
  counted in it as the peers' dev sets are: ``budget.counts_validation``), its pick
  what ``evo export`` writes as ``routes.json``: the hall's best by validation as the
  default and a strategy per family where the run took a route
  (:mod:`evo.engine.routing`); the table adds ``ours (one strategy)``, the default
  alone, scored on the same tasks, and ``ours (best validated of any generation)``
  where ``tasks.pick = "best_validated"`` would pick another strategy;
- ``random``: random strategies (prompts, chains, exemplars, constrained modes) at
  the same rollouts, the pick by training fitness;
- ``gepa``: GEPA over our backend (:mod:`evo.peers.gepa_peer`), the bundled model as
  its reflection model, ``max_metric_calls`` = the budget;
- ``evoprompt``: EvoPrompt's GA (:mod:`evo.peers.evoprompt`);
- ``mipro`` and ``bootstrap_rs``: DSPy's MIPROv2 (instructions and demos, the bundled
  model proposing instructions) and BootstrapFewShotWithRandomSearch (demos), over our
  backend with our format (:mod:`evo.peers.dspy_peer`), sized from the budget and
  stopped at it.
The budget is fresh scored completions (a k-vote task costs k), checked per method in
the output; the completions that write a candidate (a reflection, a crossover, an
instruction proposal) are reported apart. The peers see training-split tasks only
(train and dev sets drawn from it). Every pick is rendered into our strategy format and scored by our
verifier on the same test tasks (no method reads them).

Output under ``--out`` (default runs/out/peers): one folder per method with its
``result.json`` (a finished method is never recomputed: rerun after a kill and only
the missing ones run; GEPA also resumes inside its own run), ``table.md``,
``results.json`` and ``peers.png``. The table: method, test accuracy with a bootstrap
CI, the paired difference to ours with its CI, well-formed share, rollouts used,
proposal completions, tokens, wall time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from evo.config.sections import RunConfig, load_config  # noqa: E402
from evo.engine.task_pool import TaskPool  # noqa: E402
from evo.report.stats import bootstrap_ci  # noqa: E402
from genomes.strategy import Strategy  # noqa: E402

METHODS = ("ours", "random", "gepa", "evoprompt", "mipro", "bootstrap_rs")


def main() -> None:
    args = parse_args()
    config = load_config(args.config, {"run": {"seed": args.seed}})
    from evo.engine.backend import build_backend

    report = run(args, config, build_backend(config))
    print(report["table"])
    print(f"\nwrote {Path(args.out) / 'table.md'}")


def run(args, config: RunConfig, backend) -> dict:
    """Every method of ``args.methods`` (those with a result.json are loaded, not run),
    then the test scores and the table."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pool = TaskPool(config)
    levels = pool.start_levels()
    trainset = pool.training_batch([(f, levels[f]) for f in levels for _ in range(args.train)], generation=-11)
    devset = pool.training_batch([(f, levels[f]) for f in levels for _ in range(args.dev)], generation=-12)
    test = pool.test(args.test, fewer_ok=True)
    picks = {}
    for method in args.methods:
        path = out / method / "result.json"
        if path.is_file():
            picks[method] = json.loads(path.read_text())
            print(f"{method}: done earlier ({path})", file=sys.stderr)
            continue
        (out / method).mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        result = RUNNERS[method](args, config, backend, pool, trainset, devset, out / method)
        result["wall_s"] = round(time.perf_counter() - started, 1)
        path.write_text(json.dumps(result, indent=2) + "\n")
        picks[method] = result
        print(f"{method}: {result['rollouts']} rollouts, {result.get('proposals', 0)} proposals, "
              f"{result['wall_s']:.0f} s", file=sys.stderr, flush=True)
    return score_and_write(args, config, backend, picks, test, out)


# ---- the methods -------------------------------------------------------------------
def run_ours(args, config, backend, pool, trainset, devset, out: Path) -> dict:
    from evo.engine.routing import routes_of_run
    from evo.engine.run import resume_evolution, run_evolution
    from evo.rundir import checkpoint
    from evo.rundir.export import ranked_candidates

    run = dataclasses.replace(config.run, out_dir=str(out), name="evolution")
    budget = dataclasses.replace(config.budget, rollouts=args.budget, counts_validation=True)
    cfg = dataclasses.replace(config, run=run, budget=budget)
    if (cfg.run_dir / "checkpoints").is_dir():
        result = resume_evolution(cfg.run_dir, backend=backend, show_progress=True)
    else:
        result = run_evolution(cfg, backend=backend, show_progress=True, overwrite=True)
    last = result.metrics[-1]
    routes = routes_of_run(cfg.run_dir)
    # the other pick (tasks.pick = "best_validated": the best validation of any generation), scored beside
    other_pick = ranked_candidates(checkpoint.load_latest(cfg.run_dir), pick="best_validated")[0][0]["strategy"]
    return {"strategy": routes.default.encode(), "routes": routes.encode(), "other_pick": other_pick,
            "rollouts": last["rollouts"], "validation_rollouts": last["heldout_rollouts"], "tokens": last["tokens"],
            "proposals": 0}


def run_random(args, config, backend, pool, trainset, devset, out: Path) -> dict:
    from bench_search import random_candidates

    from evo.peers.budget import CountingBackend
    from fitness.curriculum import estimate_ability
    from fitness.evaluate import evaluate_many
    from fitness.loss import individual_loss

    counting = CountingBackend(backend, args.budget)
    seeds = [Strategy.load(s) for s in config.population.seeds]
    batch = trainset[: max(1, min(len(trainset), config.tasks.per_family * len(pool.start_levels())))]
    candidates = random_candidates(config, pool, seeds, len(batch), args.budget)
    affordable = []
    for c in candidates:  # random_candidates overshoots by up to one candidate: keep to the budget
        if sum(len(batch) * x.decoding.votes for x in affordable + [c]) <= args.budget:
            affordable.append(c)
    scored = evaluate_many([(c, batch) for c in affordable], counting, seed=config.run.seed)
    weights = config.loss_weights()

    def fitness(results) -> float:
        return -individual_loss(results, batch, estimate_ability(results), weights, config.loss.reference_tokens)[0]

    best = max(zip(affordable, scored), key=lambda p: fitness(p[1]))[0]
    return {"strategy": best.encode(), "rollouts": counting.rollouts, "candidates": len(affordable),
            "tokens": counting.tokens, "proposals": 0}


def run_gepa_method(args, config, backend, pool, trainset, devset, out: Path) -> dict:
    from evo.peers.budget import CountingBackend
    from evo.peers.gepa_peer import run_gepa
    from evo.peers.render import strategy_of

    # GEPA checks its budget between iterations, so an accepted candidate's full
    # valset score can run past it: the hard cap leaves room for that, the output says
    # what was used
    counting = CountingBackend(backend, args.budget + len(devset) + 2 * args.minibatch)
    result = run_gepa(counting, trainset, devset, args.budget, out, seed=config.run.seed, minibatch=args.minibatch)
    # a GEPA run resumed after a kill generates (and counts here) only what was left;
    # GEPA's own count (one metric call = one greedy rollout) covers the whole run
    return {"strategy": strategy_of(result["instruction"], "gepa").encode(),
            "rollouts": max(counting.rollouts, result["metric_calls"]), "rollouts_since_resume": counting.rollouts,
            "proposals": counting.proposal_calls, "tokens": counting.tokens, **result}


def run_evoprompt_method(args, config, backend, pool, trainset, devset, out: Path) -> dict:
    from evo.peers.budget import CountingBackend
    from evo.peers.evoprompt import run_evoprompt
    from evo.peers.render import base_instruction, strategy_of
    from genomes.operators import random_strategy

    counting = CountingBackend(backend, args.budget)
    rng = random.Random(config.run.seed)
    initial = [base_instruction()] + [" ".join(p for p in (s.prompt.role, s.prompt.approach) if p)
                                      for s in (Strategy.load(n) for n in ("stepwise", "fewshot"))]
    while len(initial) < args.population:  # fragment-library instructions fill the population
        s = random_strategy(rng)
        initial.append(" ".join(p for p in (s.prompt.role, s.prompt.approach) if p))
    result = run_evoprompt(counting, devset, initial, args.budget, size=args.population, seed=config.run.seed)
    return {"strategy": strategy_of(result["instruction"], "evoprompt").encode(), "rollouts": counting.rollouts,
            "proposals": counting.proposal_calls, "tokens": counting.tokens, **result}


def dspy_runner(method: str):
    """The runner of one DSPy optimizer (``mipro`` or ``bootstrap_rs``)."""

    def run_dspy_method(args, config, backend, pool, trainset, devset, out: Path) -> dict:
        from evo.peers.budget import CountingBackend
        from evo.peers.dspy_peer import run_dspy
        from evo.peers.render import BASE_SEED

        counting = CountingBackend(backend, args.budget)
        result = run_dspy(method, counting, trainset, devset, args.budget, seed=config.run.seed,
                          max_new_tokens=Strategy.load(BASE_SEED).decoding.max_new_tokens, threads=args.threads)
        return {**result, "rollouts": counting.rollouts, "proposals": counting.proposal_calls,
                "tokens": counting.tokens}

    return run_dspy_method


RUNNERS = {"ours": run_ours, "random": run_random, "gepa": run_gepa_method, "evoprompt": run_evoprompt_method,
           "mipro": dspy_runner("mipro"), "bootstrap_rs": dspy_runner("bootstrap_rs")}


# ---- scoring and the table ---------------------------------------------------------
def score_and_write(args, config, backend, picks: dict, test, out: Path) -> dict:
    from fitness.evaluate import evaluate_many
    from genomes.routes import Routes, jobs_for_all

    answerers = {}
    for m, pick in picks.items():
        if "routes" in pick:
            routes = Routes.decode(pick["routes"], where=f"{m} result")
            answerers[m] = routes
            if routes.routes:  # what routing added, paired on the same tasks
                answerers[f"{m} (one strategy)"] = routes.default
                picks = {**picks, f"{m} (one strategy)": pick}
            other = Strategy.decode(pick["other_pick"], where=f"{m} result") if pick.get("other_pick") else None
            if other is not None and other.content_hash() != routes.default.content_hash():
                answerers[f"{m} (best validated of any generation)"] = other  # what tasks.pick would change
                picks = {**picks, f"{m} (best validated of any generation)": pick}
        else:
            answerers[m] = Strategy.decode(pick["strategy"], where=f"{m} result")
    methods = list(answerers)
    jobs, per_answerer = jobs_for_all(answerers, test)  # every method's requests in one generate call
    scored = per_answerer(evaluate_many(jobs, backend, seed=config.run.seed))
    rng = random.Random(f"{config.run.seed}/peers")
    rows = []
    for m in methods:
        correct = [float(r.correct) for r in scored[m]]
        low, high = bootstrap_ci(correct, rng)
        row = {"method": m, "accuracy": sum(correct) / len(correct), "ci": [low, high],
               "well_formed": sum(r.answer is not None for r in scored[m]) / len(correct),
               "rollouts": picks[m]["rollouts"], "proposals": picks[m].get("proposals", 0),
               "tokens": picks[m].get("tokens"), "wall_s": picks[m].get("wall_s"), "correct": correct,
               "families": by_family(scored[m])}
        if "ours" in scored and m != "ours":
            gain = [a - b for a, b in zip([float(r.correct) for r in scored["ours"]], correct)]
            row["ours_minus"] = [sum(gain) / len(gain), *bootstrap_ci(gain, rng)]
        rows.append(row)
    table = format_table(rows, len(test), args.budget) + "\n\n" + family_table(rows)
    (out / "table.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps({"budget": args.budget, "test_tasks": len(test), "rows": rows},
                                                 indent=2) + "\n")
    plot(rows, out / "peers.png")
    return {"rows": rows, "table": table}


def by_family(results) -> dict[str, list]:
    """Per task family: [test accuracy, tasks] (from :func:`fitness.evaluate.summarise`)."""
    from fitness.evaluate import summarise

    return {row.family: [row.accuracy, row.n] for row in summarise(results) if row.family != "all"}


def family_table(rows: list[dict]) -> str:
    """Test accuracy per family (columns) and method (rows)."""
    families = sorted({f for r in rows for f in r["families"]})
    counts = {f: next(r["families"][f][1] for r in rows if f in r["families"]) for f in families}
    lines = ["| method | " + " | ".join(f"{f} ({counts[f]})" for f in families) + " |",
             "|---|" + "---|" * len(families)]
    for r in rows:
        cells = [f"{r['families'][f][0]:.1%}" if f in r["families"] else "–" for f in families]
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_table(rows: list[dict], tasks: int, budget: int) -> str:
    lines = [f"Test accuracy on {tasks} test tasks, budget {budget} rollouts per method "
             "(95 % bootstrap CIs; ours − method is paired on the same tasks).", "",
             "| method | test accuracy | ours − method | well-formed | rollouts | proposals | tokens | wall |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = r.get("ours_minus")
        diff_text = "–" if diff is None else f"{100 * diff[0]:+.1f} [{100 * diff[1]:+.1f}, {100 * diff[2]:+.1f}]"
        lines.append(f"| {r['method']} | {r['accuracy']:.1%} [{r['ci'][0]:.1%}, {r['ci'][1]:.1%}] | {diff_text} | "
                     f"{r['well_formed']:.0%} | {r['rollouts']} | {r['proposals']} | {r['tokens'] or '–'} | "
                     f"{(r['wall_s'] or 0) / 60:.1f} min |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    xs = range(len(rows))
    means = [r["accuracy"] for r in rows]
    errors = [[m - r["ci"][0] for m, r in zip(means, rows)], [r["ci"][1] - m for m, r in zip(means, rows)]]
    ax.bar(xs, means, yerr=errors, capsize=4, color=["#d95f02" if r["method"] == "ours" else "#3b6e8f" for r in rows])
    ax.set_xticks(list(xs), [r["method"] for r in rows])
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    fig.savefig(path, facecolor="white")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="runs/search.toml")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=int, default=600, help="scored completions per method")
    parser.add_argument("--test", type=int, default=100, help="test tasks per family")
    parser.add_argument("--train", type=int, default=12, help="GEPA's and DSPy's training tasks per family")
    parser.add_argument("--dev", type=int, default=6,
                        help="dev tasks per family (GEPA's and DSPy's valset, EvoPrompt's dev set)")
    parser.add_argument("--minibatch", type=int, default=3, help="GEPA's reflection minibatch")
    parser.add_argument("--population", type=int, default=6, help="EvoPrompt's population")
    parser.add_argument("--threads", type=int, default=32,
                        help="DSPy's threads (their calls are batched into one generate; default 32)")
    parser.add_argument("--methods", default=",".join(METHODS), type=lambda s: [m for m in s.split(",") if m])
    parser.add_argument("--out", default="runs/out/peers")
    args = parser.parse_args(argv)
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"--methods: unknown {', '.join(unknown)} (known: {', '.join(METHODS)})")
    return args


if __name__ == "__main__":
    main()
