"""Per-family frontier curriculum (docs/design.md, "Curriculum") and the ability estimate D_model.

State: one *frontier* level per family. Each generation:

1. :meth:`Curriculum.sample_levels` draws the level of every training task around the
   frontier ``f``: offset ``k`` in ``[−spread, +spread]`` has weight
   ``spread + 1 − |k|`` (triangular; spread 1 gives 1/4, 1/2, 1/4), levels outside
   ``[0, levels − 1]`` are dropped and the rest renormalised (at level 0 with spread 1:
   2/3 at the frontier, 1/3 one above). The frontier is always the most likely level;
   ``spread = 0`` samples only the frontier. A family with one level (every
   ``jsonl:`` family) always gets level 0.
2. :meth:`Curriculum.update` reads the results of the generation's best individual:
   each result at its family's frontier level adds one outcome (correct = full credit)
   to that family's evidence, a sliding window of the last ``window`` outcomes. When
   the window holds at least ``min_evidence`` outcomes and the success rate is
   ``>= up_threshold`` the frontier moves up one level; when it is ``<= down_threshold``
   it moves down one; at the top or bottom level it stays. A move clears the family's
   evidence (the new level is judged on its own results). Results at other levels or
   of unknown families are ignored. With ``may_move=False`` the outcomes are recorded
   but no frontier moves (the loop holds the frontier in a run's last generations).

:func:`estimate_ability` gives D_model in [0, 1] for the loss's L_diff term: the
results are grouped by their task's normalised ``difficulty`` (so levels of different
families, and JSONL difficulties, share one scale); D_model is the highest difficulty
whose success rate is ``>= 0.5`` (:data:`ABILITY_RATE`), and 0 when there is none.

Randomness is explicit (an ``rng`` argument, never the global ``random``), and the
whole state round-trips through :meth:`Curriculum.to_state` /
:meth:`Curriculum.from_state` as plain JSON for checkpoints.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from fitness.tasks import JSONL_PREFIX
from fitness.verify import FULL_CREDIT
from genomes.errors import InputError

__all__ = ["ABILITY_RATE", "STATE_VERSION", "Curriculum", "estimate_ability"]

STATE_VERSION = 1
# Success rate at which a difficulty counts as mastered for D_model.
ABILITY_RATE = 0.5


def _succeeded(result: Any) -> bool:
    try:
        score = float(getattr(result, "score", 0.0))
    except (TypeError, ValueError, OverflowError):
        return False
    return not math.isnan(score) and score >= FULL_CREDIT


def estimate_ability(results: Sequence[Any]) -> float:
    """D_model in [0, 1]: the highest normalised difficulty at which the results'
    success rate is >= 0.5; 0 if none (or no results). Never raises on bad fields."""
    outcomes: dict[float, list[bool]] = defaultdict(list)
    for r in results:
        try:
            d = float(getattr(r, "difficulty", 0.0))
        except (TypeError, ValueError, OverflowError):
            continue
        if math.isnan(d):
            continue
        outcomes[round(min(1.0, max(0.0, d)), 9)].append(_succeeded(r))
    mastered = [d for d, oks in outcomes.items() if sum(oks) / len(oks) >= ABILITY_RATE]
    return max(mastered, default=0.0)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_rate(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0


class Curriculum:
    """Frontier level per family; see the module docstring for the rules.

    ``families`` maps a family name to its number of levels (``fitness.tasks.family_levels``);
    names starting with ``jsonl:`` always have one level. Bad arguments raise
    :class:`~genomes.errors.InputError` naming the ``curriculum.*`` field.
    """

    estimate_ability = staticmethod(estimate_ability)

    def __init__(
        self, families: Mapping[str, int], start_level: int = 0, up_threshold: float = 0.7,
        down_threshold: float = 0.2, window: int = 8, spread: int = 1, min_evidence: int = 2,
    ) -> None:
        if not isinstance(families, Mapping) or not families:
            raise InputError("curriculum.families: must name at least one task family")
        for name, levels in families.items():
            if not isinstance(name, str) or not name:
                raise InputError(f"curriculum.families: family names must be non-empty strings, got {name!r}")
            if not _is_int(levels) or levels < 1:
                raise InputError(f"curriculum.families.{name}: number of levels must be an integer >= 1, got {levels!r}")
        checks = [
            ("start_level", _is_int(start_level) and start_level >= 0, "an integer >= 0", start_level),
            ("up_threshold", _is_rate(up_threshold), "a number in [0, 1]", up_threshold),
            ("down_threshold", _is_rate(down_threshold), "a number in [0, 1]", down_threshold),
            ("window", _is_int(window) and window >= 1, "an integer >= 1", window),
            ("spread", _is_int(spread) and spread >= 0, "an integer >= 0", spread),
            ("min_evidence", _is_int(min_evidence) and 1 <= min_evidence, "an integer >= 1", min_evidence),
        ]
        for field, ok, what, value in checks:
            if not ok:
                raise InputError(f"curriculum.{field}: must be {what}, got {value!r}")
        if down_threshold >= up_threshold:
            raise InputError(f"curriculum.down_threshold: must be below up_threshold ({up_threshold}), got {down_threshold}")
        if min_evidence > window:
            raise InputError(f"curriculum.min_evidence: must be <= window ({window}), got {min_evidence}")

        self.families: dict[str, int] = {
            name: 1 if name.startswith(JSONL_PREFIX) else int(levels) for name, levels in sorted(families.items())
        }
        self.start_level = start_level
        self.up_threshold = float(up_threshold)
        self.down_threshold = float(down_threshold)
        self.window = window
        self.spread = spread
        self.min_evidence = min_evidence
        self.frontier: dict[str, int] = {f: min(start_level, n - 1) for f, n in self.families.items()}
        self.evidence: dict[str, list[bool]] = {f: [] for f in self.families}
        self.history: list[dict[str, int]] = []

    # ---- sampling ----------------------------------------------------------------
    def level_weights(self, family: str) -> dict[int, int]:
        """Unnormalised sampling weights of the levels around ``family``'s frontier."""
        f, top = self.frontier[family], self.families[family] - 1
        return {f + k: self.spread + 1 - abs(k) for k in range(-self.spread, self.spread + 1) if 0 <= f + k <= top}

    def sample_levels(self, rng: random.Random, n_per_family: int) -> list[tuple[str, int]]:
        """``n_per_family`` (family, level) draws per family, families in sorted order."""
        if not _is_int(n_per_family) or n_per_family < 0:
            raise InputError(f"curriculum: tasks per family must be an integer >= 0, got {n_per_family!r}")
        draws: list[tuple[str, int]] = []
        for family in self.families:
            weights = self.level_weights(family)
            levels = rng.choices(list(weights), weights=list(weights.values()), k=n_per_family)
            draws += [(family, level) for level in levels]
        return draws

    # ---- moving the frontier ------------------------------------------------------
    def update(self, results_of_best: Sequence[Any], may_move: bool = True) -> dict[str, int]:
        """Add the best individual's frontier outcomes and, if ``may_move``, move
        frontiers (module docstring); records and returns the new frontier map."""
        for r in results_of_best:
            family = getattr(r, "family", None)
            if family in self.frontier and getattr(r, "level", None) == self.frontier[family]:
                self.evidence[family] = (self.evidence[family] + [_succeeded(r)])[-self.window:]
        for family, outcomes in self.evidence.items():
            if not may_move or len(outcomes) < self.min_evidence:
                continue
            rate = sum(outcomes) / len(outcomes)
            step = 1 if rate >= self.up_threshold else -1 if rate <= self.down_threshold else 0
            level = min(max(self.frontier[family] + step, 0), self.families[family] - 1)
            if level != self.frontier[family]:
                self.frontier[family] = level
                self.evidence[family] = []
        self.history.append(dict(self.frontier))
        return dict(self.frontier)

    # ---- checkpoint state ---------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "families": dict(self.families),
            "start_level": self.start_level,
            "up_threshold": self.up_threshold,
            "down_threshold": self.down_threshold,
            "window": self.window,
            "spread": self.spread,
            "min_evidence": self.min_evidence,
            "frontier": dict(self.frontier),
            "evidence": {f: list(o) for f, o in self.evidence.items()},
            "history": [dict(h) for h in self.history],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Curriculum:
        """Rebuild a curriculum from :meth:`to_state`; raises InputError on a bad state."""
        if not isinstance(state, Mapping):
            raise InputError("curriculum state: expected a JSON object")
        if state.get("version") != STATE_VERSION:
            raise InputError(f"curriculum state: unsupported version {state.get('version')!r} (expected {STATE_VERSION})")
        try:
            curriculum = cls(
                state["families"], start_level=state["start_level"], up_threshold=state["up_threshold"],
                down_threshold=state["down_threshold"], window=state["window"], spread=state["spread"],
                min_evidence=state["min_evidence"],
            )
            frontier, evidence, history = state["frontier"], state["evidence"], state["history"]
        except KeyError as e:
            raise InputError(f"curriculum state: missing field {e.args[0]!r}") from None
        curriculum.frontier = curriculum._checked_levels(frontier, "frontier")
        if not isinstance(evidence, Mapping) or set(evidence) != set(curriculum.families):
            raise InputError("curriculum state: 'evidence' must have one list per family")
        for family, outcomes in evidence.items():
            if not isinstance(outcomes, list) or not all(isinstance(o, bool) for o in outcomes):
                raise InputError(f"curriculum state: evidence.{family} must be a list of booleans")
            curriculum.evidence[family] = list(outcomes)[-curriculum.window:]
        if not isinstance(history, list):
            raise InputError("curriculum state: 'history' must be a list")
        curriculum.history = [curriculum._checked_levels(h, "history") for h in history]
        return curriculum

    def _checked_levels(self, levels: Any, what: str) -> dict[str, int]:
        if not isinstance(levels, Mapping) or set(levels) != set(self.families):
            raise InputError(f"curriculum state: {what!r} must give a level for every family")
        for family, level in levels.items():
            if not _is_int(level) or not 0 <= level < self.families[family]:
                raise InputError(f"curriculum state: {what}.{family} = {level!r} is not a level of that family")
        return {f: levels[f] for f in self.families}

    def __repr__(self) -> str:
        return f"Curriculum(frontier={self.frontier})"
