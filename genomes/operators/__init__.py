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

from genomes.operators.chain import cx_chain, mut_chain
from genomes.operators.decoding import cx_decoding, mut_decoding
from genomes.operators.limits import (
    DEFAULT_GENE_WEIGHTS,
    GENE_WEIGHTS,
    GENES,
    MAX_EXEMPLARS,
    MAX_HINTS,
    MAX_REWRITE_CHARS,
    MIN_VOTING_TEMPERATURE,
    PROMPT_SLOTS,
    REWRITABLE_SLOTS,
    STEPS_RANGE,
    TOKEN_GRID,
    VOTES,
)
from genomes.operators.prompt import cx_prompt, mut_prompt, pair_up_exemplars
from genomes.operators.rewrite import apply_rewrite, rewrite_messages, sanitise_rewrite
from genomes.operators.strategy import (
    cx_strategy,
    fit_lora_to_model,
    mut_strategy,
    paired_up,
    random_strategy,
)

__all__ = [
    "DEFAULT_GENE_WEIGHTS",
    "GENES",
    "GENE_WEIGHTS",
    "MAX_EXEMPLARS",
    "MAX_HINTS",
    "MAX_REWRITE_CHARS",
    "MIN_VOTING_TEMPERATURE",
    "PROMPT_SLOTS",
    "REWRITABLE_SLOTS",
    "STEPS_RANGE",
    "TOKEN_GRID",
    "VOTES",
    "apply_rewrite",
    "cx_chain",
    "cx_decoding",
    "cx_prompt",
    "cx_strategy",
    "fit_lora_to_model",
    "mut_chain",
    "mut_decoding",
    "mut_prompt",
    "mut_strategy",
    "pair_up_exemplars",
    "paired_up",
    "random_strategy",
    "rewrite_messages",
    "sanitise_rewrite",
]
