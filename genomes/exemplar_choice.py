"""Which few-shot exemplars a prompt shows for one question, and in what order.

Why this is a gene: a small model copies the *kind* of the exemplar it saw last. On
the search benchmark the bundled SmolLM2-135M answered letter-counting questions well
after a letter-counting exemplar and badly after an arithmetic one, so reordering or
swapping a fixed list of exemplars only traded one task family for another. Choosing
exemplars per question removes that trade.

Choices (``PromptGene.exemplar_choice``):

- ``fixed``: every exemplar, in gene order, for every question (the default);
- ``nearest_last``: every exemplar, ordered so the one most like the question comes
  last (ascending similarity; ties keep gene order);
- ``nearest_only``: only the exemplars most like the question (every exemplar that
  shares the top similarity, in gene order). If no exemplar shares a word with the
  question, all tie at zero and all are shown.
- ``nearest_two``: the two exemplars most like the question (ties go to the earlier
  in gene order), the nearer one last. One exemplar alone is too little for the
  bundled model: under ``nearest_only`` with a single matching exemplar it stopped
  writing the answer block (0 % of chain sums answered), while two of the question's
  kind gave the best score measured on the search benchmark's held-out set.

Similarity is the Jaccard overlap of the questions' *template words*: lower-case
alphabetic words outside double quotes. Numbers and quoted text vary between
questions of one kind ("How many times does the letter "e" appear in the text:
"..."?"), the surrounding words do not. Pure and deterministic: the choice depends on
the question text alone, so an exported strategy renders the same prompts anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Protocol, TypeVar

FIXED = "fixed"
# Questions at least this alike are of one kind: in the library questions of one kind
# share 0.67 to 1 of their template words, the closest pair of kinds (letter counting,
# counting bits) 0.25.
KIND_SIMILARITY = 0.5
EXEMPLAR_CHOICES: tuple[str, ...] = (FIXED, "nearest_last", "nearest_only", "nearest_two")
# One line per choice, for people reading an exported template or a report.
DESCRIPTIONS = {
    FIXED: "every exemplar in gene order for every question",
    "nearest_last": "every exemplar, the one most like the question last",
    "nearest_only": "only the exemplars most like the question",
    "nearest_two": "the two exemplars most like the question, the nearer last",
}

_QUOTED = re.compile(r'"[^"]*"')
_WORD = re.compile(r"[a-z]+")


class _HasQuestion(Protocol):
    @property
    def question(self) -> str: ...


E = TypeVar("E", bound=_HasQuestion)


@lru_cache(maxsize=8192)  # render() runs once per request; the same questions recur
def template_words(question: str) -> frozenset[str]:
    """The words that identify the kind of ``question`` (see the module docstring)."""
    return frozenset(_WORD.findall(_QUOTED.sub(" ", question).lower()))


def similarity(a: str, b: str) -> float:
    """Jaccard overlap of the template words of two questions, in [0, 1]."""
    return _jaccard(template_words(a), template_words(b))


def choice_matters(exemplars: Sequence[object]) -> bool:
    """Whether the choice can change what is shown: with fewer than two exemplars
    every choice renders the same chat."""
    return len(exemplars) > 1


def choose_exemplars(exemplars: Sequence[E], question: str, choice: str) -> tuple[E, ...]:
    """The exemplars to show before ``question`` under ``choice`` (one of
    :data:`EXEMPLAR_CHOICES`; anything else is a ValueError)."""
    if choice not in EXEMPLAR_CHOICES:
        raise ValueError(f"unknown exemplar choice {choice!r} (known: {', '.join(EXEMPLAR_CHOICES)})")
    if choice == FIXED or not choice_matters(exemplars):
        return tuple(exemplars)
    scores = [similarity(e.question, question) for e in exemplars]
    if choice == "nearest_last":
        order = sorted(range(len(exemplars)), key=lambda i: scores[i])  # stable: ties keep gene order
        return tuple(exemplars[i] for i in order)
    if choice == "nearest_two":
        two = sorted(range(len(exemplars)), key=lambda i: -scores[i])[:2]  # stable: earlier wins a tie
        # shown farther first; on equal similarity in gene order
        return tuple(exemplars[i] for i in sorted(two, key=lambda i: (scores[i], i)))
    best = max(scores)
    return tuple(e for e, s in zip(exemplars, scores) if s == best)


def same_kind(a: str, b: str) -> bool:
    """Whether two questions are of one kind of task (template similarity of at least
    :data:`KIND_SIMILARITY`)."""
    return similarity(a, b) >= KIND_SIMILARITY


def matching_exemplars(pool: Sequence[E], questions: Sequence[str],
                       min_similarity: float = KIND_SIMILARITY) -> tuple[E, ...]:
    """The exemplars of ``pool`` (in pool order) whose question is at least
    ``min_similarity`` like one of ``questions``: the exemplars of the kinds of task a
    run trains on. A run on arithmetic gains nothing from drawing a syllogism exemplar:
    under ``fixed`` or ``nearest_last`` it costs prompt tokens on every request (more
    exemplars mostly lowered held-out accuracy on the search benchmark), and under the
    nearest choices it is never shown. The default :data:`KIND_SIMILARITY` separates
    the kinds of the library."""
    kinds = {template_words(q) for q in questions}
    return tuple(e for e in pool if any(_jaccard(template_words(e.question), k) >= min_similarity for k in kinds))


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    union = a | b
    return len(a & b) / len(union) if union else 0.0
