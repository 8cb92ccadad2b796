"""Per-family routes of the `evo improve` champion: each family keeps the strategy that
answered it until a variant beats that on the family's validation tasks; a family
whose strategy is not the champion has a route.

Why: the loop's adapters trade points between families. In the benchmark an adapter
trained on more pairs lifted basic_arithmetic by 14 points over the first round's
best and cost letter_counting 16 (docs/benchmarks.md, twelfth session); a single
champion must take both or neither. The run's evolution already keeps routes
(:mod:`evo.engine.routing`); this does the same for what the loop hands back.

Candidates for family F, all scored on F's validation tasks in the round's
``evaluate`` step: every variant scored on every task (the canonical prompt, the
round's best, the previous champion, each with and without the round's adapter), the
previous champion's route for F and the evolution's route for F (each with and
without the adapter, scored on F's tasks only). F's incumbent is what answered it
before the round: the previous champion's route for F, else the previous champion;
in round 1 the round's best (the evolution's, before any adapter). F changes strategy
only on evidence: the most accurate of the candidates that beat the incumbent on F's
tasks in a one-sided exact sign test at ``routing.significance``
(:func:`evo.engine.routing.sign_test_p`) answers F, else the incumbent does; F has a
route when that is not the new champion. With a dozen candidates per family the most
accurate is partly luck, and with 250 tasks a family the champion's few points of
mixed-validation lead say little about each family: in the benchmark's run with 128
harvested tasks a family the champion took letter_counting from 50.8 % to 40.8 % on
test where its validation had shown +2.4 points (not significant), and keeping the
incumbent there would have handed back +5.4 points over the first round's best
instead of +0.8 (docs/benchmarks.md, fourteenth session).

The champion record's ``routes`` holds per family the route (``from``, ``strategy``,
its validation accuracy against the champion's, wins, losses and p against the
champion, ``kept`` when it is the incumbent no candidate beat);
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
                  origins: dict[str, tuple[str, str | None]], significance: float,
                  incumbents: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Per family, the route chosen over the champion variant ``default`` (module doc).
    ``scores``: the evaluate record (``outcomes`` per variant and family, ``per_family``);
    ``strategies``: name → encoded strategy of every candidate; ``origins``: name →
    (base, adapter_of) for the record; ``incumbents``: family → the encoded strategy
    that answered it before this round (None, or a family whose incumbent this round
    did not score: the champion is the incumbent). Families answered by the champion
    are left out."""
    from evo.engine.routing import sign_test_p
    from genomes.strategy import Strategy

    outcomes = scores.get("outcomes") or {}
    hashes = {name: Strategy.decode(encoded, where=name).content_hash() for name, encoded in strategies.items()}
    routes = {}
    for family, default_outcomes in sorted((outcomes.get(default) or {}).items()):
        names = [n for n in _preference_order(strategies) if family in (outcomes.get(n) or {})]
        incumbent = _incumbent(family, names, hashes, (incumbents or {}).get(family)) or default
        name, kept = _answerer(family, outcomes, [default] + names, incumbent, significance)
        if hashes[name] == hashes[default]:
            continue
        wins, losses = _wins_losses(outcomes[name][family], default_outcomes)
        base, adapter_of = origins[name]
        routes[family] = {"from": base + (f" + {adapter_of}" if adapter_of else ""), "base": base,
                          "adapter_of": adapter_of, "variant": name, "strategy": strategies[name],
                          "validation": _mean(outcomes[name][family]),
                          "champion_validation": _mean(default_outcomes), "wins": wins, "losses": losses,
                          "p": round(sign_test_p(wins, losses), 4), "kept": kept}
    return routes


def _incumbent(family: str, names: list[str], hashes: dict[str, str], encoded: dict[str, Any] | None) -> str | None:
    """The name under which this round scored ``family``'s incumbent strategy, if it did."""
    from genomes.strategy import Strategy

    if encoded is None:
        return None
    wanted = Strategy.decode(encoded, where=f"incumbent for {family}").content_hash()
    return next((n for n in names if hashes[n] == wanted), None)


def _answerer(family: str, outcomes: dict[str, Any], names: list[str], incumbent: str,
              significance: float) -> tuple[str, bool]:
    """(the variant that answers ``family``, whether it is the incumbent kept): the
    most accurate of the variants that beat the incumbent on the family's tasks in a
    one-sided sign test (the first of equals, so the champion before a route), else
    the incumbent. With a dozen candidates the most accurate is partly luck; a family
    changes its strategy only where the evidence beats that."""
    from evo.engine.routing import sign_test_p

    challengers = []
    for name in names:
        wins, losses = _wins_losses(outcomes[name][family], outcomes[incumbent][family])
        if wins > losses and sign_test_p(wins, losses) <= significance:
            challengers.append(name)
    if not challengers:
        return incumbent, True
    return max(challengers, key=lambda n: _mean(outcomes[n][family])), False  # max keeps the first of equals


def _wins_losses(outcomes: str, other: str) -> tuple[int, int]:
    pairs = list(zip(outcomes, other))
    return pairs.count(("1", "0")), pairs.count(("0", "1"))


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
