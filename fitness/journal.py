"""The run journal: every scored completion, keyed by (genome hash, task id, seed).

Contract:
- ``get`` / ``get_many`` return a stored :class:`ExampleResult` or nothing; a result
  is stored once per key (re-puts are ignored), so reruns never double count;
- every ``put_many`` is one SQLite transaction, committed before it returns: a process
  killed at any moment leaves the journal with whole generations of results or none
  of a generation, never a torn row;
- the journal keeps the completions for distillation (``all_results``) and counts
  what was generated (``count``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from fitness.evaluate import ExampleResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    genome_hash TEXT NOT NULL,
    task_id TEXT NOT NULL,
    seed INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    score REAL NOT NULL,
    completion_tokens INTEGER NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (genome_hash, task_id, seed)
);
CREATE TABLE IF NOT EXISTS strategies (
    genome_hash TEXT PRIMARY KEY,
    strategy TEXT NOT NULL
);
"""

Key = tuple[str, str, int]


def result_from_json(data: dict) -> ExampleResult:
    data = dict(data)
    data.pop("correct", None)
    data.pop("n_steps", None)
    data["steps"] = tuple(data.get("steps") or ())
    return ExampleResult(**data)


class Journal:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a committed generation survives power loss
        self._db.executescript(_SCHEMA)
        self._db.commit()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get_many(self, keys: Iterable[Key]) -> dict[Key, ExampleResult]:
        found: dict[Key, ExampleResult] = {}
        for genome_hash, task_id, seed in keys:
            row = self._db.execute(
                "SELECT result FROM results WHERE genome_hash=? AND task_id=? AND seed=?", (genome_hash, task_id, seed)
            ).fetchone()
            if row:
                found[(genome_hash, task_id, seed)] = result_from_json(json.loads(row[0]))
        return found

    def put_many(self, rows: Sequence[tuple[int, ExampleResult]], seed: int, strategies: dict[str, dict] | None = None) -> None:
        """Store (generation, result) rows and the encoded strategies they came from."""
        with self._db:  # one transaction
            self._db.executemany(
                "INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(r.strategy_hash, r.task_id, seed, gen, r.score, r.completion_tokens, json.dumps(r.to_json()))
                 for gen, r in rows],
            )
            if strategies:
                self._db.executemany(
                    "INSERT OR IGNORE INTO strategies VALUES (?, ?)",
                    [(h, json.dumps(s, sort_keys=True)) for h, s in strategies.items()],
                )

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def all_results(self) -> Iterator[tuple[int, ExampleResult]]:
        for gen, text in self._db.execute("SELECT generation, result FROM results ORDER BY rowid"):
            yield gen, result_from_json(json.loads(text))

    def strategy(self, genome_hash: str) -> dict | None:
        row = self._db.execute("SELECT strategy FROM strategies WHERE genome_hash=?", (genome_hash,)).fetchone()
        return json.loads(row[0]) if row else None


def evaluate_with_journal(jobs, backend, journal: Journal, seed: int, generation: int, progress=None):
    """:func:`fitness.evaluate.evaluate_many` that generates only what the journal lacks.

    Returns (results per job, new rollouts, reused rollouts). Identical strategies in
    several jobs are generated once. All missing (strategy, task) pairs go to the
    backend in one call and are journaled in one transaction before this returns.
    """
    from fitness.evaluate import evaluate_many

    keys = [[(s.content_hash(), t.id, seed) for t in tasks] for s, tasks in jobs]
    found = journal.get_many(k for job_keys in keys for k in job_keys)
    reused = len(found)
    todo: dict[str, tuple] = {}  # genome hash -> (strategy, {task id: task})
    for (strategy, tasks), job_keys in zip(jobs, keys):
        for task, key in zip(tasks, job_keys):
            if key not in found:
                todo.setdefault(key[0], (strategy, {}))[1].setdefault(task.id, task)
    if todo:
        missing = [(strategy, list(tasks.values())) for strategy, tasks in todo.values()]
        fresh = [r for results in evaluate_many(missing, backend, seed, progress) for r in results]
        journal.put_many([(generation, r) for r in fresh], seed, {h: s.encode() for h, (s, _) in todo.items()})
        found.update({(r.strategy_hash, r.task_id, seed): r for r in fresh})
    else:
        fresh = []
    return [[found[k] for k in job_keys] for job_keys in keys], len(fresh), reused
