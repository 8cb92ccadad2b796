"""The five steps of an `evo improve` round (see :mod:`evo.improve.rounds`). Each takes
the loop and the round number and returns ``(result, status)``: the record to keep,
and None to go on, or the status that ends the round (``done``, ``skipped: ...``).
Bad input inside a step (a corrupt adapter, a failed training) raises InputError,
which fails that round only."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from genomes.errors import InputError


def evolve(loop, number: int) -> tuple[dict[str, Any], str | None]:
    from evo.engine.run import resume_evolution, run_evolution
    from evo.rundir import checkpoint
    from evo.rundir.export import pick_validation
    from evo.tune.on_test import best_strategy_of

    target = loop.per_round * number
    saved = checkpoint.load_latest(loop.run_dir, none_usable_ok=True) if (loop.run_dir / "config.json").exists() else None
    inject = loop.state.adapter_to_inject(number)
    # inject only where this round's evolution has not begun: a resumed step must not inject twice
    fresh_round = saved is not None and saved.generation <= loop.per_round * (number - 1)
    adapters = [inject] if inject and fresh_round else []
    if saved is None and not (loop.run_dir / "config.json").exists():
        config = dataclasses.replace(loop.config, run=dataclasses.replace(loop.config.run, generations=target))
        result = run_evolution(config, backend=loop.backend(), show_progress=loop.show_progress)
    elif saved is not None and saved.generation >= target:
        result = None
    else:
        result = resume_evolution(loop.run_dir, generations=target, backend=loop.backend(),
                                  show_progress=loop.show_progress, inject_adapters=adapters)
    best = best_strategy_of(loop.run_dir)
    metrics = result.metrics[-1] if result is not None else checkpoint.load_latest(loop.run_dir).state["metrics"][-1]
    return {"generations": target, "injected": adapters[0] if adapters else None, "best_hash": best.content_hash(),
            "best_strategy": best.encode(), "validation_accuracy": pick_validation(metrics)}, None


def mine(loop, number: int) -> tuple[dict[str, Any], str | None]:
    from evo.distill.pairs import PairRules, distill_run
    from evo.improve.harvest import harvest
    from genomes.strategy import Strategy

    harvested = harvest(loop, number)
    weights = dataclasses.asdict(loop.config.loss_weights())
    rules = PairRules(use_incorrect=weights["beta"] > 0, use_longer=weights["alpha"] > 0)
    out = loop.state.path / f"round-{number}" / "distill"
    prompts = []
    if loop.settings.pair_prompts == "canonical+best":  # also under the prompt the adapter will serve
        best = Strategy.decode(loop.state.round(number)["steps"]["evolve"]["best_strategy"], where="improve state")
        prompts.append(dataclasses.replace(best, lora=None))
    result = distill_run(loop.run_dir, out, rules, prompt_strategies=prompts)
    record = {"pairs": len(result.pairs), "pairs_path": str(result.pairs_path), "kinds": result.summary["kinds"],
              "prompts": loop.settings.pair_prompts, "harvest": harvested}
    if len(result.pairs) < loop.settings.min_pairs:
        why = (f"skipped: {len(result.pairs)} pairs, fewer than --min-pairs {loop.settings.min_pairs} (the journal "
               "has too few training tasks with both a correct and a rejected completion)")
        loop.say(f"round {number}: {why}")
        return record, why
    return record, None


def train(loop, number: int) -> tuple[dict[str, Any], str | None]:
    from evo.distill.train import train_on_pairs

    mined = loop.state.round(number)["steps"]["mine"]
    trained = train_on_pairs(loop.trainer, mined["pairs_path"], loop.run_dir, loop.config, loop.settings.train,
                             log=loop.show_progress or None)
    return {"adapter": str(trained.path), "trained_hash": trained.trained_hash,
            "train_loss": trained.record.get("train_loss")}, None


def evaluate(loop, number: int) -> tuple[dict[str, Any], str | None]:
    """Each variant's validation accuracy in the test's family mix (what decide reads),
    with its per-family accuracies and the mix (``mix`` None: a plain mean)."""
    from evo.improve.routes import family_variants
    from evo.improve.scoring import report_mix, score_variants

    entry = loop.state.round(number)["steps"]
    adapter = entry["train"]["adapter"]
    check_adapter(adapter)
    mix = report_mix(loop)
    extra = _champion_variants(loop, number, adapter) | family_variants(loop, number, adapter)
    scores = score_variants(loop, entry["evolve"]["best_strategy"], adapter, "validation",
                            loop.settings.validation_per_family, extra=extra, mix=mix)
    return {name: value["accuracy"] for name, value in scores.items()} | {
        "tasks": scores["best"]["tasks"], "mix": mix,
        "per_family": {name: value["per_family"] for name, value in scores.items()},
        "outcomes": {name: value["outcomes"] for name, value in scores.items()},
        "family_variants": {name: variant for name, variant in extra.items() if "family" in variant}}, None


def decide(loop, number: int) -> tuple[dict[str, Any], str | None]:
    """Inject the adapter next round when best + adapter beats best on validation, and
    crown the round's champion: the best on validation of the previous champion (as
    it is and with this round's adapter), the round's best and best + adapter. Ties
    keep the incumbent, so the champion changes only on evidence, and the loop never
    hands back a strategy that scored worse on validation than one it had. Not the
    canonical prompt + adapter: as a candidate it won validation (42 %) and lost
    test (29.5 % against the first round's best's 40.8 %; docs/benchmarks.md). Then
    the champion's per-family routes (:mod:`evo.improve.routes`): a family keeps the
    strategy that answered it before unless a variant beats that on the family's
    validation tasks in a sign test."""
    from evo.improve.rounds import with_adapter
    from genomes.strategy import Strategy

    entry = loop.state.round(number)["steps"]
    scores, adapter = entry["evaluate"], entry["train"]["adapter"]
    helps = scores["best+adapter"] > scores["best"]
    why = (f"best + adapter {scores['best+adapter']:.1%} vs best {scores['best']:.1%} on validation; canonical + adapter "
           f"{scores['canonical+adapter']:.1%} vs canonical {scores['canonical']:.1%}")
    loop.say(f"round {number}: the adapter {'helps: injected next round' if helps else 'does not help'} ({why})")
    best = Strategy.decode(entry["evolve"]["best_strategy"], where="improve state: best strategy")
    candidates = _champion_variants(loop, number, adapter) | {
        "best": best.encode(), "best+adapter": with_adapter(best, adapter).encode()}
    name = max(candidates, key=lambda n: scores[n])  # max keeps the first of equals: the incumbent
    previous = loop.state.champion(number)
    family_variants = scores.get("family_variants") or {}
    origins = _origins(number, previous, family_variants)
    base, adapter_of = origins[name]
    champion = {"from": base + (f" + {adapter_of}" if adapter_of else ""), "base": base, "adapter_of": adapter_of,
                "strategy": candidates[name], "validation": scores[name]}
    if scores.get("outcomes") and loop.settings.routes:
        champion |= _routes_of(loop, scores, name, candidates, adapter, origins,
                               _incumbents(previous, best, scores["outcomes"][name]))
    loop.state.save_champion(champion)
    loop.say(f"round {number}: champion: {champion['from']} ({champion['validation']:.1%} on validation)")
    for family, route in sorted((champion.get("routes") or {}).items()):
        how = "kept: no variant beat it" if route.get("kept") else "beat what the family had"
        loop.say(f"round {number}: route for {family}: {route['from']} ({how}; {route['validation']:.1%} against "
                 f"the champion's {route['champion_validation']:.1%} on its validation tasks)")
    return {"helps": helps, "inject": adapter if helps else None, "why": why, "champion": champion}, "done"


def _routes_of(loop, scores: dict[str, Any], name: str, candidates: dict[str, Any], adapter: str,
               origins: dict[str, tuple[str, str | None]], incumbents: dict[str, Any]) -> dict[str, Any]:
    """The champion record's ``routes`` and ``validation_routed``: every variant the
    evaluate step scored is a candidate for a family's route."""
    from evo.distill.pairs import canonical_strategy
    from evo.improve.rounds import with_adapter
    from evo.improve.routes import choose_routes, routed_accuracy

    canonical = canonical_strategy()
    strategies = candidates | {"canonical": canonical.encode(),
                               "canonical+adapter": with_adapter(canonical, adapter).encode()}
    strategies |= {n: v["strategy"] for n, v in (scores.get("family_variants") or {}).items()}
    routes = choose_routes(scores, name, strategies, origins, loop.config.routing.significance, incumbents)
    return {"routes": routes, "validation_routed": routed_accuracy(scores, name, routes)}


def _incumbents(previous: dict[str, Any] | None, best, families) -> dict[str, Any]:
    """Family → the strategy that answered it before this round: the previous
    champion's route for it, else the previous champion; in round 1 the round's best
    (what the evolution hands over before any adapter)."""
    if previous is None:
        return {family: best.encode() for family in families}
    routes = previous.get("routes") or {}
    return {family: routes[family]["strategy"] if family in routes else previous["strategy"] for family in families}


def _origins(number: int, previous: dict[str, Any] | None,
             family_variants: dict[str, dict[str, Any]]) -> dict[str, tuple[str, str | None]]:
    """(base, adapter_of) of every variant round ``number`` scored: what a route's
    record says it is."""
    from evo.improve.routes import EVOLVED, ROUTE

    adapter_of = f"round {number}'s adapter"
    origins = {"canonical": ("the canonical prompt", None), "canonical+adapter": ("the canonical prompt", adapter_of),
               "best": (f"round {number}'s best", None), "best+adapter": (f"round {number}'s best", adapter_of)}
    if previous:
        origins |= {"champion": (previous["base"], previous["adapter_of"]),
                    "champion+adapter": (previous["base"], adapter_of)}
    for name, variant in family_variants.items():
        with_it = name.endswith("+adapter")
        stem = name.removesuffix("+adapter")
        if stem.startswith(ROUTE):
            route = previous["routes"][variant["family"]]
            origins[name] = (route["base"], adapter_of if with_it else route["adapter_of"])
        elif stem.startswith(EVOLVED):
            origins[name] = (f"round {number}'s evolved route for {variant['family']}", adapter_of if with_it else None)
    return origins


def _champion_variants(loop, number: int, adapter: str) -> dict[str, dict[str, Any]]:
    """The previous champion as it is and with this round's adapter (none in round 1)."""
    from evo.improve.rounds import with_adapter
    from genomes.strategy import Strategy

    champion = loop.state.champion(number)
    if champion is None:
        return {}
    strategy = Strategy.decode(champion["strategy"], where="improve state: champion")
    return {"champion": strategy.encode(), "champion+adapter": with_adapter(strategy, adapter).encode()}


def check_adapter(path: str) -> None:
    """A PEFT adapter directory that loads: one clear line otherwise."""
    import json

    directory = Path(path)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        if not (directory / name).is_file():
            raise InputError(f"adapter {directory}: {name} is missing")
    try:
        json.loads((directory / "adapter_config.json").read_text(encoding="utf-8"))
    except ValueError as e:
        raise InputError(f"adapter {directory}: adapter_config.json is damaged ({e})") from e
