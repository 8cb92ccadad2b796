"""A peer's result as one of our strategies.

GEPA and EvoPrompt optimise one instruction text. Rendered here on top of the
``direct`` seed: the instruction replaces its role and approach, and the format rule
and answer format stay (every method is parsed and verified the same way, and a
method that rewrote the format rule away would score 0 for a reason unrelated to
search). Decoding is the seed's: greedy, one vote.
"""

from __future__ import annotations

import dataclasses
import functools

from genomes.strategy import Strategy

BASE_SEED = "direct"


@functools.cache
def base_strategy() -> Strategy:
    """The ``direct`` seed, read once (a DSPy run renders a prompt with it per call)."""
    return Strategy.load(BASE_SEED)


def base_instruction() -> str:
    """The instruction a peer starts from: the ``direct`` seed's role and approach."""
    prompt = base_strategy().prompt
    return " ".join(part for part in (prompt.role, prompt.approach) if part).strip()


def strategy_of(instruction: str, name: str = "peer") -> Strategy:
    """Our strategy for an instruction text (see the module doc)."""
    base = base_strategy()
    prompt = dataclasses.replace(base.prompt, role="", approach=" ".join(instruction.split()))
    return dataclasses.replace(base, name=name, prompt=prompt)
