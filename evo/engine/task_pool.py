"""Where a run's tasks come from: per-generation training batches around the
curriculum frontier, one fixed validation set, and test sets for reports.

Training draws come from the ``train`` split, the validation set (scored each
generation, read by every choice: tuning, pruning, the exported best) from
``validation``, and test sets from ``test``, which no choice ever reads. Draws are
seeded by (run seed, generation, family, level): a rerun sees the same tasks.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from evo.config.sections import RunConfig
from fitness.tasks import (
    JSONL_PREFIX,
    TEST,
    TRAIN,
    VALIDATION,
    Task,
    TaskSpec,
    answer_pattern_of,
    family_levels,
    jsonl_tasks,
    reasoning_gym_tasks,
    with_answer_pattern,
)
from genomes.errors import InputError
from genomes.exemplar_choice import matching_exemplars
from genomes.fragments import EXEMPLARS
from genomes.strategy import Exemplar


class TaskPool:
    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.specs: dict[str, TaskSpec] = {}
        for entry in config.tasks.families:
            spec = TaskSpec.parse(entry)
            family = JSONL_PREFIX + _stem(spec.source) if spec.is_file else spec.source
            self.specs[family] = spec

    def levels(self) -> dict[str, int]:
        """Number of difficulty levels per family (1 for JSONL files)."""
        return {f: 1 if s.is_file else family_levels(s.source) for f, s in self.specs.items()}

    def start_levels(self) -> dict[str, int]:
        """``family@L`` in the config starts that family at L, else curriculum.start_level."""
        levels = self.levels()
        start = self.config.curriculum.start_level
        return {f: min(s.level if s.level is not None else start, levels[f] - 1) for f, s in self.specs.items()}

    def training_batch(self, slots: Sequence[tuple[str, int]], generation: int) -> list[Task]:
        """Tasks for the given (family, level) slots, from the train split."""
        tasks: list[Task] = []
        for (family, level), count in sorted(Counter(slots).items()):
            seed = _draw_seed(self.config.run.seed, generation, family, level)
            tasks += self._draw(family, level, count, TRAIN, seed)
        return tasks

    def library_exemplars(self, per_family: int = 4) -> tuple[Exemplar, ...]:
        """The library exemplars that fit this run's tasks: those like one of
        ``per_family`` training questions per family at its start level
        (:func:`genomes.exemplar_choice.matching_exemplars`); none when no kind fits.
        A pure function of the config."""
        slots = [(family, level) for family, level in self.start_levels().items() for _ in range(per_family)]
        questions = [task.question for task in self.training_batch(slots, generation=-1)]
        return matching_exemplars(EXEMPLARS, questions)

    def exemplar_pool(self, per_family: int = 4) -> tuple[Exemplar, ...]:
        """The library exemplars that fit, or the whole library when none fit: the
        pool of runs made before the run's own data fed it (:mod:`evo.engine.exemplar_pool`)."""
        return self.library_exemplars(per_family) or EXEMPLARS

    def labeled_tasks(self, per_family: int) -> dict[str, list[Task]]:
        """Per family, ``per_family`` tasks of its training split at its start level,
        drawn apart from the training batches' seeds (a file with a smaller training
        split gives what it has)."""
        return {family: self._draw(family, level, per_family, TRAIN, _draw_seed(self.config.run.seed, -2, family, level),
                                  fewer_ok=True)
                for family, level in self.start_levels().items()}

    def scored_level_training(self, per_family: int, draw: int) -> list[Task]:
        """Per family, ``per_family`` training tasks at the level validation and test
        score (``tasks.heldout_level``), drawn apart from the batches: each ``draw``
        (a negative label, e.g. -100 - round) another draw. A split smaller than asked
        gives what it has. What `evo improve` harvests completions on."""
        levels, tasks = self.levels(), []
        for family in self.specs:
            level = min(self.config.tasks.heldout_level, levels[family] - 1)
            tasks += self._draw(family, level, per_family, TRAIN, _draw_seed(self.config.run.seed, draw, family, level),
                                fewer_ok=True)
        return tasks

    def validation(self, fewer_ok: bool = False) -> list[Task]:
        """``tasks.heldout_per_family`` validation tasks per family at
        ``tasks.heldout_level``; with ``fewer_ok`` a family whose split is smaller gives
        all of it instead of an error."""
        return self.held_out(VALIDATION, self.config.tasks.heldout_per_family, fewer_ok)

    def validation_notes(self, validation: list[Task]) -> list[str]:
        """What a person should know about ``validation`` (this pool's
        :meth:`validation`): that there is none, or which families hold fewer tasks
        than ``tasks.heldout_per_family`` (a task file's split gives what it has), so
        their validation accuracy moves in coarse steps."""
        if not validation:
            return ["no validation tasks (the task files are too small to hold any: raise tasks.heldout_fraction); "
                    "validation accuracy is not measured"]
        asked, held = self.config.tasks.heldout_per_family, Counter(task.family for task in validation)
        notes = []
        for family in self.specs:
            if held[family] == 0:
                notes.append(f"{family}: no validation tasks (its file is too small to hold any); the others decide")
            elif held[family] < asked:
                notes.append(f"{family}: its validation split holds {held[family]} tasks, fewer than "
                             f"tasks.heldout_per_family = {asked}: its validation accuracy moves in steps of "
                             f"{1 / held[family]:.0%} (a larger file or tasks.heldout_fraction gives more)")
        return notes

    def test(self, per_family: int, fewer_ok: bool = False) -> list[Task]:
        """``per_family`` test tasks per family at ``tasks.heldout_level``: for reports
        only. Raises InputError for a run made before the test split existed."""
        if self.config.tasks.test_share == 0:
            raise InputError("this run has no test split (tasks.test_share = 0: it was made before the split "
                             "existed); score it on validation, or set tasks.test_share in a new run")
        return self.held_out(TEST, per_family, fewer_ok)

    def held_out(self, split: str, per_family: int, fewer_ok: bool = False) -> list[Task]:
        t = self.config.tasks
        levels = self.levels()
        tasks: list[Task] = []
        for family in self.specs:
            level = min(t.heldout_level, levels[family] - 1)
            tasks += self._draw(family, level, per_family, split, seed=self.config.run.seed, fewer_ok=fewer_ok)
        return tasks

    def majority_answers(self, per_family: int = 64) -> dict[str, str]:
        """Per family, the most common gold answer (spaces normalised, lower case) of
        ``per_family`` training tasks at the validation level, drawn apart from the
        batches: what "always give the same answer" says (on a True/False family it
        scores about half, with no reasoning at all)."""
        levels, answers = self.levels(), {}
        for family in self.specs:
            level = min(self.config.tasks.heldout_level, levels[family] - 1)
            drawn = self._draw(family, level, per_family, TRAIN, _draw_seed(self.config.run.seed, -3, family, level),
                               fewer_ok=True)
            counts = Counter(answer_key(t) for t in drawn)
            answers[family] = counts.most_common(1)[0][0] if counts else ""
        return answers

    def answer_pattern(self, family: str) -> str:
        """The family's answer pattern, from its training split (constrained decoding)."""
        t = self.config.tasks
        return answer_pattern_of(self.specs[family].source, t.split_seed, t.heldout_fraction)

    def _draw(self, family: str, level: int, n: int, split: str, seed: int, fewer_ok: bool = False) -> list[Task]:
        spec, t = self.specs[family], self.config.tasks
        if spec.is_file:  # a file split smaller than n always gives what it has
            tasks = jsonl_tasks(spec.source, n, split, seed, t.split_seed, t.heldout_fraction, test_share=t.test_share)
        else:
            tasks = reasoning_gym_tasks(spec.source, level, n, split, seed, t.split_seed, t.heldout_fraction, fewer_ok,
                                        test_share=t.test_share)
        return with_answer_pattern(tasks, self.answer_pattern(family))


def answer_key(task: Task) -> str:
    """A task's gold answer as :meth:`TaskPool.majority_answers` counts it (spaces
    normalised, lower case): compare a task with a majority answer through this."""
    from fitness.format import normalise_space

    return normalise_space(task.answer or "").lower()


def _stem(path: str) -> str:
    from pathlib import Path

    return Path(path).stem


def _draw_seed(seed: int, generation: int, family: str, level: int) -> int:
    return random.Random(f"{seed}/{generation}/{family}/{level}").randrange(2**31)
