"""Whole-strategy operators: mutate one gene picked by weight, crossover gene by
gene, and random strategies for the random-search baseline."""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from genomes.exemplar_choice import EXEMPLAR_CHOICES, FIXED, choice_matters
from genomes.fragments import (
    ANSWER_FORMATS,
    APPROACHES,
    CAUTIONS,
    EXEMPLARS,
    ROLES,
    STEP_HINTS,
)
from genomes.lora import gene_of_slot, mut_lora
from genomes.operators.chain import cx_chain, mut_chain
from genomes.operators.decoding import cx_decoding, mut_decoding
from genomes.operators.limits import (
    DEFAULT_GENE_WEIGHTS,
    GENES,
    MIN_VOTING_TEMPERATURE,
    STEPS_RANGE,
    TOKEN_GRID,
    VOTES,
    _dedupe,
    _named,
)
from genomes.operators.prompt import cx_prompt, mut_prompt, pair_up_exemplars
from genomes.strategy import ChainGene, DecodingGene, Exemplar, PromptGene, Strategy


# ---- whole strategies ------------------------------------------------------------
def mut_strategy(
    s: Strategy,
    rng: random.Random,
    models: Sequence[str] = ("default",),
    gene_weights: Mapping[str, float] | None = None,
    exemplar_pool: Sequence[Exemplar] = EXEMPLARS,
    lora_options: Mapping[str, Any] | None = None,
    constrain_modes: Sequence[str] = ("off",),
) -> tuple[Strategy, str]:
    """Mutate ONE gene, picked with ``gene_weights`` (keys prompt / chain / decoding /
    lora; default DEFAULT_GENE_WEIGHTS, where lora is off so default runs draw from the
    rng exactly as before). Returns the new strategy, named after its content hash,
    and the operator used ("mut_prompt", "mut_chain", "mut_decoding" or "mut_lora").
    A strategy whose lora slot is a fixed adapter dict never mutates it (a copy is kept).
    ``constrain_modes``: the constrained-decoding modes mut_decoding may switch to."""
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
        out = replace(s, decoding=mut_decoding(s.decoding, rng, models, constrain_modes))
    else:
        new_lora, _ = mut_lora(lora, rng, **dict(lora_options or {}))
        new_lora = replace(new_lora, base=lora_base_for(s.decoding.model))  # made for this strategy's model
        return _named(replace(s, lora=new_lora)), "mut_lora"
    return _named(fit_lora_to_model(replace(out, lora=copy.deepcopy(s.lora)))), f"mut_{gene}"


def lora_base_for(model: str) -> str:
    """The ``base`` a LoRA gene made for ``decoding.model == model`` records: "" for
    the primary model ("default"), so single-model genes keep their hashes."""
    return "" if model == "default" else model


def fit_lora_to_model(s: Strategy) -> Strategy:
    """``s`` without its LoRA gene or adapter when that was made for another model
    than ``s.decoding.model``: an adapter's weights have the shapes of its base model
    and mean nothing on another, so switching model drops it (the prompt and chain
    genes stay). A fixed adapter dict names its base in ``base_model`` ("" = primary)."""
    lora = s.lora
    if lora is None:
        return s
    base = str(lora.get("base_model", "")) if isinstance(lora, dict) else lora.base
    return s if base == lora_base_for(s.decoding.model) else replace(s, lora=None)


def cx_strategy(a: Strategy, b: Strategy, rng: random.Random) -> tuple[Strategy, Strategy]:
    """Cross every gene (cx_prompt, cx_chain, cx_decoding); the children take the
    parents' lora genes, one each, in random order (copies), and drop one that was
    made for another model than the child's (:func:`fit_lora_to_model`)."""
    p1, p2 = cx_prompt(a.prompt, b.prompt, rng)
    c1, c2 = cx_chain(a.chain, b.chain, rng)
    d1, d2 = cx_decoding(a.decoding, b.decoding, rng)
    l1, l2 = (a.lora, b.lora) if rng.random() < 0.5 else (b.lora, a.lora)
    return (
        _named(fit_lora_to_model(replace(a, prompt=p1, chain=c1, decoding=d1, lora=copy.deepcopy(l1)))),
        _named(fit_lora_to_model(replace(b, prompt=p2, chain=c2, decoding=d2, lora=copy.deepcopy(l2)))),
    )


def random_strategy(rng: random.Random, models: Sequence[str] = ("default",),
                    exemplar_pool: Sequence[Exemplar] = EXEMPLARS,
                    constrain_modes: Sequence[str] = ("off",)) -> Strategy:
    """A random valid strategy from the fragment library, with up to two exemplars of
    ``exemplar_pool`` (random-search baselines, diversifying an initial population)
    and one of ``constrain_modes`` (drawn only when there are several).
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
        constrain=rng.choice(tuple(constrain_modes)) if len(constrain_modes) > 1 else constrain_modes[0],
    )
    return _named(Strategy(prompt=prompt, chain=chain, decoding=decoding))


def paired_up(strategy: Strategy, pool: Sequence[Exemplar], rng: random.Random) -> Strategy:
    """``strategy`` with none of its own exemplars but two of ``pool``'s of every kind
    of task, shown ``nearest_two`` (:func:`pair_up_exemplars`), named ``<name>+pairs``:
    the seed a run starts from on families its other seeds cannot answer."""
    prompt = pair_up_exemplars(replace(strategy.prompt, exemplars=()), pool, rng)
    return replace(strategy, name=f"{strategy.name}+pairs", prompt=prompt)
