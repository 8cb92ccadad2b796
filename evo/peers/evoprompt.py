"""EvoPrompt's genetic algorithm (Guo et al., "Connecting Large Language Models with
Evolutionary Algorithms Yields Powerful Prompt Optimizers", ICLR 2024), written here
from the paper's description (promptolution's implementation needs an API model):

1. a population of ``size`` prompts (the seed instructions, then fragment-library
   instructions), each scored on a fixed dev set;
2. each generation, ``size`` children: two parents drawn by roulette wheel (probability
   proportional to dev score), and the LLM asked, with the paper's GA template, to
   cross them over and mutate the result into a new prompt between <prompt> tags;
3. the children are scored on the dev set and the best ``size`` of parents and
   children survive;
4. it stops when the budget cannot pay for another child's dev score (or a whole
   generation of children were prompts scored before); the result is the
   population's best.

The LLM is the bundled model through our backend (greedy, its completions counted as
proposals, not rollouts); a child it fails to write (no <prompt> tag, an empty text)
is the first parent's copy, as the paper's implementation falls back to.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from evo.peers.budget import BudgetSpent
from evo.peers.render import strategy_of
from fitness.backends.base import Request, SamplingParams

GA_TEMPLATE = """Please follow the instruction step-by-step to generate a better prompt.
1. Cross over the following prompts and generate a new prompt:
Prompt 1: {a}
Prompt 2: {b}
2. Mutate the prompt generated in Step 1 and generate a final prompt bracketed with <prompt> and </prompt>."""

_PROMPT = re.compile(r"<prompt>(.*?)(?:</prompt>|$)", re.S)


def child_text(reply: str) -> str | None:
    """The final prompt of a GA reply: the last <prompt>...</prompt> span (a missing
    closing tag at the end is tolerated), or None."""
    found = [m.strip() for m in _PROMPT.findall(reply) if m.strip()]
    return " ".join(found[-1].split()) if found else None


def roulette(rng: random.Random, scored: Sequence[tuple[str, float]]) -> str:
    """A prompt drawn with probability proportional to its score (uniform when all 0)."""
    total = sum(max(0.0, s) for _, s in scored)
    if total <= 0:
        return rng.choice(scored)[0]
    pick = rng.random() * total
    for text, score in scored:
        pick -= max(0.0, score)
        if pick <= 0:
            return text
    return scored[-1][0]


PROPOSAL_TEMPERATURE = 0.7  # crossover + mutation replies are sampled, so a pair drawn twice can give a new child
BARREN_GENERATIONS = 3  # generations in a row with no new child before the search counts as converged


def run_evoprompt(backend, dev_tasks, initial: Sequence[str], budget: int, size: int = 6, seed: int = 0,
                  max_new_tokens: int = 160) -> dict[str, Any]:
    """Run the GA within ``budget`` rollouts (``backend`` is a CountingBackend); returns
    the best prompt, its dev score, generations run and every prompt scored. It stops
    when the budget cannot score another prompt, or after :data:`BARREN_GENERATIONS`
    generations in a row without a new child (a small model often writes no
    ``<prompt>`` span: the child is then its first parent)."""
    from fitness.evaluate import evaluate

    rng = random.Random(seed)
    cost = len(dev_tasks)
    seen: dict[str, float] = {}

    def score(text: str) -> float:
        if text not in seen:  # a prompt met again costs nothing: its dev score is known
            results = evaluate(strategy_of(text), dev_tasks, backend, seed=seed)
            seen[text] = sum(r.correct for r in results) / len(results)
        return seen[text]

    population: list[tuple[str, float]] = []
    for text in list(dict.fromkeys(" ".join(t.split()) for t in initial))[:size]:
        if backend.left < cost:
            break
        population.append((text, score(text)))
    generations = barren = 0
    try:
        while backend.left >= cost:
            pairs = [(roulette(rng, population), roulette(rng, population)) for _ in range(size)]
            replies = backend.propose([Request(({"role": "user", "content": GA_TEMPLATE.format(a=a, b=b)},),
                                               SamplingParams(PROPOSAL_TEMPERATURE, 1.0, max_new_tokens,
                                                              rng.randrange(2**31)))
                                       for a, b in pairs])
            children = [child_text(r.text) or a for r, (a, _) in zip(replies, pairs)]
            scored, fresh = [], 0
            for child in children:
                if child not in seen:
                    if backend.left < cost:
                        break
                    fresh += 1
                scored.append((child, score(child)))
            population = sorted(dict(population + scored).items(), key=lambda p: -p[1])[:size]
            generations += 1
            barren = 0 if fresh else barren + 1
            if barren >= BARREN_GENERATIONS:  # the LLM keeps writing nothing new: converged
                break
    except BudgetSpent:
        pass
    best, best_score = max(population, key=lambda p: p[1])
    return {"instruction": best, "search_score": best_score, "generations": generations, "prompts_scored": len(seen)}
