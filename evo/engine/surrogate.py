"""A surrogate of accuracy over gene values, pooled across every strategy scored.

Why: one strategy's fitness comes from a batch of about ten tasks, so it is mostly
noise (a strategy's accuracy moves by 15 points from one batch to the next), and
mutation draws every gene value uniformly, so evolution at equal rollouts did no
better than random search (docs/benchmarks.md). Each value (an exemplar, a
fragment, a constrained-decoding mode, a token limit) is carried by many strategies;
pooling their evidence estimates a value's effect far better than any one
strategy's score. With ``population.proposals = K > 1`` a child is the best of K
draws of the same operator on the same parents under one Thompson sample of the
model: values with good evidence are proposed more often, values never seen keep
their prior and still get tried.

The model: Bayesian linear regression of a strategy's accuracy on binary features
(:func:`strategy_features`) plus one feature per training batch (batches differ in
difficulty; a strategy scored on k batches carries 1/k of each), each weight with
prior N(0, PRIOR_SD²), each observation with binomial noise p(1 - p)/n around the
pooled accuracy p. The state is the observations, in the order they came: a pure
function of the scores, checkpointed, so a resumed run samples the same model.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from genomes.lora import encode_slot
from genomes.strategy import Strategy

PRIOR_SD = 0.2  # a gene value moves accuracy by tens of points at most
MIN_OBSERVATIONS = 4  # fewer: propose as plain mutation does (the first draw)
P_CLIP = (0.05, 0.95)  # keeps the noise model finite when every task is right or wrong


def strategy_features(strategy: Strategy) -> tuple[str, ...]:
    """The gene values a strategy carries, as feature names (sorted, distinct)."""
    p, c, d = strategy.prompt, strategy.chain, strategy.decoding
    names = {f"{slot}={getattr(p, slot)}" for slot in ("role", "approach", "format_rule", "cautions", "answer_format")}
    names |= {f"exemplar={_short_hash(e.question, e.answer)}" for e in p.exemplars}
    names.add(f"exemplars={len(p.exemplars)}")
    if len(p.exemplars) > 1:
        names.add(f"exemplar_choice={p.exemplar_choice}")
    names |= {f"hint={h}" for h in c.step_hints}
    names |= {f"max_steps={c.max_steps}", f"self_check={c.self_check}", f"prefill={c.prefill}"}
    names |= {f"model={d.model}", f"sampled={d.temperature > 0}", f"votes={d.votes}",
              f"max_new_tokens={d.max_new_tokens}", f"constrain={d.constrain}"}
    if d.temperature > 0:
        names.add(f"top_p={d.top_p}")
    if strategy.lora is not None:  # an adapter is its own value, whatever prompt carries it
        names.add(f"lora={_short_hash(json.dumps(encode_slot(strategy.lora), sort_keys=True))}")
    return tuple(sorted(names))


def _short_hash(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


class Surrogate:
    """Observations of (features, batches, accuracy, tasks), one per genome (the one
    with the most tasks; a later one on a tie), and Thompson samples of the fit."""

    def __init__(self) -> None:
        self.observations: dict[str, list[Any]] = {}  # genome hash -> [features, batch labels, accuracy, tasks]
        self._fit: tuple | None = None  # (feature index, posterior mean, Cholesky factor); None after new evidence

    def observe(self, strategy: Strategy, batches: Sequence[str], accuracy: float, tasks: int) -> None:
        if tasks <= 0:
            return
        key = strategy.content_hash()
        held = self.observations.get(key)
        if held is None or tasks >= held[3]:
            self.observations.pop(key, None)  # the newest evidence last: the order is the state
            self.observations[key] = [list(strategy_features(strategy)), list(batches), float(accuracy), int(tasks)]
            self._fit = None

    def ready(self) -> bool:
        return len(self.observations) >= MIN_OBSERVATIONS

    def sampler(self, rng: random.Random) -> Callable[[Strategy], float]:
        """One Thompson sample of the weights, as a scorer of strategies (higher is
        better). Draws one number from ``rng``; features never observed get a prior
        draw, the same for every strategy that carries them."""
        import numpy as np

        generator = np.random.default_rng(rng.randrange(2**32))
        if self._fit is None:  # one fit serves every child of a generation
            self._fit = self._posterior()
        index, mean, lower = self._fit
        weights = mean + np.linalg.solve(lower.T, generator.standard_normal(len(index)))
        known = {name: float(weights[i]) for name, i in index.items()}
        unseen: dict[str, float] = {}

        def score(strategy: Strategy) -> float:
            total = 0.0
            for name in strategy_features(strategy):
                if name not in known and name not in unseen:
                    unseen[name] = float(generator.normal(0.0, PRIOR_SD))
                total += known[name] if name in known else unseen[name]
            return total

        return score

    def _posterior(self) -> tuple[dict[str, int], Any, Any]:
        """(feature index, posterior mean of the weights, Cholesky factor of their
        precision) given every observation."""
        import numpy as np

        rows = list(self.observations.values())
        index: dict[str, int] = {}
        for features, batches, _, _ in rows:
            for name in (*features, *(f"batch={b}" for b in batches)):
                index.setdefault(name, len(index))
        x = np.zeros((len(rows), len(index)))
        for i, (features, batches, _, _) in enumerate(rows):
            for name in features:
                x[i, index[name]] = 1.0
            for b in batches:
                x[i, index[f"batch={b}"]] += 1.0 / len(batches)
        y = np.array([row[2] for row in rows])
        n = np.array([row[3] for row in rows], dtype=float)
        pooled = float(np.clip((y * n).sum() / n.sum(), *P_CLIP))
        precision = n / (pooled * (1 - pooled))  # 1 / binomial noise of each observation
        a = (x.T * precision) @ x + np.eye(len(index)) / PRIOR_SD**2
        b = (x.T * precision) @ (y - pooled)
        return index, np.linalg.solve(a, b), np.linalg.cholesky(a)

    def to_state(self) -> list[list[Any]]:
        return [[key, *row] for key, row in self.observations.items()]

    @classmethod
    def from_state(cls, rows: Iterable[Sequence[Any]]) -> Surrogate:
        surrogate = cls()
        for key, features, batches, accuracy, tasks in rows:
            surrogate.observations[str(key)] = [list(features), list(batches), float(accuracy), int(tasks)]
        return surrogate
