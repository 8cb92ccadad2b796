"""The unified loss (docs/design.md, "The unified loss"): how one completion, and one
individual's task batch, is scored.

Per completion::

    L_total = α·L_reason + β·L_constrained + γ·L_response + δ·L_diff
    fitness = −L_total                                   (higher is better)

An individual's loss is the mean of each term over its task batch (every task counts
once), combined with the weights afterwards; :func:`individual_loss` returns both the
total and the mean terms, :func:`fitness_value` returns ``−L_total``.

Terms, their ranges and normalisation:

- ``L_constrained = −c`` in [−1, 0], where ``c`` is the verifier's score of the
  answer (:func:`fitness.verify.score_answer`; already strict: anything below full
  credit is 0 outside the known partial-credit families). A missing, empty or
  disagreeing answer has ``c = 0``.

- ``L_reason`` in [−1, 0]:

  * with gold intermediate values (``task.steps`` non-empty):
    ``L_reason = −(1/n)·Σ_i 1[step_i correct]·f_eff(i, n_gold)`` with
    ``n = max(n_gold, n_model)``, so missing steps and padding steps both cost.
    Model step ``i`` (1-based) is correct when it *mentions* gold value ``i``
    (positional alignment: gold value 1 must appear in the model's first step).
    "Mentions" (:func:`mentions`): when the gold value is one number literal
    (integer, decimal, thousands separators ``1,234``, fraction ``p/q``, typographic
    minus), it matches a number in the step of equal exact value (``19.0`` matches
    ``19``, ``12`` does not match ``1``; a ``p/q`` in the step also counts as its
    value); otherwise the step must contain the gold text after collapsing whitespace
    and case, not inside a longer word (``cat`` does not match ``concatenate``).
    ``f_eff(i, n_gold)`` uses the gold step count as reference, so a correct step,
    which always has ``i <= n_gold``, weighs 1: the length pressure comes from ``n``.
  * otherwise: ``L_reason = −c·f_eff(chain_tokens, reference_tokens)``, the chain
    length in model tokens against a reference length (:data:`DEFAULT_REFERENCE_TOKENS`,
    or one per family): a correct chain at or under the reference gets −1, one twice
    as long −0.5.

- ``f_eff(length, reference) = min(1, reference / length)`` in (0, 1]: 1 at or under
  the reference, then inversely proportional to the length (monotone non-increasing,
  strictly positive; lengths are capped at :data:`MAX_LENGTH` so it never reaches 0).
  A reference <= 0 or NaN is treated as 1 token, a negative or NaN length as 0.
  Chain lengths are the backend's model-token counts (``ExampleResult.chain_tokens``),
  so a reference is in model tokens too.

- ``L_response = −q`` in [−1, 0]; ``q`` is the mean of four checks on the response
  block (each worth 1/4):

  1. present: the completion has a response block;
  2. non-empty: the block has non-whitespace text;
  3. bounded: non-empty and at most ``max_response_tokens`` (default
     :data:`DEFAULT_MAX_RESPONSE_TOKENS` = 60) words and punctuation marks
     (:func:`fitness.format.count_tokens`);
  4. consistent: non-empty, the completion has an answer (not None), and the
     response mentions that answer (same rule as for steps), e.g. the answer ``19``
     is consistent with "so the total is 19." and not with "the total is 190".

  Consistency is with the model's own answer, not the gold: correctness is β's job.
  During DPO training γ weights the SFT term instead (see ``evo.distill``).

- ``L_diff = |D_model − D_task|`` in [0, 1], both clipped to [0, 1]: ``D_task`` is the
  task's normalised difficulty (``level / (levels − 1)``, or the JSONL row's
  ``difficulty``) and ``D_model`` the individual's estimated ability
  (:func:`fitness.curriculum.estimate_ability`).

Defaults (:class:`LossWeights`): α = β = 1 (correct answers reached by efficient,
verifiable reasoning dominate), γ = δ = 0.2 (shaping terms: a readable response and
working at the edge of ability should break ties, not outweigh a correct answer).
Hence ``L_total`` lies in [−(α + β + γ), δ]. The weights are what ``evo tune`` searches.

Multi-objective mode (NSGA-II) uses :func:`multi_objective`: (accuracy ↑, mean chain
tokens ↓); ``L_total`` still ranks the hall of fame.

Contract: malformed results (no answer, no steps, no response, score 0, NaN or None
fields) never raise; they earn no credit (L_reason = L_constrained = L_response = 0).
Only caller errors (misaligned or empty batches, bad weights) raise.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from fitness.format import count_tokens
from fitness.numbers import numbers_in, parse_number
from fitness.verify import FULL_CREDIT
from genomes.errors import InputError

__all__ = [
    "DEFAULT_MAX_RESPONSE_TOKENS",
    "DEFAULT_REFERENCE_TOKENS",
    "MAX_LENGTH",
    "LossTerms",
    "LossWeights",
    "constrained_term",
    "difficulty_term",
    "example_terms",
    "f_eff",
    "fitness_value",
    "individual_loss",
    "mentions",
    "multi_objective",
    "generation_cost",
    "reason_term",
    "response_term",
]

# Reference chain length in model tokens: roughly three or four short arithmetic steps.
DEFAULT_REFERENCE_TOKENS = 48
DEFAULT_MAX_RESPONSE_TOKENS = 60
# Lengths beyond this are treated as this, so f_eff stays strictly positive.
MAX_LENGTH = 1e12

ReferenceTokens = float | Mapping[str, float]


@dataclass(frozen=True)
class LossWeights:
    """α (reason), β (constrained), γ (response), δ (difficulty); finite and >= 0."""

    alpha: float = 1.0
    beta: float = 1.0
    gamma: float = 0.2
    delta: float = 0.2

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
            if not ok:
                raise InputError(f"loss.{f.name}: must be a finite number >= 0, got {value!r}")

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class LossTerms:
    """The four terms of one completion, or their means over a batch."""

    reason: float
    constrained: float
    response: float
    diff: float

    def total(self, weights: LossWeights) -> float:
        return (weights.alpha * self.reason + weights.beta * self.constrained
                + weights.gamma * self.response + weights.delta * self.diff)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


# ---- helpers that never raise on model output ---------------------------------------
def _number(value: Any, default: float = 0.0) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        return default
    return default if math.isnan(x) else x


def _unit(value: Any) -> float:
    """A value clipped to [0, 1]; NaN and non-numbers are 0."""
    return min(1.0, max(0.0, _number(value)))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _steps_of(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        return ()
    return tuple(s if isinstance(s, str) else "" for s in value)


# ---- f_eff --------------------------------------------------------------------------
def f_eff(length: float, reference: float) -> float:
    """``min(1, reference / length)``: 1 at or under the reference, then decaying as
    1/length; in (0, 1]. Reference <= 0 counts as 1; length is clipped to [0, MAX_LENGTH]."""
    ref = _number(reference, 1.0)
    ref = min(ref, MAX_LENGTH) if ref > 0 else 1.0
    n = min(max(_number(length), 0.0), MAX_LENGTH)
    return 1.0 if n <= ref else ref / n


# ---- "mentions": does a step / response contain a value? ----------------------------
_SPACE = re.compile(r"\s+")


def _norm(text: str) -> str:
    return _SPACE.sub(" ", text).strip().casefold()


def mentions(text: Any, value: Any) -> bool:
    """Whether ``text`` contains ``value``: numerically when ``value`` is one number
    literal, otherwise as normalised text not inside a longer word. Never raises."""
    text, value = _text(text), _text(value)
    if not text or not value or not value.strip():
        return False
    try:
        return _mentions(text, value)
    except (ValueError, ArithmeticError):  # e.g. a literal past int's digit limit
        return False


def _mentions(text: str, value: str) -> bool:
    number = parse_number(value, gold=True)
    if number is not None:
        return number in numbers_in(text)
    needle = _norm(value)
    left = r"(?<!\w)" if needle[0].isalnum() or needle[0] == "_" else ""
    right = r"(?!\w)" if needle[-1].isalnum() or needle[-1] == "_" else ""
    return re.search(left + re.escape(needle) + right, _norm(text)) is not None


# ---- the four terms -----------------------------------------------------------------
def reason_term(result: Any, task: Any, reference_tokens: float = DEFAULT_REFERENCE_TOKENS) -> float:
    """L_reason in [−1, 0] (see the module docstring). ``task`` may be None (no gold steps)."""
    gold = _steps_of(getattr(task, "steps", None))
    if not gold:
        c = _unit(getattr(result, "score", 0.0))
        return -c * f_eff(_number(getattr(result, "chain_tokens", 0)), reference_tokens)
    model = _steps_of(getattr(result, "steps", ()))
    n = max(len(gold), len(model))
    hits = sum(f_eff(i, len(gold)) for i, (g, s) in enumerate(zip(gold, model), 1) if mentions(s, g))
    return -hits / n


def constrained_term(result: Any) -> float:
    """L_constrained = −c, with c the verifier's score clipped to [0, 1]."""
    return -_unit(getattr(result, "score", 0.0))


def response_term(result: Any, max_response_tokens: int = DEFAULT_MAX_RESPONSE_TOKENS) -> float:
    """L_response = −q, q = (present + non-empty + bounded + consistent) / 4."""
    response = _text(getattr(result, "response", None))
    present = response is not None
    non_empty = present and bool(response.strip())
    bounded = non_empty and count_tokens(response) <= max_response_tokens
    answer = _text(getattr(result, "answer", None))
    consistent = non_empty and answer is not None and mentions(response, answer)
    return -(present + non_empty + bounded + consistent) / 4


def difficulty_term(d_model: float, d_task: float) -> float:
    """L_diff = |D_model − D_task|, both clipped to [0, 1]."""
    return abs(_unit(d_model) - _unit(d_task))


# ---- per completion and per individual ----------------------------------------------
def _reference_for(result: Any, reference_tokens: ReferenceTokens) -> float:
    if isinstance(reference_tokens, Mapping):
        return reference_tokens.get(getattr(result, "family", None), DEFAULT_REFERENCE_TOKENS)
    return reference_tokens


def example_terms(
    result: Any, task: Any, d_model: float,
    reference_tokens: ReferenceTokens = DEFAULT_REFERENCE_TOKENS,
    max_response_tokens: int = DEFAULT_MAX_RESPONSE_TOKENS,
) -> LossTerms:
    """The four terms of one completion. ``reference_tokens`` is one length or a map
    family -> length (families missing from it use :data:`DEFAULT_REFERENCE_TOKENS`).
    ``D_task`` is the result's ``difficulty`` (the task's when the result has none)."""
    d_task = getattr(result, "difficulty", None)
    if d_task is None:
        d_task = getattr(task, "difficulty", 0.0)
    return LossTerms(
        reason=reason_term(result, task, _reference_for(result, reference_tokens)),
        constrained=constrained_term(result),
        response=response_term(result, max_response_tokens),
        diff=difficulty_term(d_model, d_task),
    )


def _aligned_tasks(results: Sequence[Any], tasks: Sequence[Any] | Mapping[str, Any]) -> list[Any]:
    if isinstance(tasks, Mapping):
        return [tasks.get(getattr(r, "task_id", None)) for r in results]
    if len(tasks) != len(results):
        raise ValueError(f"{len(results)} results but {len(tasks)} tasks; they must be aligned by index")
    return list(tasks)


def individual_loss(
    results: Sequence[Any], tasks: Sequence[Any] | Mapping[str, Any], d_model: float,
    weights: LossWeights | None = None,
    reference_tokens: ReferenceTokens = DEFAULT_REFERENCE_TOKENS,
    max_response_tokens: int = DEFAULT_MAX_RESPONSE_TOKENS,
) -> tuple[float, LossTerms]:
    """(L_total, mean terms) over an individual's batch. ``tasks`` is aligned with
    ``results`` by index, or a map task id -> Task (a missing id means no gold steps).
    Raises ValueError on an empty batch or misaligned lists."""
    if not results:
        raise ValueError("individual_loss: no results to score")
    weights = weights or LossWeights()
    terms = [example_terms(r, t, d_model, reference_tokens, max_response_tokens)
             for r, t in zip(results, _aligned_tasks(results, tasks))]
    n = len(terms)
    mean = LossTerms(
        reason=sum(t.reason for t in terms) / n,
        constrained=sum(t.constrained for t in terms) / n,
        response=sum(t.response for t in terms) / n,
        diff=sum(t.diff for t in terms) / n,
    )
    return mean.total(weights), mean


def fitness_value(
    results: Sequence[Any], tasks: Sequence[Any] | Mapping[str, Any], d_model: float,
    weights: LossWeights | None = None,
    reference_tokens: ReferenceTokens = DEFAULT_REFERENCE_TOKENS,
    max_response_tokens: int = DEFAULT_MAX_RESPONSE_TOKENS,
) -> float:
    """fitness = −L_total (higher is better); the single-objective selection key."""
    return -individual_loss(results, tasks, d_model, weights, reference_tokens, max_response_tokens)[0]


def multi_objective(results: Sequence[Any]) -> tuple[float, float]:
    """(accuracy ↑, mean chain tokens ↓) for NSGA-II. Accuracy is the share of results
    with full credit (score >= FULL_CREDIT). Raises ValueError on an empty batch."""
    if not results:
        raise ValueError("multi_objective: no results to score")
    n = len(results)
    accuracy = sum(_unit(getattr(r, "score", 0.0)) >= FULL_CREDIT for r in results) / n
    tokens = sum(max(0.0, min(_number(getattr(r, "chain_tokens", 0)), MAX_LENGTH)) for r in results) / n
    return accuracy, tokens


def generation_cost(results: Sequence[Any], cost_factor: float = 1.0) -> float:
    """Mean generated tokens per task, every vote of a k-vote strategy counted, times
    the model's relative cost per token: the "cost" objective that lets a run with
    several models trade accuracy against what an answer costs. 0 for no results."""
    if not results:
        return 0.0
    tokens = sum(max(0.0, _number(getattr(r, "completion_tokens", 0))) for r in results) / len(results)
    return tokens * cost_factor
