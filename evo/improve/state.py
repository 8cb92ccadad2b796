"""The state of an `evo improve` loop on disk: ``RUN_DIR/improve/state.json``.

One record per round, each with the steps done so far (``evolve``, ``mine``,
``train``, ``evaluate``, ``decide``) and what each produced. The file is rewritten
atomically after every step, so a loop killed at any point resumes at the first step
not recorded (a step is a pure function of what the steps before it left: the
evolution resumes from its own checkpoints, training is seeded). A damaged state
file is one clear error that names it; nothing in the run directory is touched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genomes.errors import InputError

STEPS = ("evolve", "mine", "train", "evaluate", "decide")
STATE_FILE = "state.json"
CHAMPION_FILE = "champion.json"
ROUTES_FILE = "routes.json"


@dataclass
class ImproveState:
    path: Path  # RUN_DIR/improve
    rounds: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None  # the test scores, once every round is done

    @classmethod
    def load(cls, improve_dir: Path) -> ImproveState:
        target = improve_dir / STATE_FILE
        if not target.exists():
            return cls(improve_dir)
        try:
            data = json.loads(target.read_text(encoding="utf-8"))
            rounds, final = data["rounds"], data.get("final")
            if not isinstance(rounds, list) or not all(isinstance(r, dict) and "steps" in r for r in rounds):
                raise ValueError("rounds must be a list of round records")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{target}: damaged improve state ({e}); move it away to start the loop's rounds afresh "
                             "(the run, its journal and its adapters are kept)") from e
        return cls(improve_dir, rounds, final)

    def save(self) -> None:
        self._write_json(STATE_FILE, {"rounds": self.rounds, "final": self.final})

    def save_champion(self, champion: dict[str, Any]) -> None:
        """``improve/champion.json``, the champion's encoded strategy, and
        ``improve/routes.json``, the champion with its per-family routes
        (:mod:`evo.improve.routes`): files `evo eval` takes."""
        from evo.improve.routes import routes_file

        self._write_json(CHAMPION_FILE, champion["strategy"])
        self._write_json(ROUTES_FILE, routes_file(champion))

    def _write_json(self, name: str, data: Any) -> None:
        """Atomic: a reader sees the old file or the new one, never half of one."""
        self.path.mkdir(parents=True, exist_ok=True)
        target = self.path / name
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        tmp.replace(target)

    def round(self, number: int) -> dict[str, Any]:
        """The record of round ``number`` (1-based), created empty when new."""
        while len(self.rounds) < number:
            self.rounds.append({"round": len(self.rounds) + 1, "status": "running", "steps": {}})
        return self.rounds[number - 1]

    def record(self, number: int, step: str, result: dict[str, Any], status: str | None = None) -> None:
        entry = self.round(number)
        entry["steps"][step] = result
        if status is not None:
            entry["status"] = status
        self.save()

    def champion(self, before: int | None = None) -> dict[str, Any] | None:
        """The loop's champion after the rounds before round ``before`` (default: after
        every round): the latest ``decide`` record's ``champion`` (``from``, ``strategy``,
        ``validation``), None before any round decided one. State files written before
        champions existed have none."""
        rounds = self.rounds if before is None else self.rounds[:max(before - 1, 0)]
        for entry in reversed(rounds):
            champion = (entry["steps"].get("decide") or {}).get("champion")
            if champion:
                return champion
        return None

    def adapter_to_inject(self, number: int) -> str | None:
        """The adapter round ``number - 1`` decided to inject (None if none)."""
        if number < 2 or len(self.rounds) < number - 1:
            return None
        decision = self.rounds[number - 2]["steps"].get("decide") or {}
        return decision.get("inject")
