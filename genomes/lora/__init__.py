"""The LoRA gene: rank, alpha, target modules, layers, and where the weights come from.

Weights come from one of two sources:

- ``"seed_chain"``: Deep Neuroevolution's compact encoding (Such et al., 2017). The
  adapter is an initial seed plus a list of ``(seed, sigma)`` mutations; the weights
  are re-materialised deterministically from them (see :func:`tensor_spec` for the
  exact contract), so a genome is bytes, not megabytes;
- ``"trained"``: an adapter produced by distillation and kept in the run's adapter
  store under its content hash (``trained_hash``). A chain of ``(seed, sigma)``
  mutations may follow it: its noise is added on top of the trained weights.

Contract:

- :class:`LoraGene` is a frozen dataclass. ``encode()`` gives plain JSON data,
  ``LoraGene.decode()`` validates it and raises :class:`~genomes.errors.InputError`
  naming the offending field (``lora.rank: must be in [1, 256] (got 0)``); unknown
  keys are errors too. ``decode(encode(g)) == g`` for every valid gene.
- A switched-off gene keeps all its fields, so switching it back on restores the same
  adapter; ``content_hash()`` covers every field. ``weights_hash()`` covers only what
  the weights depend on (the key to cache a materialised adapter under).
- The JSON encoding stays under 1 KB whatever the adapter size (rank, model width,
  depth): the chain is packed into 7 characters per mutation (:func:`encode_chain`)
  and is capped at ``max_chain`` (at most :data:`MAX_CHAIN`) mutations, and at most
  :data:`MAX_LAYERS` layers are listed (an empty ``layers`` means every layer).
  At the cap, :func:`mut_lora_perturb` refuses to append and returns the gene
  unchanged: a chain cannot be folded into a shorter one without the weights.
- sigma has at most two significant decimal digits and lies in
  [:data:`SIGMA_MIN`, :data:`SIGMA_MAX`] (0.002, 0.005, 0.01, 0.0025 are fine;
  0.0123 is not): that is what lets a mutation pack into 42 bits, exactly.
- Operators take an explicit ``random.Random``, never touch the global ``random``
  module and never modify their inputs (genes are frozen; results are built with
  :func:`dataclasses.replace`); their output is deterministic in (inputs, rng state).

Pure Python: no torch, no numpy. The torch side (``fitness/backends/lora_weights.py``)
implements the materialisation contract of :func:`tensor_spec` with :func:`derive`.
"""


from __future__ import annotations

from genomes.lora.codec import (
    DEFAULT_SIGMAS,
    KNOWN_TARGETS,
    LAYER_CHOICES,
    MATERIALISE_VERSION,
    MAX_CHAIN,
    MAX_LAYER_INDEX,
    MAX_LAYERS,
    RANK_RANGE,
    RANKS,
    SEED_LIMIT,
    SIGMA_MAX,
    SIGMA_MIN,
    SOURCES,
    TARGET_SETS,
    decode_chain,
    derive,
    encode_chain,
    sigma_is_valid,
)
from genomes.lora.gene import LoraGene, decode_slot, encode_slot, gene_of_slot
from genomes.lora.operators import (
    cx_lora,
    layer_choices_for,
    mut_lora,
    mut_lora_perturb,
    mut_lora_reshape,
    mut_lora_switch,
    random_lora,
)
from genomes.lora.tensors import ModuleRecipe, TensorSpec, tensor_spec

__all__ = [
    "DEFAULT_SIGMAS",
    "KNOWN_TARGETS",
    "LAYER_CHOICES",
    "MATERIALISE_VERSION",
    "MAX_CHAIN",
    "MAX_LAYERS",
    "MAX_LAYER_INDEX",
    "RANKS",
    "SEED_LIMIT",
    "SIGMA_MAX",
    "SIGMA_MIN",
    "SOURCES",
    "TARGET_SETS",
    "LoraGene",
    "RANK_RANGE",
    "ModuleRecipe",
    "TensorSpec",
    "cx_lora",
    "decode_chain",
    "decode_slot",
    "derive",
    "encode_chain",
    "encode_slot",
    "gene_of_slot",
    "layer_choices_for",
    "mut_lora",
    "mut_lora_perturb",
    "mut_lora_reshape",
    "mut_lora_switch",
    "random_lora",
    "sigma_is_valid",
    "tensor_spec",
]
