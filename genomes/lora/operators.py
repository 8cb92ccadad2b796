"""Variation of LoRA genes: perturb (append a (seed, sigma)), reshape, switch,
crossover, and random genes; explicit ``random.Random``, inputs never modified."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import replace

from genomes.lora.codec import (
    DEFAULT_SIGMAS,
    KNOWN_TARGETS,
    LAYER_CHOICES,
    MAX_LAYER_INDEX,
    MAX_LAYERS,
    OP_WEIGHTS,
    RANK_RANGE,
    RANKS,
    SEED_LIMIT,
    SIGMA_MAX,
    SIGMA_MIN,
    TARGET_SETS,
    sigma_is_valid,
)
from genomes.lora.gene import LoraGene, _canonical_targets


def _new_seed(rng: random.Random, avoid: int | None = None) -> int:
    seed = rng.randrange(SEED_LIMIT)
    while seed == avoid:
        seed = rng.randrange(SEED_LIMIT)
    return seed


def _sigmas(sigmas: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(s) if isinstance(s, int) and not isinstance(s, bool) else s for s in sigmas)
    if not out or not all(sigma_is_valid(s) for s in out):
        raise ValueError(f"sigmas must be a non-empty list of floats with at most two significant digits "
                         f"in [{SIGMA_MIN:g}, {SIGMA_MAX:g}], got {tuple(sigmas)!r}")
    return out


def _shape_options(ranks: Sequence[int], target_sets: Sequence[Sequence[str]],
                   layer_choices: Sequence[Sequence[int]]) -> tuple[tuple[int, ...], tuple[tuple[str, ...], ...], tuple[tuple[int, ...], ...]]:
    """Validated, canonical (targets in KNOWN_TARGETS order, layers sorted) choices."""
    rs = tuple(ranks)
    if not rs or any(isinstance(r, bool) or not isinstance(r, int) or not RANK_RANGE[0] <= r <= RANK_RANGE[1] for r in rs):
        raise ValueError(f"ranks must be ints in [{RANK_RANGE[0]}, {RANK_RANGE[1]}], got {rs!r}")
    ts = []
    for targets in target_sets:
        if isinstance(targets, str) or not targets or any(t not in KNOWN_TARGETS for t in targets):
            raise ValueError(f"target_sets: {targets!r} is not a non-empty subset of {KNOWN_TARGETS}")
        ts.append(_canonical_targets(targets))
    if not ts:
        raise ValueError("target_sets must not be empty")
    ls = []
    for layers in layer_choices:
        canon = tuple(sorted(set(layers)))
        if len(canon) > MAX_LAYERS or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_LAYER_INDEX for v in canon):
            raise ValueError(f"layer_choices: {tuple(layers)!r} must list at most {MAX_LAYERS} ints in [0, {MAX_LAYER_INDEX}]")
        ls.append(canon)
    if not ls:
        raise ValueError("layer_choices must not be empty")
    return rs, tuple(ts), tuple(ls)


def layer_choices_for(n_layers: int) -> tuple[tuple[int, ...], ...]:
    """Layer subsets worth searching for a model with ``n_layers`` decoder layers:
    all layers, the first half, the second half and the last quarter (subsets
    longer than MAX_LAYERS or beyond MAX_LAYER_INDEX are left out)."""
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"layer_choices_for: n_layers must be a positive int, got {n_layers!r}")
    half, quarter = n_layers // 2, max(1, n_layers // 4)
    subsets = [tuple(range(half)), tuple(range(half, n_layers)), tuple(range(n_layers - quarter, n_layers))]
    out: list[tuple[int, ...]] = [()]
    for s in subsets:
        if s and len(s) <= MAX_LAYERS and s[-1] <= MAX_LAYER_INDEX and len(s) < n_layers and s not in out:
            out.append(s)
    return tuple(out)


def mut_lora_perturb(gene: LoraGene, rng: random.Random, sigmas: Sequence[float] = DEFAULT_SIGMAS) -> LoraGene:
    """Append one mutation ``(rng.randrange(2**32), rng.choice(sigmas))`` to the chain
    (on a trained source too: the noise goes on top of the trained weights).
    At the cap (``len(mutations) == max_chain``) the gene is returned unchanged and
    the rng is not used: a chain cannot be folded without the weights."""
    sigmas = _sigmas(sigmas)
    if gene.at_cap:
        return gene
    seed = rng.randrange(SEED_LIMIT)
    return replace(gene, mutations=gene.mutations + ((seed, rng.choice(sigmas)),))


def mut_lora_reshape(
    gene: LoraGene,
    rng: random.Random,
    ranks: Sequence[int] = RANKS,
    target_sets: Sequence[Sequence[str]] = TARGET_SETS,
    layer_choices: Sequence[Sequence[int]] = LAYER_CHOICES,
) -> LoraGene:
    """Change one of rank, targets or layers (to another of the given choices) and
    re-initialise: a new init_seed, an empty chain, source "seed_chain" (a trained
    adapter is dropped). ``enabled`` and ``alpha`` are kept. With an empty chain
    B = 0, so a reshaped gene starts as the zero adapter. When no choice differs
    from the gene, it is returned unchanged."""
    ranks, target_sets, layer_choices = _shape_options(ranks, target_sets, layer_choices)
    options = [
        (name, alternatives)
        for name, alternatives in (
            ("rank", [r for r in dict.fromkeys(ranks) if r != gene.rank]),
            ("targets", [t for t in dict.fromkeys(target_sets) if t != gene.targets]),
            ("layers", [v for v in dict.fromkeys(layer_choices) if v != gene.layers]),
        )
        if alternatives
    ]
    if not options:
        return gene
    name, alternatives = rng.choice(options)
    return replace(
        gene,
        **{name: rng.choice(alternatives)},
        source="seed_chain",
        trained_hash="",
        init_seed=_new_seed(rng, avoid=gene.init_seed),
        mutations=(),
    )


def mut_lora_switch(gene: LoraGene, rng: random.Random, sigmas: Sequence[float] = DEFAULT_SIGMAS) -> LoraGene:
    """Toggle ``enabled``. Switching off keeps every field, so switching back on
    restores the same adapter. Switching on a gene without weights (a seed chain
    with no mutations) starts a fresh seed chain: a new init_seed and one first
    perturbation, so that the switch changes the model's behaviour."""
    sigmas = _sigmas(sigmas)
    if gene.enabled:
        return replace(gene, enabled=False)
    if gene.has_weights:
        return replace(gene, enabled=True)
    fresh = replace(gene, enabled=True, source="seed_chain", trained_hash="", init_seed=_new_seed(rng, avoid=gene.init_seed))
    return mut_lora_perturb(fresh, rng, sigmas)


def cx_lora(a: LoraGene, b: LoraGene, rng: random.Random) -> tuple[LoraGene, LoraGene]:
    """Each child takes one parent's whole gene: ``(a, b)`` or ``(b, a)`` with
    probability 0.5 each (one ``rng.random()`` draw). Genes are frozen, so the
    children may share the parents' objects safely."""
    return (a, b) if rng.random() < 0.5 else (b, a)


def mut_lora(
    gene: LoraGene,
    rng: random.Random,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    ranks: Sequence[int] = RANKS,
    target_sets: Sequence[Sequence[str]] = TARGET_SETS,
    layer_choices: Sequence[Sequence[int]] = LAYER_CHOICES,
    op_weights: Mapping[str, float] = OP_WEIGHTS,
) -> tuple[LoraGene, str]:
    """One change, and the name of the operator used. A switched-off gene is
    switched on ("mut_lora_switch"). An enabled gene is perturbed, reshaped or
    switched off, picked with ``op_weights`` (perturb 0.7, reshape 0.2, switch 0.1)
    among the operators that change it: perturb is left out at the cap, reshape when
    no shape choice differs from the gene."""
    sigmas = _sigmas(sigmas)
    shape = _shape_options(ranks, target_sets, layer_choices)
    if not gene.enabled:
        return mut_lora_switch(gene, rng, sigmas), "mut_lora_switch"
    can_reshape = (any(r != gene.rank for r in shape[0]) or any(t != gene.targets for t in shape[1])
                   or any(v != gene.layers for v in shape[2]))
    applicable = {"perturb": not gene.at_cap, "reshape": can_reshape, "switch": True}
    names = [n for n in ("perturb", "reshape", "switch") if applicable[n] and op_weights.get(n, 0) > 0]
    if names:
        name = rng.choices(names, weights=[op_weights[n] for n in names])[0]
    else:  # every applicable operator has weight 0: switching off always changes the gene
        name = "switch"
    if name == "perturb":
        out = mut_lora_perturb(gene, rng, sigmas)
    elif name == "reshape":
        out = mut_lora_reshape(gene, rng, *shape)
    else:
        out = mut_lora_switch(gene, rng, sigmas)
    return out, f"mut_lora_{name}"


def random_lora(
    rng: random.Random,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    ranks: Sequence[int] = RANKS,
    target_sets: Sequence[Sequence[str]] = TARGET_SETS,
    layer_choices: Sequence[Sequence[int]] = LAYER_CHOICES,
) -> LoraGene:
    """A random enabled seed-chain gene: random rank, targets and layers from the
    choices, a random init_seed and one perturbation. Deterministic in the rng state."""
    sigmas = _sigmas(sigmas)
    ranks, target_sets, layer_choices = _shape_options(ranks, target_sets, layer_choices)
    gene = LoraGene(
        enabled=True,
        rank=rng.choice(ranks),
        targets=rng.choice(target_sets),
        layers=rng.choice(layer_choices),
        init_seed=rng.randrange(SEED_LIMIT),
    )
    return mut_lora_perturb(gene, rng, sigmas)
