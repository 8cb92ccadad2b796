"""Small statistics for benchmarks and evidence scripts (no numpy needed)."""

from __future__ import annotations

import random
from collections.abc import Sequence

BOOTSTRAP_SAMPLES = 2000


def bootstrap_ci(values: Sequence[float], rng: random.Random, samples: int = BOOTSTRAP_SAMPLES) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the mean of ``values`` (for a paired
    difference, pass the per-item differences)."""
    n = len(values)
    if n == 0:
        return 0.0, 0.0
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(samples))
    return means[int(0.025 * samples)], means[int(0.975 * samples) - 1]
