"""The materialisation contract: the pure-data recipe (:func:`tensor_spec`) that a
backend turns into LoRA weights, bit-identically in every process.

Materialisation contract (version MATERIALISE_VERSION), per ModuleRecipe
``(layer l, target t)``; ``in`` and ``out`` are the ``in_features`` and
``out_features`` of the base model's ``nn.Linear`` named ``t`` in decoder layer
``l`` (for grouped-query attention k_proj / v_proj have the smaller ``out``).
Shapes follow PEFT: ``lora_A.weight`` is (rank, in), ``lora_B.weight`` is
(out, rank); the update is ``W + scaling * B @ A`` with scaling = alpha / rank.
Every tensor is made on the CPU in float32 and cast to the model's dtype and
device only at the end.

1. Initial weights.
   seed_chain:
     ``g = torch.Generator(device="cpu").manual_seed(init_seed_a)`` where
     ``init_seed_a = derive("init", gene.init_seed, l, t, "A")``;
     ``A = torch.randn((rank, in), generator=g, dtype=torch.float32) / math.sqrt(in)``;
     ``B = torch.zeros((out, rank), dtype=torch.float32)``.
     (B = 0: with an empty chain the adapter changes nothing.)
   trained:
     A and B are the stored adapter's ``lora_A`` / ``lora_B`` weights for
     (l, t), read as float32, from the adapter whose content hash is
     ``trained_hash`` in the run's adapter store. Its r, lora_alpha, target
     modules and layers must equal the gene's; refuse a mismatch.
2. For each mutation ``(s, sigma)`` of the chain, in chain order, with
   ``seed_A = derive("noise", s, l, t, "A")`` and ``seed_B = derive("noise", s, l, t, "B")``:
     ``A += sigma * torch.randn((rank, in), generator=torch.Generator(device="cpu").manual_seed(seed_A), dtype=torch.float32)``
     ``B += sigma * torch.randn((out, rank), generator=torch.Generator(device="cpu").manual_seed(seed_B), dtype=torch.float32)``
   (a fresh generator per tensor and mutation; sigma is the Python float).
3. PEFT config: ``LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets),
   layers_to_transform=list(layers_to_transform) or None, lora_dropout=0.0,
   bias="none")``; write ``adapter_model.safetensors`` and cache the directory
   under ``weights_hash``.

Layer indices are those of the model's decoder layer list (``model.layers[l]``);
``()`` in the gene means every l in ``range(n_layers)``. Seeds depend on
(seed, layer, target, "A"|"B") only, not on rank or shapes, and the order of
``modules`` does not matter.
"""

from __future__ import annotations

from dataclasses import dataclass

from genomes.errors import InputError
from genomes.lora.codec import derive
from genomes.lora.gene import LoraGene


# ---- materialisation contract -------------------------------------------------------
@dataclass(frozen=True)
class ModuleRecipe:
    """The seeds for one adapted module: ``layer``, ``target`` (a KNOWN_TARGETS name),
    ``init_seed_a`` (the torch seed of A's initial values; None for a trained source,
    whose A and B come from the store) and ``noise``: one ``(seed_A, seed_B, sigma)``
    per mutation, in chain order."""

    layer: int
    target: str
    init_seed_a: int | None
    noise: tuple[tuple[int, int, float], ...]


@dataclass(frozen=True)
class TensorSpec:
    """Everything a materialiser needs besides the base model's module shapes."""

    source: str
    rank: int
    alpha: float
    scaling: float
    targets: tuple[str, ...]
    layers: tuple[int, ...]  # resolved: every adapted layer index
    layers_to_transform: tuple[int, ...] | None  # PEFT's value: None = all layers
    trained_hash: str
    weights_hash: str
    modules: tuple[ModuleRecipe, ...]


def tensor_spec(gene: LoraGene, n_layers: int | None = None, where: str = "lora") -> TensorSpec:
    """The recipe that turns an active gene into LoRA weights (pure data, no torch).

    ``n_layers`` is the base model's number of decoder layers; it is needed when
    ``gene.layers`` is ``()`` (all layers) and checks listed layers otherwise. An
    inactive gene raises ValueError; a listed layer the model lacks raises InputError.

    The weights it stands for follow the materialisation contract in the module
    docstring.
    """
    if not gene.is_active:
        raise ValueError("tensor_spec: the gene is switched off or has no weight source")
    if n_layers is not None and (isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1):
        raise ValueError(f"tensor_spec: n_layers must be a positive int, got {n_layers!r}")
    if gene.layers:
        if n_layers is not None and gene.layers[-1] >= n_layers:
            raise InputError(f"{where}.layers: layer {gene.layers[-1]} does not exist in a model with {n_layers} layers")
        layers = gene.layers
    elif n_layers is None:
        raise ValueError("tensor_spec: a gene for all layers needs n_layers")
    else:
        layers = tuple(range(n_layers))
    modules = []
    for layer in layers:
        for target in gene.targets:
            init = derive("init", gene.init_seed, layer, target, "A") if gene.source == "seed_chain" else None
            noise = tuple((derive("noise", s, layer, target, "A"), derive("noise", s, layer, target, "B"), sigma)
                          for s, sigma in gene.mutations)
            modules.append(ModuleRecipe(layer, target, init, noise))
    return TensorSpec(
        source=gene.source,
        rank=gene.rank,
        alpha=gene.alpha,
        scaling=gene.scaling,
        targets=gene.targets,
        layers=layers,
        layers_to_transform=gene.layers or None,
        trained_hash=gene.trained_hash,
        weights_hash=gene.weights_hash(),
        modules=tuple(modules),
    )

