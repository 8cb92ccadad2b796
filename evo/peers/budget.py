"""Equal budgets: every method gets the same number of fresh completions.

:class:`CountingBackend` wraps the shared backend for one method. Every request it
passes on is one completion (a k-vote strategy's task is k requests, as in our own
accounting); completions for the method's *proposals* (a reflection or a crossover
prompt) are counted apart, because they are not scored rollouts. A call that would go
past ``limit`` raises :class:`BudgetSpent` before anything is generated, so a method
can never overspend; the caller decides whether that ends the method.
"""

from __future__ import annotations

from collections.abc import Sequence

from fitness.backends.base import Completion, Request


class BudgetSpent(RuntimeError):
    """The next call would take the method past its rollout budget."""


class CountingBackend:
    """``backend`` for one method, counting what it generates (see the module doc)."""

    def __init__(self, backend, limit: int) -> None:
        self.backend, self.limit = backend, limit
        self.rollouts = 0  # scored completions (the budget)
        self.proposal_calls = 0  # completions that wrote a new candidate (not scored)
        self.tokens = 0

    @property
    def left(self) -> int:
        return max(0, self.limit - self.rollouts)

    def generate(self, requests: Sequence[Request], progress=None) -> list[Completion]:
        if self.rollouts + len(requests) > self.limit:
            raise BudgetSpent(f"{len(requests)} more rollouts would pass the budget of {self.limit} "
                              f"({self.rollouts} used)")
        out = self.backend.generate(requests, progress=progress)
        self.rollouts += len(requests)
        self.tokens += sum(c.completion_tokens for c in out)
        return out

    def propose(self, requests: Sequence[Request]) -> list[Completion]:
        """Completions that write candidates (reflection, crossover): not rollouts."""
        out = self.backend.generate(requests)
        self.proposal_calls += len(requests)
        self.tokens += sum(c.completion_tokens for c in out)
        return out

    def count_tokens(self, text: str) -> int:
        return self.backend.count_tokens(text)

    def materialise_lora(self, gene) -> str:
        return self.backend.materialise_lora(gene)
