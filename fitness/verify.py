"""Strict verifiers: how much credit an extracted answer earns (docs/design.md, "The unified loss").

Contract of :func:`score_answer`: it takes the answer text the parser pulled out of the
constrained-output block (or None) and a :class:`~fitness.tasks.Task`, returns a score
``c`` in [0, 1] and never raises: malformed model output is data and scores 0.

Guards applied before any verifier (each closes a measured exploit):

- no answer (None, empty, whitespace) scores 0;
- echo: an answer that contains the whole question scores 0;
- size: an answer much longer than the gold (``max(200, 4 * len(gold))`` characters,
  4000 without a gold) scores 0, so garbage and runaway output cost nothing downstream.

Then ``task.verifier`` picks the check:

- ``"reasoning_gym"``: the family's own ``score_answer``; anything below full credit is
  0 (reasoning-gym gives partial credit to padded answers) except for families in
  :data:`PARTIAL_CREDIT_FAMILIES`; the gold padded with extra words scores 0 even
  where the family's scorer gives it full credit. Families without a single gold
  answer are judged by that scorer alone.
- ``"numeric"``: the answer must be one number literal equal to the gold exactly
  (Fraction arithmetic, no float tolerance); an expression is not a number.
- ``"math"``: math-verify, gold first, on an answer that is one expression: no prose,
  no list of candidates, nothing too costly to compare (math-verify would otherwise
  pick "7" out of "the answer is 7" or "$8$ $7$"). Safe in threads: math-verify's
  SIGALRM timeout is used only in the main thread, and the cost guard bounds the work
  where no timeout can run.
- ``"exact"``: equality after collapsing whitespace and case.
- ``"auto"`` (user JSONL files): numeric when the gold is a number, math when it looks
  like math, exact otherwise.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import signal
import threading
from collections.abc import Callable
from typing import Any

from fitness.numbers import parse_number
from fitness.tasks import Task

__all__ = ["PARTIAL_CREDIT_FAMILIES", "score_answer"]

log = logging.getLogger(__name__)

# Reasoning-gym families whose fractional scores are kept as they are. Partial credit
# must be shown to be meaningful for a family (a better answer reliably scores higher,
# and padding or listing candidates does not) before the family is added here:
# reasoning-gym's default scorer pays 0.375 for the gold "-61" followed by junk.
PARTIAL_CREDIT_FAMILIES: frozenset[str] = frozenset()

FULL_CREDIT = 1.0 - 1e-9
MIN_MAX_ANSWER_CHARS = 200
# Families without a gold answer (graph colourings, move sequences) have nothing to
# scale the size guard by, so they get a fixed, generous bound.
NO_GOLD_MAX_ANSWER_CHARS = 4000
# math-verify's own timeout (seconds); used only where a signal alarm can work.
MATH_TIMEOUT_S = 3


def score_answer(answer: str | None, task: Task) -> float:
    """Score ``answer`` against ``task`` in [0, 1]; never raises (see module docstring)."""
    try:
        score = _score(answer, task)
    except Exception:  # noqa: BLE001 - any failure on model output is a wrong answer
        log.debug("verifier failed on task %s", getattr(task, "id", "?"), exc_info=True)
        return 0.0
    if not isinstance(score, (int, float)) or math.isnan(score):
        return 0.0
    return min(1.0, max(0.0, float(score)))


def _score(answer: object, task: Task) -> float:
    if not isinstance(answer, str) or not answer.strip():
        return 0.0
    answer = answer.strip()
    gold = task.answer
    if _too_long(answer, gold) or _echoes_question(answer, task.question, gold):
        return 0.0
    verifier = task.verifier
    if verifier == "reasoning_gym":
        return _score_reasoning_gym(answer, task)
    if gold is None:  # only a dataset scorer can judge a task without a gold answer
        return 0.0
    if verifier == "auto":
        verifier = _auto_verifier(gold)
    checks: dict[str, Callable[[str, str], float]] = {
        "numeric": _score_numeric, "math": _score_math, "exact": _score_exact,
    }
    check = checks.get(verifier)
    return check(answer, gold) if check else 0.0


# ---- guards ------------------------------------------------------------------------
def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _too_long(answer: str, gold: str | None) -> bool:
    limit = NO_GOLD_MAX_ANSWER_CHARS if gold is None else max(MIN_MAX_ANSWER_CHARS, 4 * len(gold))
    return len(answer) > limit


def _echoes_question(answer: str, question: str, gold: str | None) -> bool:
    """The answer repeats the whole question (a question shorter than the gold could
    legitimately appear inside it, so those are not judged)."""
    q = _norm(question or "")
    return bool(q) and len(q) > len(_norm(gold or "")) and q in _norm(answer)


# ---- reasoning-gym -----------------------------------------------------------------
@functools.lru_cache(maxsize=256)  # one scorer per reasoning-gym family
def _rg_scorer(family: str) -> Callable[[str | None, dict[str, Any]], float]:
    # Lazy import: reasoning_gym takes about a second to import. The scorer of a
    # default-config dataset reads everything it needs from the entry's metadata.
    from reasoning_gym.factory import get_score_answer_fn

    return get_score_answer_fn(family)


def _padded_gold(answer: str, gold: str) -> bool:
    """The gold plus extra words or tokens ("-61 junk", "w1, w2, extra", "Falsejunk").

    Measured on reasoning-gym 0.1.25: word_sorting, gsm_symbolic, knights_knaves,
    sokoban, game_of_life_halting and more give such answers FULL credit, so the
    full-credit threshold alone does not stop padding. Affixes of digits and
    punctuation only ("0.31250" for 0.3125, "(expr)") are left to the family scorer.
    """
    a, g = _norm(answer), _norm(gold)
    if not g or a == g:
        return False
    start = a.find(g)
    while start >= 0:
        affixes = a[:start] + a[start + len(g):]
        if any(ch.isalpha() or ch.isspace() or ch in ",;" for ch in affixes):
            return True
        start = a.find(g, start + 1)
    return False


def _score_reasoning_gym(answer: str, task: Task) -> float:
    if task.answer is not None and _padded_gold(answer, task.answer):
        return 0.0
    entry = task.entry
    if entry is None:  # a hand-made task: the default scorer only needs the gold
        entry = {"question": task.question, "answer": task.answer, "metadata": {}}
    score = float(_rg_scorer(task.family)(answer, entry))
    if task.family in PARTIAL_CREDIT_FAMILIES:
        return score
    return 1.0 if score >= FULL_CREDIT else 0.0


# ---- numeric -----------------------------------------------------------------------
def _score_numeric(answer: str, gold: str) -> float:
    gold_value = parse_number(gold, gold=True)
    if gold_value is None:  # a mislabelled task: judge it as text rather than fail it
        return _score_exact(answer, gold)
    value = parse_number(answer)
    return 1.0 if value is not None and value == gold_value else 0.0


# ---- exact -------------------------------------------------------------------------
def _score_exact(answer: str, gold: str) -> float:
    return 1.0 if _norm(answer) == _norm(gold) else 0.0


# ---- math --------------------------------------------------------------------------
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z]{2,}")
# Names an answer may use even when the gold does not (equivalent forms).
_MATH_WORDS = frozenset({
    "sqrt", "frac", "dfrac", "tfrac", "pi", "infty", "inf", "sin", "cos", "tan", "cot",
    "sec", "csc", "log", "ln", "exp", "cdot", "times", "div", "pm", "left", "right",
})
# Constructs whose evaluation can run for minutes (10000000!, \binom{10^9}{...}); an
# answer may use one only where the gold does.
_HEAVY = ("!", "\\binom", "binom", "choose", "\\sum", "\\prod", "\\int", "\\lim", "factorial", "gamma")
MAX_EXPONENT_LITERAL = 1000
_EXPONENT_LITERAL = re.compile(r"(?:\^|\*\*)[\s{(]*(\d+)")
_POWER = re.compile(r"\^|\*\*")


def _has_prose(answer: str, gold: str) -> bool:
    """Words in the answer that are neither in the gold nor math names: math-verify
    would otherwise pull "7" out of "7 junk junk" or "the answer is 7 not 8"."""
    gold_words = {w.lower() for w in _WORD.findall(_LATEX_COMMAND.sub(" ", gold))}
    words = _WORD.findall(_LATEX_COMMAND.sub(" ", answer))
    return any(w.lower() not in gold_words and w.lower() not in _MATH_WORDS for w in words)


def _exponent_end(text: str, start: int) -> int:
    """Index just past the exponent that begins at ``start`` (a group or one atom)."""
    i = start
    while i < len(text) and text[i].isspace():
        i += 1
    if i < len(text) and text[i] in "{(":
        depth = 0
        for j in range(i, len(text)):
            if text[j] in "{(":
                depth += 1
            elif text[j] in "})":
                depth -= 1
                if depth == 0:
                    return j + 1
        return len(text)
    while i < len(text) and (text[i].isalnum() or text[i] in ".\\"):
        i += 1
    return i


def _has_nested_power(text: str) -> bool:
    """A tower like 2^{2^{99}} or 2**2**99: sympy evaluates it without end."""
    for match in _POWER.finditer(text):
        end = _exponent_end(text, match.end())
        if _POWER.search(text[match.end():end]) or _POWER.match(text[end:].lstrip()):
            return True
    return False


def _too_costly(answer: str, gold: str) -> bool:
    """Constructs that could stall the comparison (where no timeout can stop it)."""
    if any(op in answer and op not in gold for op in _HEAVY):
        return True
    if len(_POWER.findall(answer)) > len(_POWER.findall(gold)) or _has_nested_power(answer):
        return True
    gold_literals = set(_EXPONENT_LITERAL.findall(gold))
    return any(int(n) > MAX_EXPONENT_LITERAL and n not in gold_literals for n in _EXPONENT_LITERAL.findall(answer))


_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
# Ways to write several candidates in one block; math-verify quietly picks one of
# them (r"8 \\ 7" and "$8$ $7$" both verify as 7), so an answer may use them only
# where the gold does (a matrix gold has r"\\").
_SEPARATORS = ("\\\\", ";", "\\quad", "\\qquad", "\n", "$")
# One assignment "x = 7" is an answer; "8 = 7" verifies as its right-hand side.
_ASSIGNMENT = re.compile(r"[A-Za-z]\w*\s*=[^=]+")


def _unwrap(text: str) -> str:
    """Drop one pair of math delimiters around the whole text."""
    text = text.strip()
    for left, right in _DELIMITERS:
        if len(text) > len(left) + len(right) and text.startswith(left) and text.endswith(right):
            return text[len(left):-len(right)].strip()
    return text


def _several_candidates(answer: str, gold: str) -> bool:
    if any(sep in answer and sep not in gold for sep in _SEPARATORS):
        return True
    return "=" in answer and "=" not in gold and not _ASSIGNMENT.fullmatch(answer)


def _as_latex(text: str) -> str:
    # math-verify's LaTeX extractor only looks inside $...$ (or \boxed); bare LaTeX
    # such as \frac{1}{2} would otherwise go unparsed, and plain-text parsing picks
    # one number out of "(1, 2)".
    return text if "$" in text else f"${text}$"


def _math_timeout() -> int | None:
    """math-verify's timeout uses SIGALRM: possible only in the main thread, and only
    when the caller has no alarm of its own (math-verify would cancel it)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        return None
    return MATH_TIMEOUT_S


def _score_math(answer: str, gold: str) -> float:
    answer, gold = _unwrap(answer), _unwrap(gold)
    if _norm(answer) == _norm(gold):
        return 1.0
    if _several_candidates(answer, gold) or _has_prose(answer, gold) or _too_costly(answer, gold):
        return 0.0
    from math_verify import parse, verify  # lazy: pulls in sympy

    timeout = _math_timeout()
    gold_parsed = parse(_as_latex(gold), parsing_timeout=timeout)
    answer_parsed = parse(_as_latex(answer), parsing_timeout=timeout)
    if not gold_parsed or not answer_parsed:
        return 0.0
    return 1.0 if verify(gold_parsed, answer_parsed, timeout_seconds=timeout) else 0.0


# ---- auto --------------------------------------------------------------------------
_LOOKS_LIKE_MATH = re.compile(r"\d|\\[A-Za-z]+|[\^=+*/<>]|(?:^|\s)-|\bsqrt\b|\bpi\b")


def _auto_verifier(gold: str) -> str:
    if parse_number(gold, gold=True) is not None:
        return "numeric"
    return "math" if _LOOKS_LIKE_MATH.search(gold) else "exact"
