"""Answer patterns: the shape of a family's answers, inferred from its training answers.

Constrained decoding in ``answer`` mode (:mod:`fitness.constrain`) lets the model
write only answers of its family's shape: an integer where every training answer is
an integer, one of a few labels where the training answers are a few labels. The
pattern is inferred from gold answers of the *training* split only, so no held-out
answer shapes it; it is a property of the family, the same for every task of it.

A pattern is a string: a name from :data:`PATTERNS` (``"integer"``), or
``"choice:"`` followed by the JSON list of the allowed answers, or ``""`` when no
pattern fits (the answer is then free text; structure-only constraint).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable

# name -> regex of the whole answer. Written in the regex subset that Python's re and
# llguidance's Lark terminals both read; most specific first (inference takes the
# first that every training answer matches).
_NUMBER = r"-?[0-9]+(\.[0-9]+)?"
PATTERNS: dict[str, str] = {
    "integer": r"-?[0-9]+",
    "decimal": _NUMBER,
    "fraction": r"-?[0-9]+(\.[0-9]+|/[0-9]+)?",
    "word": r"[A-Za-z]+",
    "words": r"[A-Za-z]+([ ,]+[A-Za-z]+)*",
    "numbers": rf"{_NUMBER}([ ,]+{_NUMBER})*",
}
CHOICE_PREFIX = "choice:"
# A closed set of labels is inferred only from enough evidence: at least this many
# answers, at most MAX_CHOICES distinct ones, each seen at least twice (a label seen
# once hints that the set is open).
MIN_CHOICE_ANSWERS = 12
MAX_CHOICES = 4
MAX_CHOICE_CHARS = 40


def infer_answer_pattern(answers: Iterable[str | None]) -> str:
    """The pattern every given answer fits (see the module docstring); ``""`` when
    there are no answers or none fits. ``None`` answers (families only their own
    scorer can judge) are left out."""
    seen = [a.strip() for a in answers if a is not None]
    if not seen or any(not a for a in seen):
        return ""
    counts = Counter(seen)
    if (len(seen) >= MIN_CHOICE_ANSWERS and len(counts) <= MAX_CHOICES and min(counts.values()) >= 2
            and all(len(a) <= MAX_CHOICE_CHARS and "<" not in a for a in counts)):
        return CHOICE_PREFIX + json.dumps(sorted(counts))
    for name, regex in PATTERNS.items():
        if all(re.fullmatch(regex, a) for a in seen):
            return name
    return ""


def choices(pattern: str) -> list[str] | None:
    """The allowed answers of a ``choice:`` pattern; None for other patterns."""
    if not pattern.startswith(CHOICE_PREFIX):
        return None
    values = json.loads(pattern[len(CHOICE_PREFIX):])
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
        raise ValueError(f"malformed choice pattern: {pattern!r}")
    return values


def check_pattern(pattern: str) -> None:
    """Raise ValueError unless ``pattern`` is ``""``, a known name or a valid choice."""
    if pattern and pattern not in PATTERNS and choices(pattern) is None:
        raise ValueError(f"unknown answer pattern {pattern!r} (one of: {', '.join(PATTERNS)}, choice:[...])")


def fits(pattern: str, answer: str) -> bool:
    """Whether ``answer`` is one the pattern allows (``""`` allows everything)."""
    answer = answer.strip()
    if not pattern:
        return True
    values = choices(pattern)
    if values is not None:
        return answer in values
    return re.fullmatch(PATTERNS[pattern], answer) is not None
