"""Genetic operators on strategies: pure functions of their inputs and an rng.

Contract of every function here:

- it takes an explicit ``rng: random.Random`` and never touches the global
  ``random`` module (vLLM reseeds the global generators; the engine checkpoints the
  state of its own rng so that a resumed run continues exactly);
- it never modifies its inputs: genes are frozen dataclasses, results are built with
  :func:`dataclasses.replace` and tuples, and a ``lora`` dict is copied, never shared;
- its output is deterministic in (inputs, rng state) and valid:
  ``Strategy.decode(out.encode())`` accepts it;
- outputs keep the limits below: at most :data:`MAX_EXEMPLARS` exemplars and
  :data:`MAX_HINTS` step hints, ``max_steps`` in :data:`STEPS_RANGE`, and
  ``votes == 1 or temperature > 0`` (inputs already beyond a limit are not
  truncated by mutation, only never pushed further).

Names carry roles as in DEAP's ``tools``: ``mut_*`` change one gene (and return a
different gene whenever any change is possible), ``cx_*`` cross two genes and return
two children. The LLM-rewrite mutation is split into its pure halves,
:func:`rewrite_messages` and :func:`apply_rewrite`; the engine sends the messages
through the backend in one batch.
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields, replace
from typing import Any, TypeVar

from genomes.chat_format import MARKERS
from genomes.exemplar_choice import EXEMPLAR_CHOICES, FIXED, choice_matters, same_kind
from genomes.fragments import (
    ANSWER_FORMATS,
    APPROACHES,
    CAUTIONS,
    EXEMPLARS,
    ROLES,
    SLOT_FRAGMENTS,
    STEP_HINTS,
)
from genomes.lora import gene_of_slot, mut_lora
from genomes.strategy import ChainGene, DecodingGene, Exemplar, PromptGene, Strategy

__all__ = [
    "DEFAULT_GENE_WEIGHTS",
    "GENE_WEIGHTS",
    "MAX_EXEMPLARS",
    "MAX_HINTS",
    "MAX_REWRITE_CHARS",
    "REWRITABLE_SLOTS",
    "STEPS_RANGE",
    "TOKEN_GRID",
    "VOTES",
    "apply_rewrite",
    "cx_chain",
    "cx_decoding",
    "cx_prompt",
    "cx_strategy",
    "mut_chain",
    "mut_decoding",
    "mut_prompt",
    "mut_strategy",
    "pair_up_exemplars",
    "random_strategy",
    "rewrite_messages",
    "sanitise_rewrite",
]

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


# ---- prompt gene -----------------------------------------------------------------
def mut_prompt(gene: PromptGene, rng: random.Random, exemplar_pool: Sequence[Exemplar] = EXEMPLARS) -> PromptGene:
    """One change: a slot gets another library fragment, or an exemplar from
    ``exemplar_pool`` is added (at most MAX_EXEMPLARS, no duplicates), dropped,
    swapped for another, or the exemplars are reordered, or ``exemplar_choice`` takes
    another value (only with two exemplars or more: with fewer it changes nothing
    the model sees), or the exemplars are paired up (:func:`pair_up_exemplars`).
    ``exemplar_pool`` must hold valid exemplars (the engine passes the library
    exemplars that fit the run's tasks)."""
    current = gene.exemplars
    unused = [e for e in _dedupe(tuple(exemplar_pool)) if e not in current]

    def new_slot() -> PromptGene:
        slot = rng.choice(REWRITABLE_SLOTS)
        options = [f for f in SLOT_FRAGMENTS[slot] if f != getattr(gene, slot)]
        return replace(gene, **{slot: rng.choice(options)})

    def add() -> PromptGene:
        at = rng.randint(0, len(current))
        return replace(gene, exemplars=current[:at] + (rng.choice(unused),) + current[at:])

    def drop() -> PromptGene:
        at = rng.randrange(len(current))
        return _tidy_choice(replace(gene, exemplars=current[:at] + current[at + 1:]))

    def swap() -> PromptGene:
        at = rng.randrange(len(current))
        return replace(gene, exemplars=current[:at] + (rng.choice(unused),) + current[at + 1:])

    def reorder() -> PromptGene:
        order = list(current)
        rng.shuffle(order)
        if tuple(order) == current:  # a shuffle of few items often is the identity
            order.reverse()
        return replace(gene, exemplars=tuple(order))

    def choice() -> PromptGene:
        return replace(gene, exemplar_choice=rng.choice([c for c in EXEMPLAR_CHOICES if c != gene.exemplar_choice]))

    def pair_up() -> PromptGene:
        return pair_up_exemplars(gene, unused, rng)

    return _mutate_until_changed(gene, rng, [
        (True, new_slot),
        (len(current) < MAX_EXEMPLARS and bool(unused), add),
        (len(current) > 0, drop),
        (len(current) > 0 and bool(unused), swap),
        (len(current) > 1, reorder),
        (choice_matters(current), choice),
        (len(current) < MAX_EXEMPLARS and any(_kind_count(e, current) < 2 for e in unused), pair_up),
    ])


def pair_up_exemplars(gene: PromptGene, pool: Sequence[Exemplar], rng: random.Random) -> PromptGene:
    """The gene with two exemplars of every kind of task (:func:`same_kind`) in
    ``pool``, shown ``nearest_two``: each question then sees two worked examples of
    its own kind and nothing else. A compound step because that strategy is several
    single mutations away from any seed, each too small to survive selection on a
    12-task batch, while together they gave the largest gain measured on the search
    benchmark (hand-built from ``fewshot``: +5.9 points on seed 0's held-out tasks,
    +4.2 on seed 1's; one exemplar of the kind, or exemplars of other kinds, mostly
    hurt). Exemplars the gene holds stay first, in order; pool exemplars are taken in
    random order while their kind has fewer than two and there is room (MAX_EXEMPLARS),
    so with more than three kinds some stay unpaired. Pure: returns a new gene."""
    exemplars = list(gene.exemplars)
    candidates = [e for e in _dedupe(tuple(pool)) if e not in exemplars]
    rng.shuffle(candidates)
    for exemplar in candidates:
        if len(exemplars) >= MAX_EXEMPLARS:
            break
        if _kind_count(exemplar, exemplars) < 2:
            exemplars.append(exemplar)
    # with one exemplar in all the choice changes nothing: keep one hash per behaviour
    return _tidy_choice(replace(gene, exemplars=tuple(exemplars), exemplar_choice="nearest_two"))


def cx_prompt(a: PromptGene, b: PromptGene, rng: random.Random) -> tuple[PromptGene, PromptGene]:
    """Uniform crossover of the text slots (each child takes every slot from one
    parent, the other child from the other) and of ``exemplar_choice``; one-point
    crossover of the exemplar tuples, deduplicated and cut to MAX_EXEMPLARS."""
    kw1: dict[str, Any] = {}
    kw2: dict[str, Any] = {}
    for slot in (*PROMPT_SLOTS, "exemplar_choice"):
        x, y = getattr(a, slot), getattr(b, slot)
        if rng.random() < 0.5:
            x, y = y, x
        kw1[slot], kw2[slot] = x, y
    kw1["exemplars"], kw2["exemplars"] = _one_point(a.exemplars, b.exemplars, rng, MAX_EXEMPLARS, dedupe=True)
    return _tidy_choice(replace(a, **kw1)), _tidy_choice(replace(b, **kw2))


# ---- chain gene ------------------------------------------------------------------
def mut_chain(gene: ChainGene, rng: random.Random) -> ChainGene:
    """One change: insert (at most MAX_HINTS), delete, replace or swap step hints,
    move ``max_steps`` by 1 or 2 within STEPS_RANGE, or toggle ``self_check``.
    ``prefill`` is never changed: it is how the format is entered, not a strategy
    choice worth searching."""
    hints = gene.step_hints
    lo, hi = STEPS_RANGE

    def insert() -> ChainGene:
        at = rng.randint(0, len(hints))
        return replace(gene, step_hints=hints[:at] + (rng.choice(STEP_HINTS),) + hints[at:])

    def delete() -> ChainGene:
        at = rng.randrange(len(hints))
        return replace(gene, step_hints=hints[:at] + hints[at + 1:])

    def replace_hint() -> ChainGene:
        at = rng.randrange(len(hints))
        new = rng.choice([h for h in STEP_HINTS if h != hints[at]])
        return replace(gene, step_hints=hints[:at] + (new,) + hints[at + 1:])

    def swap() -> ChainGene:
        i, j = sorted(rng.sample(range(len(hints)), 2))
        return replace(gene, step_hints=hints[:i] + (hints[j],) + hints[i + 1:j] + (hints[i],) + hints[j + 1:])

    def steps() -> ChainGene:
        return replace(gene, max_steps=int(_clip(gene.max_steps + rng.choice((-2, -1, 1, 2)), lo, hi)))

    def self_check() -> ChainGene:
        return replace(gene, self_check=not gene.self_check)

    return _mutate_until_changed(gene, rng, [
        (len(hints) < MAX_HINTS, insert),
        (len(hints) > 0, delete),
        (len(hints) > 0, replace_hint),
        (len(hints) > 1, swap),
        (True, steps),
        (True, self_check),
    ])


def cx_chain(a: ChainGene, b: ChainGene, rng: random.Random) -> tuple[ChainGene, ChainGene]:
    """One-point crossover of the step hints (cut to MAX_HINTS; repeated hints are
    kept, "Apply the next operation." twice can be the point); ``max_steps`` and
    ``self_check`` are each swapped with probability 0.5; each child keeps its own
    parent's ``prefill``."""
    h1, h2 = _one_point(a.step_hints, b.step_hints, rng, MAX_HINTS, dedupe=False)
    kw1: dict[str, Any] = {"step_hints": h1}
    kw2: dict[str, Any] = {"step_hints": h2}
    for name in ("max_steps", "self_check"):
        x, y = getattr(a, name), getattr(b, name)
        if rng.random() < 0.5:
            x, y = y, x
        kw1[name], kw2[name] = x, y
    return replace(a, **kw1), replace(b, **kw2)


# ---- decoding gene ---------------------------------------------------------------
def mut_decoding(gene: DecodingGene, rng: random.Random, models: Sequence[str] = ("default",)) -> DecodingGene:
    """One change: temperature (Gaussian step clipped to TEMPERATURE_RANGE, or a
    jump to 0 = greedy), top_p (Gaussian step in TOP_P_RANGE), max_new_tokens (a
    neighbour on TOKEN_GRID), votes (another of VOTES) or the model (another of
    ``models``). Votes and temperature are repaired together: votes > 1 raises the
    temperature to at least MIN_VOTING_TEMPERATURE, greedy decoding sets votes to 1."""
    models = tuple(models)
    if not models:
        raise ValueError("mut_decoding: models must not be empty")

    def temperature() -> DecodingGene:
        t = gene.temperature
        if t > 0 and rng.random() < GREEDY_SNAP:
            new = 0.0
        else:
            step = rng.gauss(0.0, TEMPERATURE_SIGMA)
            # From greedy only an upward step is a change; elsewhere reflect at the bounds.
            if t <= 0 or not TEMPERATURE_RANGE[0] <= t + step <= TEMPERATURE_RANGE[1]:
                step = abs(step) if t <= 0 else -step
            new = round(_clip(t + step, *TEMPERATURE_RANGE), 2)  # 2 decimals: stable JSON and hashes
        return replace(gene, temperature=new)

    def top_p() -> DecodingGene:
        step = rng.gauss(0.0, TOP_P_SIGMA)
        if not TOP_P_RANGE[0] <= gene.top_p + step <= TOP_P_RANGE[1]:
            step = -step
        return replace(gene, top_p=round(_clip(gene.top_p + step, *TOP_P_RANGE), 2))

    def max_new_tokens() -> DecodingGene:
        here = min(range(len(TOKEN_GRID)), key=lambda i: abs(TOKEN_GRID[i] - gene.max_new_tokens))
        there = int(_clip(here + rng.choice((-2, -1, 1, 2)), 0, len(TOKEN_GRID) - 1))
        return replace(gene, max_new_tokens=TOKEN_GRID[there])

    def votes() -> DecodingGene:
        v = rng.choice([v for v in VOTES if v != gene.votes])
        t = max(gene.temperature, MIN_VOTING_TEMPERATURE) if v > 1 else gene.temperature
        return replace(gene, votes=v, temperature=t)

    def model() -> DecodingGene:
        return replace(gene, model=rng.choice([m for m in models if m != gene.model]))

    out = _mutate_until_changed(gene, rng, [
        (True, temperature),
        (True, top_p),
        (True, max_new_tokens),
        (True, votes),
        (any(m != gene.model for m in models), model),
    ])
    return _repair_votes(out)


def cx_decoding(a: DecodingGene, b: DecodingGene, rng: random.Random) -> tuple[DecodingGene, DecodingGene]:
    """Uniform crossover per field, then votes set to 1 where the child is greedy.
    A greedy child's temperature came from a greedy parent, whose votes is 1, so
    with valid parents every child field still comes from one of them."""
    kw1: dict[str, Any] = {}
    kw2: dict[str, Any] = {}
    for f in fields(DecodingGene):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if rng.random() < 0.5:
            x, y = y, x
        kw1[f.name], kw2[f.name] = x, y
    return _repair_votes(replace(a, **kw1)), _repair_votes(replace(b, **kw2))


# ---- whole strategies ------------------------------------------------------------
def mut_strategy(
    s: Strategy,
    rng: random.Random,
    models: Sequence[str] = ("default",),
    gene_weights: Mapping[str, float] | None = None,
    exemplar_pool: Sequence[Exemplar] = EXEMPLARS,
    lora_options: Mapping[str, Any] | None = None,
) -> tuple[Strategy, str]:
    """Mutate ONE gene, picked with ``gene_weights`` (keys prompt / chain / decoding /
    lora; default DEFAULT_GENE_WEIGHTS, where lora is off so default runs draw from the
    rng exactly as before). Returns the new strategy, named after its content hash,
    and the operator used ("mut_prompt", "mut_chain", "mut_decoding" or "mut_lora").
    A strategy whose lora slot is a fixed adapter dict never mutates it (a copy is kept)."""
    weights = dict(DEFAULT_GENE_WEIGHTS if gene_weights is None else gene_weights)
    unknown = sorted(set(weights) - set(GENES))
    if unknown:
        raise ValueError(f"mut_strategy: unknown gene {unknown[0]!r} in gene_weights (known: {', '.join(GENES)})")
    lora = gene_of_slot(s.lora)  # None for a fixed-adapter dict: not evolvable
    genes = [g for g in GENES if weights.get(g, 0) > 0 and (g != "lora" or lora is not None)]
    if not genes:
        raise ValueError("mut_strategy: gene_weights gives no gene a positive weight")
    gene = rng.choices(genes, weights=[weights[g] for g in genes])[0]
    if gene == "prompt":
        out = replace(s, prompt=mut_prompt(s.prompt, rng, exemplar_pool))
    elif gene == "chain":
        out = replace(s, chain=mut_chain(s.chain, rng))
    elif gene == "decoding":
        out = replace(s, decoding=mut_decoding(s.decoding, rng, models))
    else:
        new_lora, _ = mut_lora(lora, rng, **dict(lora_options or {}))
        return _named(replace(s, lora=new_lora)), "mut_lora"
    return _named(replace(out, lora=copy.deepcopy(s.lora))), f"mut_{gene}"


def cx_strategy(a: Strategy, b: Strategy, rng: random.Random) -> tuple[Strategy, Strategy]:
    """Cross every gene (cx_prompt, cx_chain, cx_decoding); the children take the
    parents' lora genes, one each, in random order (copies)."""
    p1, p2 = cx_prompt(a.prompt, b.prompt, rng)
    c1, c2 = cx_chain(a.chain, b.chain, rng)
    d1, d2 = cx_decoding(a.decoding, b.decoding, rng)
    l1, l2 = (a.lora, b.lora) if rng.random() < 0.5 else (b.lora, a.lora)
    return (
        _named(replace(a, prompt=p1, chain=c1, decoding=d1, lora=copy.deepcopy(l1))),
        _named(replace(b, prompt=p2, chain=c2, decoding=d2, lora=copy.deepcopy(l2))),
    )


def random_strategy(rng: random.Random, models: Sequence[str] = ("default",),
                    exemplar_pool: Sequence[Exemplar] = EXEMPLARS) -> Strategy:
    """A random valid strategy from the fragment library, with up to two exemplars of
    ``exemplar_pool`` (random-search baselines, diversifying an initial population).
    Deterministic in the rng state."""
    models = tuple(models)
    if not models:
        raise ValueError("random_strategy: models must not be empty")
    pool = _dedupe(tuple(exemplar_pool))
    exemplars = tuple(rng.sample(pool, rng.randint(0, min(2, len(pool)))))
    prompt = PromptGene(
        role=rng.choice(ROLES),
        approach=rng.choice(APPROACHES),
        cautions=rng.choice(CAUTIONS),
        answer_format=rng.choice(ANSWER_FORMATS),
        exemplars=exemplars,
        # Drawn only where it can matter, so equal-behaving genomes keep one hash.
        exemplar_choice=rng.choice(EXEMPLAR_CHOICES) if choice_matters(exemplars) else FIXED,
    )
    # Hints keep library order, which runs from "restate" to "check": a random order
    # would mostly give chains that state the result before working it out.
    picked = sorted(rng.sample(range(len(STEP_HINTS)), rng.randint(0, 4)))
    hints = tuple(STEP_HINTS[i] for i in picked)
    chain = ChainGene(
        step_hints=hints,
        max_steps=rng.randint(max(STEPS_RANGE[0], len(hints)), 8),
        self_check=rng.random() < 0.3,
        prefill=True,
    )
    if rng.random() < 0.5:
        temperature, votes = 0.0, 1
    else:
        temperature, votes = round(rng.uniform(MIN_VOTING_TEMPERATURE, 1.0), 2), rng.choice(VOTES)
    decoding = DecodingGene(
        model=rng.choice(models),
        temperature=temperature,
        top_p=rng.choice((0.8, 0.9, 0.95, 1.0)),
        max_new_tokens=rng.choice(TOKEN_GRID),
        votes=votes,
    )
    return _named(Strategy(prompt=prompt, chain=chain, decoding=decoding))


# ---- LLM rewrite (pure halves) ---------------------------------------------------
_SLOT_PURPOSE = {
    "role": "who the assistant is",
    "approach": "how to approach the problem",
    "cautions": "a warning against a common mistake",
    "answer_format": "how the final answer must be written",
}
_LABEL = re.compile(r"^(?:(?:new|rewritten|improved|better)\s+)?(?:instruction|version|text|answer|sentence)\s*:\s*", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_QUOTES = "\"'`\u201c\u201d\u2018\u2019 \t"
# "<cot" without its ">" and the like: a model that starts writing a format marker
# is answering a question, not rewriting an instruction.
_MARKER_STEMS = tuple(m[:-1].lower() for m in MARKERS)


def rewrite_messages(text: str, slot: str) -> tuple[dict[str, str], ...]:
    """Chat messages asking the model to rewrite the instruction ``text`` that sits
    in prompt slot ``slot`` (one of REWRITABLE_SLOTS), or to write one if it is empty."""
    if slot not in _SLOT_PURPOSE:
        raise ValueError(f"rewrite_messages: unknown slot {slot!r} (rewritable: {', '.join(REWRITABLE_SLOTS)})")
    system = (
        "You improve instructions for a small language model that solves reasoning problems. "
        "Reply with the new instruction only: one or two short sentences, no quotes, no preamble."
    )
    purpose = _SLOT_PURPOSE[slot]
    if text.strip():
        user = f"Rewrite this instruction ({purpose}) so that it is clearer and more helpful. Keep it short.\n\nInstruction: {text.strip()}"
    else:
        user = f"Write one short instruction ({purpose})."
    return ({"role": "system", "content": system}, {"role": "user", "content": user})


def sanitise_rewrite(raw: object) -> str | None:
    """The instruction in a model's rewrite reply, or None to refuse it.

    Takes the first non-empty line (without a leading "Instruction:" label or
    surrounding quotes), keeps whole sentences up to MAX_REWRITE_CHARS (cutting at a
    word boundary if the first sentence alone is longer). Refuses non-text, empty or
    letterless output, and any output containing a format marker.
    """
    if not isinstance(raw, str):
        return None
    lowered = raw.lower()
    if any(m.lower() in lowered for m in MARKERS) or any(stem in lowered for stem in _MARKER_STEMS):
        return None
    lines = [line.strip() for line in raw.splitlines() if line.strip()]
    # "Here is a clearer version:" on a line of its own introduces the instruction.
    while len(lines) > 1 and lines[0].endswith(":"):
        lines.pop(0)
    text = _LABEL.sub("", lines[0].strip(_QUOTES)).strip(_QUOTES) if lines else ""
    text = " ".join(text.split())
    if len(text) > MAX_REWRITE_CHARS:
        kept = ""
        for sentence in _SENTENCE_END.split(text):
            longer = f"{kept} {sentence}".strip()
            if len(longer) > MAX_REWRITE_CHARS:
                break
            kept = longer
        text = kept or text[:MAX_REWRITE_CHARS].rsplit(" ", 1)[0].rstrip(",;: ")
    if not any(c.isalpha() for c in text):
        return None
    return text


def apply_rewrite(gene: PromptGene, slot: str, rewritten: str) -> PromptGene:
    """``gene`` with the sanitised rewrite in ``slot``; ``gene`` itself when the
    rewrite is refused (see :func:`sanitise_rewrite`)."""
    if slot not in _SLOT_PURPOSE:
        raise ValueError(f"apply_rewrite: unknown slot {slot!r} (rewritable: {', '.join(REWRITABLE_SLOTS)})")
    text = sanitise_rewrite(rewritten)
    return gene if text is None else replace(gene, **{slot: text})
