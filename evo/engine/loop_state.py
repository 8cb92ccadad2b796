"""The loop's state as checkpoint data, and back.

What a checkpoint holds: the population and hall of fame (and Pareto front) with
each individual's genome, lineage, fitness and loss terms; the logbook; the
curriculum state; the frontier states whose training batches were drawn (batches are
re-drawn deterministically, not stored); the engine's ``random.Random`` state and
numpy's and torch's global RNG states; the counters; the journal and log positions.

Individuals that are the same object in the running loop (a hall-of-fame entry that
is also in the population) come back as the same object, so a resumed run behaves
exactly like one that never stopped.
"""

from __future__ import annotations

from typing import Any

from evo.engine.individuals import make_individual
from fitness.loss import LossTerms
from genomes.strategy import Strategy


def individual_to_json(ind) -> dict[str, Any]:
    return {
        "id": ind.id, "strategy": ind.strategy.encode(), "parents": list(ind.parents), "op": ind.op,
        "generation": ind.generation,
        "fitness": list(ind.fitness.values) if ind.fitness.valid else None,
        "l_total": ind.l_total, "accuracy": ind.accuracy, "chain_tokens": ind.chain_tokens,
        "cost": ind.cost, "d_model": ind.d_model, "terms": ind.loss.as_dict() if ind.loss is not None else None,
        "scored_on": list(ind.scored_on),
    }


def individual_from_json(data: dict[str, Any], mode: str):
    ind = make_individual(Strategy.decode(data["strategy"], where="checkpoint individual"), mode, data["id"],
                          tuple(data["parents"]), data["op"], data["generation"])
    if data["fitness"] is not None:
        ind.fitness.values = tuple(data["fitness"])
    ind.l_total, ind.accuracy, ind.chain_tokens, ind.d_model = data["l_total"], data["accuracy"], data["chain_tokens"], data["d_model"]
    ind.cost = data.get("cost", 0.0)  # checkpoints written before the cost objective: unused there
    ind.loss = LossTerms(**data["terms"]) if data["terms"] is not None else None
    ind.results = None  # the completions stay in the journal
    # checkpoints written before batch rotation existed only ever used epoch 0
    ind.scored_on = tuple(data.get("scored_on", [0] if data["fitness"] is not None else []))
    return ind


class IndividualTable:
    """Serialises several lists of individuals, sharing objects by identity."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._index: dict[int, int] = {}

    def refs(self, individuals) -> list[int]:
        out = []
        for ind in individuals:
            if id(ind) not in self._index:
                self._index[id(ind)] = len(self.rows)
                self.rows.append(individual_to_json(ind))
            out.append(self._index[id(ind)])
        return out
