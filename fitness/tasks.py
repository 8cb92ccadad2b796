"""Tasks: reasoning-gym families by name with difficulty levels, and user JSONL files.

Contract:
- a :class:`Task` has a stable ``id`` derived from its source, level and content, so
  the same question gets the same id in every process and run;
- the split of a question (``train``, ``validation`` or ``test``) is decided by a
  salted content hash (``split_seed``), so the splits are disjoint by construction,
  whatever seeds are used to draw from them, and stay disjoint as the curriculum
  moves. ``train`` feeds selection and training data; ``validation`` every choice the
  tool makes (tuning, pruning, picking the best); ``test`` is reported only.
  ``heldout_fraction`` of a source is held out of training and ``test_share`` of that
  part is test; the training split does not depend on ``test_share``, and with
  ``test_share = 0`` validation is exactly the old two-way held-out split (runs made
  before the third split resume with the tasks they had);
- bad specs (unknown family, missing file, answer-less JSONL row, level out of
  range) raise :class:`~genomes.errors.InputError` naming the problem.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fitness.answer_patterns import infer_answer_pattern
from genomes.errors import InputError
from genomes.validation import read_jsonl_objects

TRAIN, VALIDATION, TEST = "train", "validation", "test"
HELDOUT = "heldout"  # a draw from every question outside training: validation and test
SPLITS = (TRAIN, VALIDATION, TEST, HELDOUT)
DEFAULT_HELDOUT_FRACTION = 0.2
DEFAULT_TEST_SHARE = 0.5
JSONL_PREFIX = "jsonl:"
JSONL_VERIFIERS = ("auto", "numeric", "math", "exact")
# Families whose curricula have dozens of fine levels are capped so that one level
# step is a visible change in difficulty.
MAX_LEVELS = 8
# Answer patterns are inferred from training answers at up to PATTERN_LEVELS levels
# spread over a family's range, PATTERN_PER_LEVEL at each; fewer than
# MIN_PATTERN_ANSWERS answers in all are too little evidence for any pattern.
PATTERN_LEVELS = 4
PATTERN_PER_LEVEL = 8
MIN_PATTERN_ANSWERS = 4


@dataclass(frozen=True, eq=False)
class Task:
    """One verifiable question.

    ``answer`` is the gold answer, or None for families that only their own scorer can
    judge; ``entry`` is the reasoning-gym entry (with metadata) that scorer needs.
    ``difficulty`` is the level normalised to [0, 1]. ``steps`` are gold intermediate
    values when the source supplies them.
    """

    id: str
    family: str
    question: str
    answer: str | None
    level: int
    difficulty: float
    steps: tuple[str, ...] | None = None
    entry: dict[str, Any] | None = field(default=None, repr=False)
    verifier: str = "auto"  # "reasoning_gym" | "numeric" | "math" | "exact" | "auto"
    # the shape of the family's answers (fitness.answer_patterns), inferred from its
    # training split; "" = none known. Used by constrained decoding in "answer" mode.
    answer_pattern: str = ""


def content_key(family: str, question: str) -> str:
    return hashlib.sha256(f"{family}\n{question}".encode()).hexdigest()


def split_of(family: str, question: str, split_seed: int, heldout_fraction: float,
             test_share: float = DEFAULT_TEST_SHARE) -> str:
    """Which split (train, validation or test) a question belongs to: a pure function
    of its content, the seed and the two fractions."""
    digest = hashlib.sha256(f"{split_seed}\n{family}\n{question}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    if bucket >= heldout_fraction:
        return TRAIN
    # the held-out part is cut once more: its low end validates, its high end tests
    return VALIDATION if bucket < heldout_fraction * (1 - test_share) else TEST


def in_split(split: str, wanted: str) -> bool:
    """Whether a question of ``split`` belongs to a draw from ``wanted`` (``heldout``
    takes validation and test alike)."""
    return split != TRAIN if wanted == HELDOUT else split == wanted


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise InputError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")


def make_task_id(family: str, level: int, question: str) -> str:
    return f"{family}/L{level}/{content_key(family, question)[:12]}"


# ---- reasoning-gym ---------------------------------------------------------------
def reasoning_gym_families() -> list[str]:
    from reasoning_gym.factory import (
        DATASETS,  # lazy: importing reasoning_gym takes ~1 s
    )

    return sorted(DATASETS)


def family_levels(family: str) -> int:
    """Number of difficulty levels of a reasoning-gym family (1 if it has no curriculum)."""
    from reasoning_gym.factory import CURRICULA

    _check_family(family)
    if family not in CURRICULA:
        return 1
    curriculum = CURRICULA[family]()
    longest = max((len(a.levels) for a in curriculum.attributes.values()), default=1)
    # Count only levels that change the generator's configuration: range attributes
    # with ``ensure_interval`` already reach their top value one level early, so in
    # 40 families the last global level repeats the one below it (same questions,
    # yet a different id and difficulty).
    levels, previous = 0, None
    for level in range(min(longest, MAX_LEVELS)):
        curriculum.set_global_level(level)
        config = vars(curriculum.generate_configuration({"seed": 0, "size": 1}))
        if config == previous:
            break
        levels, previous = levels + 1, config
    return max(1, levels)


def _check_family(family: str) -> None:
    families = reasoning_gym_families()
    if family not in families:
        close = [f for f in families if family.split("_")[0] in f][:5]
        hint = f" (did you mean: {', '.join(close)}?)" if close else ""
        raise InputError(f"unknown task family {family!r}{hint}; `evo tasks` lists all {len(families)}")


def _reasoning_gym_items(family: str, level: int, seed: int, size: int) -> list[dict[str, Any]]:
    # the same in every process: some generators follow the hash seed (fitness.canonical_draws)
    from fitness.canonical_draws import draw_items

    return draw_items(family, level, seed, size)


def reasoning_gym_tasks(
    family: str, level: int, n: int, split: str, seed: int, split_seed: int = 0,
    heldout_fraction: float = DEFAULT_HELDOUT_FRACTION, fewer_ok: bool = False, *,
    test_share: float = DEFAULT_TEST_SHARE,
) -> list[Task]:
    """Draw ``n`` distinct tasks of one family and level from ``split``.

    Deterministic in (family, level, n, split, seed, split_seed, heldout_fraction,
    test_share, fewer_ok). When the
    generator cannot produce ``n`` distinct questions in that split (small levels of
    some families have few: chain_sum level 0 has 200 in all), raises InputError, or
    with ``fewer_ok`` returns every distinct one it found (the whole split of a small
    level: the last draw is 32 times ``n`` questions).
    """
    check_split(split)
    n_levels = family_levels(family)
    if not 0 <= level < n_levels:
        raise InputError(f"{family}: level {level} out of range (levels 0..{n_levels - 1})")
    tasks: dict[str, Task] = {}
    size = max(4 * n, 16)
    for attempt in range(4):  # widen the draw when the split filter or duplicates thin it out
        draw_seed = random.Random(f"{seed}/{attempt}").randrange(2**31)
        for item in _reasoning_gym_items(family, level, draw_seed, size):
            question = str(item["question"])
            if not in_split(split_of(family, question, split_seed, heldout_fraction, test_share), split):
                continue
            task_id = make_task_id(family, level, question)
            if task_id not in tasks:
                answer = item.get("answer")
                tasks[task_id] = Task(
                    id=task_id, family=family, question=question,
                    answer=None if answer is None else str(answer), level=level,
                    difficulty=level / (n_levels - 1) if n_levels > 1 else 0.0,
                    entry=item, verifier="reasoning_gym",
                )
            if len(tasks) == n:
                return list(tasks.values())
        size *= 2
    if fewer_ok and tasks:
        return list(tasks.values())
    raise InputError(f"{family} level {level}: only {len(tasks)} distinct {split} questions, asked for {n}")


# ---- user JSONL --------------------------------------------------------------------
def load_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate a task file; every row needs ``question`` and ``answer``."""
    path = Path(path)
    rows = []
    for lineno, row in read_jsonl_objects(path, "task file"):
        for key in ("question", "answer"):
            if row.get(key) is None or str(row[key]).strip() == "":
                raise InputError(f"{path}:{lineno}: row has no {key!r}")
        difficulty = row.get("difficulty", 0.0)
        if not isinstance(difficulty, (int, float)) or isinstance(difficulty, bool) or not 0 <= difficulty <= 1:
            raise InputError(f"{path}:{lineno}: 'difficulty' must be a number in [0, 1], got {difficulty!r}")
        verifier = row.get("verifier", "auto")
        if verifier not in JSONL_VERIFIERS:
            raise InputError(f"{path}:{lineno}: unknown verifier {verifier!r} (one of: {', '.join(JSONL_VERIFIERS)})")
        steps = row.get("steps")
        if steps is not None and not isinstance(steps, list):
            raise InputError(f"{path}:{lineno}: 'steps' must be a list")
        rows.append(row)
    if not rows:
        raise InputError(f"{path}: no tasks in file")
    return rows


def jsonl_tasks(
    path: str | Path, n: int | None, split: str, seed: int, split_seed: int = 0,
    heldout_fraction: float = DEFAULT_HELDOUT_FRACTION, *, test_share: float = DEFAULT_TEST_SHARE,
) -> list[Task]:
    """Tasks of a user file in ``split``; a seeded sample of ``n`` (all when None)."""
    check_split(split)
    family = JSONL_PREFIX + Path(path).stem
    tasks = []
    for row in load_jsonl(path):
        question = str(row["question"])
        if not in_split(split_of(family, question, split_seed, heldout_fraction, test_share), split):
            continue
        difficulty = float(row.get("difficulty", 0.0))
        tasks.append(Task(
            id=make_task_id(family, 0, question), family=family, question=question,
            answer=str(row["answer"]), level=0, difficulty=difficulty,
            steps=tuple(str(s) for s in row["steps"]) if row.get("steps") else None,
            verifier=str(row.get("verifier", "auto")),
        ))
    if n is not None and n < len(tasks):
        tasks = random.Random(seed).sample(tasks, n)
    return tasks


# ---- task specs --------------------------------------------------------------------
@dataclass(frozen=True)
class TaskSpec:
    """One entry of ``--tasks``: ``family``, ``family@level`` or a ``.jsonl`` path."""

    source: str
    level: int | None = None

    @property
    def is_file(self) -> bool:
        return self.source.endswith(".jsonl")

    @classmethod
    def parse(cls, text: str) -> TaskSpec:
        text = text.strip()
        if not text:
            raise InputError("empty task spec")
        if text.endswith(".jsonl"):
            return cls(text)
        name, at, level = text.partition("@")
        # isdigit() alone accepts "²" (int() then raises ValueError) and "١"
        if at and not (level.isascii() and level.isdigit()):
            raise InputError(f"task spec {text!r}: level must be a non-negative integer")
        return cls(name, int(level) if level else None)


def parse_task_specs(text: str) -> list[TaskSpec]:
    return [TaskSpec.parse(part) for part in text.split(",") if part.strip()]


def load_tasks(
    specs: list[TaskSpec], n: int, split: str = TEST, seed: int = 0, split_seed: int = 0,
    heldout_fraction: float = DEFAULT_HELDOUT_FRACTION, *, test_share: float = DEFAULT_TEST_SHARE,
) -> list[Task]:
    """``n`` tasks per spec (a family without a level gets level 0) from ``split``."""
    check_split(split)
    if n < 1:
        raise InputError(f"n must be >= 1, got {n}")
    for spec in specs:  # validate every spec before generating anything
        if spec.is_file:
            load_jsonl(spec.source)
        else:
            _check_family(spec.source)
            n_levels = family_levels(spec.source)
            if not 0 <= (spec.level or 0) < n_levels:
                raise InputError(f"{spec.source}: level {spec.level} out of range (levels 0..{n_levels - 1})")
    tasks: list[Task] = []
    for spec in specs:
        if spec.is_file:
            drawn = jsonl_tasks(spec.source, n, split, seed, split_seed, heldout_fraction, test_share=test_share)
        else:
            drawn = reasoning_gym_tasks(spec.source, spec.level or 0, n, split, seed, split_seed, heldout_fraction,
                                        test_share=test_share)
        tasks += with_answer_pattern(drawn, answer_pattern_of(spec.source, split_seed, heldout_fraction))
    return tasks


# ---- answer patterns ---------------------------------------------------------------
@functools.cache
def answer_pattern_of(source: str, split_seed: int = 0, heldout_fraction: float = DEFAULT_HELDOUT_FRACTION) -> str:
    """The answer pattern (:mod:`fitness.answer_patterns`) of a task source, a
    reasoning-gym family or a ``.jsonl`` path, inferred from gold answers of its
    *training* split only (held-out answers never shape it): a pure function of its
    arguments. ``""`` when the answers fit no pattern or there are too few."""
    if source.endswith(".jsonl"):
        answers = [t.answer for t in jsonl_tasks(source, None, TRAIN, 0, split_seed, heldout_fraction)]
    else:
        n_levels = family_levels(source)
        count = min(PATTERN_LEVELS, n_levels)
        levels = sorted({round(i * (n_levels - 1) / max(1, count - 1)) for i in range(count)})
        answers = [t.answer for level in levels
                   for t in reasoning_gym_tasks(source, level, PATTERN_PER_LEVEL, TRAIN, seed=0, split_seed=split_seed,
                                                heldout_fraction=heldout_fraction, fewer_ok=True)]
    if sum(a is not None for a in answers) < MIN_PATTERN_ANSWERS:
        return ""
    return infer_answer_pattern(answers)


def with_answer_pattern(tasks: Sequence[Task], pattern: str) -> list[Task]:
    return [replace(task, answer_pattern=pattern) for task in tasks]
