"""Limits every operator keeps, the gene weights of a mutation, and helpers the
operators share (see :mod:`genomes.operators` for the contract)."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TypeVar

from genomes.exemplar_choice import FIXED, choice_matters, same_kind
from genomes.fragments import SLOT_FRAGMENTS
from genomes.strategy import DecodingGene, Exemplar, PromptGene, Strategy

MAX_EXEMPLARS = 6  # two per family for three families; under "fixed" each costs prompt tokens on every request
MAX_HINTS = 6
STEPS_RANGE = (1, 12)
TEMPERATURE_RANGE = (0.0, 1.5)
TOP_P_RANGE = (0.5, 1.0)
TOKEN_GRID = (48, 64, 96, 128, 160, 192, 256)
VOTES = (1, 3, 5)  # odd, so a two-way majority vote cannot tie
# Self-consistency only helps when the samples differ; near-greedy samples mostly agree.
MIN_VOTING_TEMPERATURE = 0.3
TEMPERATURE_SIGMA = 0.25
TOP_P_SIGMA = 0.08
GREEDY_SNAP = 0.15  # chance that a temperature step jumps straight to greedy decoding
# relative chance that a mutation picks each gene (the one home of these weights; a run
# config enables genes through population.operators, and lora only when it names mut_lora)
GENE_WEIGHTS: Mapping[str, float] = {"prompt": 0.5, "chain": 0.3, "decoding": 0.2, "lora": 0.4}
DEFAULT_GENE_WEIGHTS: Mapping[str, float] = {g: w for g, w in GENE_WEIGHTS.items() if g != "lora"}
GENES = ("prompt", "chain", "decoding", "lora")  # lora is opt-in: weight 0 unless named
REWRITABLE_SLOTS = tuple(SLOT_FRAGMENTS)  # role, approach, cautions, answer_format
PROMPT_SLOTS = ("role", "approach", "format_rule", "cautions", "answer_format")
MAX_REWRITE_CHARS = 200
_RETRIES = 8

G = TypeVar("G")
T = TypeVar("T")


# ---- helpers ---------------------------------------------------------------------
def _mutate_until_changed(gene: G, rng: random.Random, ops: Sequence[tuple[bool, Callable[[], G]]]) -> G:
    """Apply one randomly chosen applicable op; retry a few times if it changed nothing.

    Every op is built to change the gene, but a Gaussian step can round back to the
    old value or clip at a bound; retrying keeps "a mutation mutates" true.
    """
    applicable = [op for ok, op in ops if ok]
    if not applicable:
        return gene
    for _ in range(_RETRIES):
        out = rng.choice(applicable)()
        if out != gene:
            return out
    return gene


def _clip(x: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, x))


def _dedupe(items: Sequence[T]) -> tuple[T, ...]:
    out: list[T] = []
    for item in items:
        if item not in out:
            out.append(item)
    return tuple(out)


def _one_point(x: tuple[T, ...], y: tuple[T, ...], rng: random.Random, cap: int, dedupe: bool) -> tuple[tuple[T, ...], tuple[T, ...]]:
    """One-point crossover of sequences of different lengths (a cut point in each)."""
    i, j = rng.randint(0, len(x)), rng.randint(0, len(y))
    c1, c2 = x[:i] + y[j:], y[:j] + x[i:]
    if dedupe:
        c1, c2 = _dedupe(c1), _dedupe(c2)
    return tuple(c1[:cap]), tuple(c2[:cap])


def _repair_votes(d: DecodingGene) -> DecodingGene:
    # Greedy decoding gives k identical samples; the validator rejects votes > 1 there.
    if d.votes != 1 and not d.temperature > 0:
        return replace(d, votes=1)
    return d


def _tidy_choice(gene: PromptGene) -> PromptGene:
    # Where the choice changes nothing the model sees, resetting it keeps one
    # content hash (one evaluation) per behaviour.
    return gene if choice_matters(gene.exemplars) else replace(gene, exemplar_choice=FIXED)


def _kind_count(exemplar: Exemplar, exemplars: Sequence[Exemplar]) -> int:
    """How many of ``exemplars`` are of the kind of ``exemplar``."""
    return sum(same_kind(exemplar.question, e.question) for e in exemplars)


def _named(s: Strategy) -> Strategy:
    """The display name follows the content, so equal genomes get equal names."""
    return replace(s, name=f"s-{s.content_hash()[:8]}")
