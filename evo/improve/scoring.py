"""What `evo improve` scores: the canonical prompt and a strategy, each with and
without an adapter, on the validation split (every round's decision) or the test
split (the one look at the end; :func:`final_test`).

Validation estimates the figure the test reports. The test's accuracy is a mean
over its tasks, so a family weighs there by the tasks its test split gives; a family
whose split is small (chain_sum at level 0 holds 15 test tasks against 250 of the
others) weighs little. Validation draws its own counts (24 / 32 / 32 at 32 a family),
and a plain mean over them weighed that family 9 times more than the test does: in a
benchmark run the choices it made by 10 points were wrong on test by 10
(docs/benchmarks.md). So every validation accuracy a decision reads is the mean of
the per-family accuracies weighted by the test's mix (:func:`report_mix`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from evo.report.stats import bootstrap_ci


def report_mix(loop) -> dict[str, float] | None:
    """Each family's share of the tasks the final test look scores, or None when the
    run scores no test split (then validation is a plain mean over its tasks). Reads
    the test split's size per family, never a question or a score."""
    from evo.engine.task_pool import TaskPool

    if loop.settings.test_per_family == 0 or loop.config.tasks.test_share == 0:
        return None
    counts = Counter(task.family for task in
                     TaskPool(loop.config).held_out("test", loop.settings.test_per_family, fewer_ok=True))
    total = sum(counts.values())
    return {family: count / total for family, count in counts.items()} if total else None


def mixed_accuracy(per_family: dict[str, list[float]], mix: dict[str, float] | None) -> float:
    """The per-family accuracies weighted by ``mix`` (renormalised over the families
    both hold); the plain mean over every task when ``mix`` is None or shares no
    family with ``per_family``."""
    shared = {family: share for family, share in (mix or {}).items() if per_family.get(family)}
    if not shared or sum(shared.values()) == 0:
        scores = [score for family_scores in per_family.values() for score in family_scores]
        return sum(scores) / len(scores) if scores else 0.0
    total = sum(shared.values())
    return sum(share / total * sum(per_family[family]) / len(per_family[family]) for family, share in shared.items())


def score_variants(loop, strategy_json: dict[str, Any], adapter: str | None, split: str, per_family: int,
                   extra: dict[str, dict[str, Any]] | None = None,
                   mix: dict[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """Accuracy of each variant on ``per_family`` tasks per family of ``split``, in one
    batched call: the canonical prompt and ``strategy_json``, each with and without
    ``adapter``, and every variant of ``extra`` (name → an encoded strategy, scored on
    every task; an encoded :class:`genomes.routes.Routes`, each task answered by its
    family's strategy; or ``{"family": F, "strategy": ...}``, scored on F's tasks
    only). ``accuracy`` weighs the families by ``mix`` (:func:`mixed_accuracy`; None:
    a plain mean over the tasks); ``per_family`` holds each family's own accuracy,
    ``correct`` the per-task scores in task order and ``outcomes`` per family the
    tasks' right (1) and wrong (0) as a string, in task order (paired comparisons)."""
    from evo.distill.pairs import canonical_strategy
    from evo.engine.progress import RequestProgress
    from evo.engine.task_pool import TaskPool
    from evo.improve.rounds import with_adapter
    from fitness.evaluate import evaluate_many
    from genomes.routes import in_task_order, route_jobs
    from genomes.strategy import Strategy

    best = Strategy.decode(strategy_json, where="improve state: best strategy")
    canonical = canonical_strategy()
    variants = {"canonical": canonical, "canonical+adapter": with_adapter(canonical, adapter),
                "best": best, "best+adapter": with_adapter(best, adapter)}
    if adapter is None:
        variants = {k: v for k, v in variants.items() if "adapter" not in k}
    tasks = TaskPool(loop.config).held_out(split, per_family, fewer_ok=True)
    answerers = {name: (strategy, tasks) for name, strategy in variants.items()}
    for name, encoded in (extra or {}).items():
        answerers[name] = _decode_variant(name, encoded, tasks)
    jobs, placed = [], {}
    for name, (answerer, subset) in answerers.items():
        its_jobs, positions = route_jobs(answerer, subset)
        placed[name] = (len(jobs), len(its_jobs), positions)
        jobs += its_jobs
    total = sum(len(group) * strategy.decoding.votes for strategy, group in jobs)
    with RequestProgress(split, total, enabled=loop.show_progress) as bar:
        results = evaluate_many(jobs, loop.backend(), seed=loop.config.run.seed, progress=bar.update)
    scores = {}
    for name, (first_job, count, positions) in placed.items():
        rs = in_task_order(results[first_job:first_job + count], positions)
        subset = answerers[name][1]
        by_family = defaultdict(list)
        for task, result in zip(subset, rs):
            by_family[task.family].append(float(result.correct))
        scores[name] = {"accuracy": mixed_accuracy(by_family, mix), "tasks": len(rs),
                        "well_formed": sum(r.answer is not None for r in rs) / len(rs) if rs else 0.0,
                        "per_family": {family: sum(v) / len(v) for family, v in by_family.items()},
                        "correct": [float(r.correct) for r in rs],
                        "outcomes": {family: "".join(str(int(v)) for v in values)
                                     for family, values in by_family.items()}}
    return scores


def _decode_variant(name: str, encoded: dict[str, Any], tasks: list) -> tuple[Any, list]:
    """(answerer, the tasks it answers) of one ``extra`` variant of :func:`score_variants`."""
    from genomes.routes import Routes, is_routes
    from genomes.strategy import Strategy

    where = f"improve state: {name}"
    if is_routes(encoded):
        return Routes.decode(encoded, where=where), tasks
    if "family" in encoded and "strategy" in encoded:
        return (Strategy.decode(encoded["strategy"], where=where),
                [task for task in tasks if task.family == encoded["family"]])
    return Strategy.decode(encoded, where=where), tasks


def final_test(loop, rounds: int) -> dict[str, Any]:
    """The test scores after the last round: the last trained adapter (helpful or not),
    the final best, the first round's best, and the loop's champion (what `evo improve`
    hands back, :func:`evo.improve.steps.decide`), alone and with its per-family routes
    where it has any; the paired gain over the first round's best, with a bootstrap CI,
    of the champion with its routes (else alone: the headline, ``gain_over_first``),
    the champion alone and the final best + adapter (``gains_over_first``)."""
    from evo.improve.rounds import seeded_rng
    from evo.tune.on_test import best_strategy_of

    if loop.settings.test_per_family == 0 or loop.config.tasks.test_share == 0:
        return {"rounds": rounds, "skipped": "no test split (tasks.test_share = 0) or --test-per-family 0"}
    trained = [r["steps"]["train"]["adapter"] for r in loop.state.rounds if "adapter" in r["steps"].get("train", {})]
    adapter = trained[-1] if trained else None
    first = next((r["steps"]["evolve"]["best_strategy"] for r in loop.state.rounds if "evolve" in r["steps"]), None)
    champion = loop.state.champion()
    final = best_strategy_of(loop.run_dir).encode()
    extra = {"first": first} | ({"champion": champion["strategy"]} if champion else {})
    if champion and champion.get("routes"):
        from evo.improve.routes import routes_file

        extra["champion+routes"] = routes_file(champion)
    scores = score_variants(loop, final, adapter, "test", loop.settings.test_per_family, extra=extra)
    gains = {}
    for name in ("champion+routes", "champion", "best+adapter" if "best+adapter" in scores else "best"):
        if name in scores:
            gain = [a - b for a, b in zip(scores[name]["correct"], scores["first"]["correct"])]
            low, high = bootstrap_ci(gain, seeded_rng(loop.config, "improve-test"))
            gains[name] = {"mean": sum(gain) / len(gain), "ci": [low, high], "of": name}
    return {"rounds": rounds, "adapter": adapter, "tasks": scores["best"]["tasks"],
            "champion_from": champion["from"] if champion else None,
            "champion_routes": {family: route["from"] for family, route in (champion or {}).get("routes", {}).items()},
            "accuracy": {name: value["accuracy"] for name, value in scores.items()},
            "well_formed": {name: value["well_formed"] for name, value in scores.items()},
            "per_family": {name: value["per_family"] for name, value in scores.items()},
            "gain_over_first": next(iter(gains.values())), "gains_over_first": gains}
