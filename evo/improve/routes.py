"""Per-family routes of the `evo improve` champion: a strategy per family where one
answers that family better than the champion, confirmed on validation.

Why: the loop's adapters trade points between families. In the benchmark an adapter
trained on more pairs lifted basic_arithmetic by 14 points over the first round's
best and cost letter_counting 16 (docs/benchmarks.md, twelfth session); a single
champion must take both or neither. The run's evolution already keeps routes
(:mod:`evo.engine.routing`); this does the same for what the loop hands back.

Candidates for family F, all scored on F's validation tasks in the round's
``evaluate`` step: every variant scored on every task (the canonical prompt, the
round's best, the previous champion, each with and without the round's adapter), the
previous champion's route for F and the evolution's route for F (each with and
without the adapter, scored on F's tasks only). The one with the best accuracy on F
(the previous route on a tie, then the order above) becomes F's route when it is not
the champion itself and beats the champion on the same tasks in a one-sided exact
sign test at ``routing.significance`` (:func:`evo.engine.routing.sign_test_p`): with
a handful of candidates per family the best of them is partly luck, and a route has
to beat that.

The champion record's ``routes`` holds per family the route (``from``, ``strategy``,
its validation accuracy against the champion's, wins, losses, p);
``improve/routes.json`` is the champion with its routes, a :class:`genomes.routes.Routes`
file that `evo eval` takes. Only validation tasks choose; the test split is never read.
"""

from __future__ import annotations

from typing import Any

ROUTE = "route:"  # the previous champion's route for a family
EVOLVED = "evolved:"  # the evolution's route for a family (evo.engine.routing)


def family_variants(loop, number: int, adapter: str) -> dict[str, dict[str, Any]]:
    """The family-only variants of round ``number``'s evaluate step (``{"family": F,
    "strategy": ...}``, :func:`evo.improve.scoring.score_variants`): the previous
    champion's routes and the evolution's, each as it is and with ``adapter``; a
    strategy already listed for its family is not scored twice."""
    from evo.improve.rounds import with_adapter
    from genomes.strategy import Strategy

    if not loop.settings.routes:
        return {}
    sources = []
    champion = loop.state.champion(number)
    for family, route in sorted(((champion or {}).get("routes") or {}).items()):
        sources.append((ROUTE + family, family, Strategy.decode(route["strategy"], where=f"champion route {family}")))
    for family, strategy in sorted(_evolved_routes(loop.run_dir).items()):
        sources.append((EVOLVED + family, family, strategy))
    out, seen = {}, set()
    for name, family, strategy in sources:
        for suffix, variant in (("", strategy), ("+adapter", with_adapter(strategy, adapter))):
            key = (family, variant.content_hash())
            if key not in seen:
                seen.add(key)
                out[name + suffix] = {"family": family, "strategy": variant.encode()}
    return out


def _evolved_routes(run_dir) -> dict[str, Any]:
    """The routes the run's latest checkpoint took (none without a checkpoint)."""
    from evo.engine.routing import routes_of_run
    from evo.rundir import checkpoint

    saved = checkpoint.load_latest(run_dir, none_usable_ok=True, warn=lambda message: None)
    return {} if saved is None else dict(routes_of_run(run_dir, saved=saved).routes)


def choose_routes(scores: dict[str, Any], default: str, strategies: dict[str, dict[str, Any]],
                  origins: dict[str, tuple[str, str | None]], significance: float) -> dict[str, dict[str, Any]]:
    """Per family, the route chosen over the champion variant ``default`` (module doc).
    ``scores``: the evaluate record (``outcomes`` per variant and family, ``per_family``);
    ``strategies``: name → encoded strategy of every candidate; ``origins``: name →
    (base, adapter_of) for the record. Families without a route are left out."""
    from evo.engine.routing import sign_test_p
    from genomes.strategy import Strategy

    outcomes = scores.get("outcomes") or {}
    default_hash = Strategy.decode(strategies[default], where="champion").content_hash()
    routes = {}
    for family, default_outcomes in sorted((outcomes.get(default) or {}).items()):
        names = [n for n in _preference_order(strategies) if family in (outcomes.get(n) or {})]
        if not names:
            continue
        accuracy = {n: _mean(outcomes[n][family]) for n in names}
        name = max(names, key=lambda n: accuracy[n])  # max keeps the first of equals
        if Strategy.decode(strategies[name], where=name).content_hash() == default_hash:
            continue
        pairs = list(zip(outcomes[name][family], default_outcomes))
        wins, losses = pairs.count(("1", "0")), pairs.count(("0", "1"))
        p = sign_test_p(wins, losses)
        if wins > losses and p <= significance:
            base, adapter_of = origins[name]
            routes[family] = {"from": base + (f" + {adapter_of}" if adapter_of else ""), "base": base,
                              "adapter_of": adapter_of, "variant": name, "strategy": strategies[name],
                              "validation": accuracy[name],
                              "champion_validation": _mean(default_outcomes), "wins": wins, "losses": losses,
                              "p": round(p, 4)}
    return routes


def _preference_order(strategies: dict[str, Any]) -> list[str]:
    """Every candidate, the previous routes first (a tie keeps one), then the
    evolution's routes, then the variants scored on every task (a family-only
    variant holds outcomes for its own family only)."""
    own = [n for n in strategies if n.startswith(ROUTE)]
    evolved = [n for n in strategies if n.startswith(EVOLVED)]
    shared = [n for n in strategies if not n.startswith((ROUTE, EVOLVED))]
    return own + evolved + shared


def _mean(outcomes: str) -> float:
    return outcomes.count("1") / len(outcomes) if outcomes else 0.0


def routed_accuracy(scores: dict[str, Any], default: str, routes: dict[str, dict[str, Any]]) -> float:
    """The champion's validation accuracy with its routes: each family's outcomes from
    its route's variant where it has one, weighed as every validation accuracy is
    (:func:`evo.improve.scoring.mixed_accuracy` with the record's ``mix``)."""
    from evo.improve.scoring import mixed_accuracy

    outcomes = scores["outcomes"]
    answered_by = {family: routes[family]["variant"] if family in routes else default for family in outcomes[default]}
    per_family = {family: [float(c) for c in outcomes[name][family]] for family, name in answered_by.items()}
    return mixed_accuracy(per_family, scores.get("mix"))


def routes_file(champion: dict[str, Any]) -> dict[str, Any]:
    """``improve/routes.json``: the champion and its routes as an encoded
    :class:`genomes.routes.Routes` (checked by decoding it)."""
    from genomes.routes import Routes

    routes = champion.get("routes") or {}
    encoded = {"kind": "routes", "default": champion["strategy"],
               "routes": {family: route["strategy"] for family, route in routes.items()},
               "evidence": {family: {k: route[k] for k in ("from", "validation", "champion_validation", "wins",
                                                           "losses", "p")} for family, route in routes.items()}}
    return Routes.decode(encoded, where="improve champion routes").encode()
