"""What `evo improve` scores: the canonical prompt and a strategy, each with and
without an adapter, on the validation split (every round's decision) or the test
split (the one look at the end; :func:`final_test`)."""

from __future__ import annotations

from typing import Any

from evo.report.stats import bootstrap_ci


def score_variants(loop, strategy_json: dict[str, Any], adapter: str | None, split: str, per_family: int,
                   extra: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Accuracy of each variant on ``per_family`` tasks per family of ``split``, in one
    batched call: the canonical prompt and ``strategy_json``, each with and without
    ``adapter``, and every strategy of ``extra`` (name → encoded strategy, scored as
    it is: ``first``, ``champion``, ...)."""
    from evo.distill.pairs import canonical_strategy
    from evo.engine.task_pool import TaskPool
    from evo.improve.rounds import with_adapter
    from fitness.evaluate import evaluate_many
    from genomes.strategy import Strategy

    best = Strategy.decode(strategy_json, where="improve state: best strategy")
    canonical = canonical_strategy()
    variants = {"canonical": canonical, "canonical+adapter": with_adapter(canonical, adapter),
                "best": best, "best+adapter": with_adapter(best, adapter)}
    if adapter is None:
        variants = {k: v for k, v in variants.items() if "adapter" not in k}
    for name, encoded in (extra or {}).items():
        variants[name] = Strategy.decode(encoded, where=f"improve state: {name}")
    from evo.engine.progress import RequestProgress

    tasks = TaskPool(loop.config).held_out(split, per_family, fewer_ok=True)
    total = sum(len(tasks) * s.decoding.votes for s in variants.values())
    with RequestProgress(split, total, enabled=loop.show_progress) as bar:
        results = evaluate_many([(s, tasks) for s in variants.values()], loop.backend(), seed=loop.config.run.seed,
                                progress=bar.update)
    return {name: {"accuracy": sum(r.correct for r in rs) / len(rs), "tasks": len(rs),
                   "well_formed": sum(r.answer is not None for r in rs) / len(rs),
                   "correct": [float(r.correct) for r in rs]}
            for name, rs in zip(variants, results)}


def final_test(loop, rounds: int) -> dict[str, Any]:
    """The test scores after the last round: the last trained adapter (helpful or not),
    the final best, the first round's best, and the loop's champion (what `evo improve`
    hands back, :func:`evo.improve.steps.decide`); the paired gain over the first
    round's best, with a bootstrap CI, of the champion (the headline,
    ``gain_over_first``) and of the final best + adapter (``gains_over_first``)."""
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
    scores = score_variants(loop, final, adapter, "test", loop.settings.test_per_family, extra=extra)
    gains = {}
    for name in ("champion", "best+adapter" if "best+adapter" in scores else "best"):
        if name in scores:
            gain = [a - b for a, b in zip(scores[name]["correct"], scores["first"]["correct"])]
            low, high = bootstrap_ci(gain, seeded_rng(loop.config, "improve-test"))
            gains[name] = {"mean": sum(gain) / len(gain), "ci": [low, high], "of": name}
    return {"rounds": rounds, "adapter": adapter, "tasks": scores["best"]["tasks"],
            "champion_from": champion["from"] if champion else None,
            "accuracy": {name: value["accuracy"] for name, value in scores.items()},
            "well_formed": {name: value["well_formed"] for name, value in scores.items()},
            "gain_over_first": next(iter(gains.values())), "gains_over_first": gains}
