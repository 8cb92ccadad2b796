"""A strategy per task family: what a run exports when one strategy does not fit all.

Why: on a mixed batch every single strategy measured (ours, random search's,
MIPROv2's) won some families and lost others; the bundled model copies the kind of
exemplar it sees and each family wants its own decoding. A :class:`Routes` holds a
``default`` strategy and, for some families, the strategy that answers that family
better (chosen on training evidence and confirmed on the validation split by
:mod:`evo.engine.routing`). A task is answered by the strategy of its family, the
default for every family without a route, so a Routes file answers any task a single
strategy would.

File format (``routes.json``, written by ``evo export``, read by ``evo eval``)::

    {"kind": "routes", "default": <strategy>,
     "routes": {"<family>": <strategy>, ...},
     "evidence": {"<family>": {...}}}      # optional: why each route was taken

Contract: :func:`load_answerer` reads a strategy file, a shipped seed name or a
routes file and returns a :class:`Strategy` or a :class:`Routes`; malformed input is
an InputError that names the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genomes.errors import InputError
from genomes.strategy import Strategy
from genomes.validation import as_mapping, read_structured

KIND = "routes"


@dataclass(frozen=True)
class Routes:
    default: Strategy
    routes: Mapping[str, Strategy] = field(default_factory=dict)
    evidence: Mapping[str, Any] = field(default_factory=dict)  # per family: what chose the route (reports only)

    def strategy_for(self, family: str) -> Strategy:
        """The strategy that answers ``family``'s tasks."""
        return self.routes.get(family, self.default)

    def strategies(self) -> list[Strategy]:
        """The default, then each routed family's strategy (duplicates kept)."""
        return [self.default, *self.routes.values()]

    def encode(self) -> dict[str, Any]:
        return {"kind": KIND, "default": self.default.encode(),
                "routes": {family: s.encode() for family, s in sorted(self.routes.items())},
                "evidence": {family: self.evidence[family] for family in sorted(self.evidence)}}

    @classmethod
    def decode(cls, data: Any, where: str = "routes") -> Routes:
        data = as_mapping(data, where)
        if data.get("kind") != KIND:
            raise InputError(f"{where}.kind: expected {KIND!r}, got {data.get('kind')!r}")
        unknown = set(data) - {"kind", "default", "routes", "evidence"}
        if unknown:
            raise InputError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        if "default" not in data:
            raise InputError(f"{where}.default: missing (the strategy for families without a route)")
        default = Strategy.decode(data["default"], f"{where}.default")
        routes = {str(family): Strategy.decode(s, f"{where}.routes.{family}")
                  for family, s in as_mapping(data.get("routes", {}), f"{where}.routes").items()}
        evidence = dict(as_mapping(data.get("evidence", {}), f"{where}.evidence"))
        return cls(default, routes, evidence)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.encode(), indent=2) + "\n", encoding="utf-8")


def is_routes(data: Any) -> bool:
    return isinstance(data, Mapping) and data.get("kind") == KIND


def load_answerer(path_or_name: str | Path) -> Strategy | Routes:
    """A strategy file, a shipped seed name, or a routes file (``"kind": "routes"``)."""
    path = Path(path_or_name)
    if path.is_file() and path.suffix.lower() == ".json":
        data = read_structured(path)
        if is_routes(data):
            return Routes.decode(data, where=path.name)
    return Strategy.load(path_or_name)


def strategies_of(answerer: Strategy | Routes) -> list[Strategy]:
    """Every strategy ``answerer`` may answer with: itself, or a routes file's default
    and routed strategies."""
    return answerer.strategies() if isinstance(answerer, Routes) else [answerer]


def route_jobs(answerer: Strategy | Routes, tasks: list) -> tuple[list[tuple[Strategy, list]], list[list[int]]]:
    """``tasks`` grouped into (strategy, tasks) jobs for ``fitness.evaluate.evaluate_many``
    (one job per distinct strategy, in first-appearance order) and, per job, the
    positions of its tasks in ``tasks``: give both to :func:`in_task_order`."""
    if isinstance(answerer, Strategy):
        return [(answerer, list(tasks))], [list(range(len(tasks)))]
    jobs: dict[str, tuple[Strategy, list, list[int]]] = {}
    hash_of: dict[str, str] = {}  # family -> its strategy's hash, computed once per family
    for i, task in enumerate(tasks):
        strategy = answerer.strategy_for(task.family)
        if task.family not in hash_of:
            hash_of[task.family] = strategy.content_hash()
        _, group, positions = jobs.setdefault(hash_of[task.family], (strategy, [], []))
        group.append(task)
        positions.append(i)
    return [(s, group) for s, group, _ in jobs.values()], [positions for _, _, positions in jobs.values()]


def in_task_order(per_job: list[list], positions: list[list[int]]) -> list:
    """Results of :func:`route_jobs`' jobs back in the order of its ``tasks``."""
    out: list = [None] * sum(len(p) for p in positions)
    for results, where in zip(per_job, positions):
        for result, i in zip(results, where):
            out[i] = result
    return out



def jobs_for_all(answerers: Mapping[str, Strategy | Routes], tasks: list):
    """Every answerer's jobs on ``tasks`` in one list (so one ``generate`` call scores
    them all) and a function that turns the results per job back into results per
    answerer name, each in task order."""
    jobs: list[tuple[Strategy, list]] = []
    spans = []
    for name, answerer in answerers.items():
        own, positions = route_jobs(answerer, tasks)
        spans.append((name, len(jobs), len(jobs) + len(own), positions))
        jobs += own

    def per_answerer(per_job: list[list]) -> dict[str, list]:
        return {name: in_task_order(per_job[start:end], positions) for name, start, end, positions in spans}

    return jobs, per_answerer
