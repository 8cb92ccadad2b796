"""Next-token choice for one sampled row of a batch (the decoder's rows, :mod:`fitness.backends.hf_decode`)."""

from __future__ import annotations

from fitness.backends.base import Request


class RowSampler:
    """Next-token choice for one sampled row: temperature + top-p from the row's own
    generator, so a seeded sample never depends on the rest of the batch. Greedy
    rows (``greedy``) are picked for the whole batch at once, in ``ContinuousDecoder._step``."""

    def __init__(self, request: Request, torch) -> None:
        self.torch = torch
        s = request.sampling
        self.greedy = s.greedy
        self.temperature = s.temperature
        self.top_p = s.top_p
        self.generator = None if self.greedy else torch.Generator().manual_seed(s.seed)

    def pick(self, logits) -> int:
        torch = self.torch
        probs = torch.softmax(logits / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            # keep the smallest prefix whose mass reaches top_p (always at least one token)
            drop = sorted_probs.cumsum(-1) - sorted_probs >= self.top_p
            sorted_probs[drop] = 0.0
            probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=self.generator))
