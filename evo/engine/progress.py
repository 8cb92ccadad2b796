"""Progress a person sees while a batch of requests is generated, and the line each
generation ends with (:func:`generation_line`).

On a terminal: a live tqdm bar. Elsewhere (CI, a log file, ``nohup``), where a bar
would print nothing until the end: a line when the batch starts, then one at least
every :data:`LINE_EVERY_S` seconds, with requests done / total, requests per second,
generated tokens per second (where the backend counts them) and the ETA, so a long
first generation is never silent.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

LINE_EVERY_S = 30.0


class RequestProgress:
    """``update(n, tokens=k)`` after each finished slice of requests; use as a context manager.
    ``interactive`` None: decide by whether ``stream`` is a terminal."""

    def __init__(self, label: str, total: int, enabled: bool = True, stream: TextIO | None = None,
                 interactive: bool | None = None, clock: Callable[[], float] = time.monotonic,
                 every_s: float = LINE_EVERY_S) -> None:
        self.label, self.total, self.stream, self.clock, self.every_s = label, total, stream or sys.stderr, clock, every_s
        self.enabled = enabled and total > 0
        interactive = self.stream.isatty() if interactive is None else interactive
        self.bar = None
        self.done = self.tokens = 0
        self.started = self.last_line = clock()
        if self.enabled and interactive:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=label, unit="req", file=self.stream, leave=False)
        elif self.enabled:
            self._line()

    def update(self, n: int, tokens: int = 0) -> None:
        self.done += n
        self.tokens += tokens
        if self.bar is not None:
            if self.tokens:
                self.bar.set_postfix_str(f"{self.tokens / max(self.clock() - self.started, 1e-9):.1f} tok/s", refresh=False)
            self.bar.update(n)
        elif self.enabled and self.clock() - self.last_line >= self.every_s:
            self._line()

    def _line(self) -> None:
        now = self.clock()
        self.last_line = now
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 and self.done else 0.0
        eta = f"ETA {_duration((self.total - self.done) / rate)}" if rate else "ETA -"
        tokens = f", {self.tokens / elapsed:.1f} tok/s" if self.tokens and elapsed > 0 else ""
        print(f"{self.label}: {self.done}/{self.total} requests, {rate:.2f} req/s{tokens}, {eta}", file=self.stream,
              flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> RequestProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def generation_line(record: dict, generations: int, train_accuracy: float, validation: float | None,
                    frontier_before: dict[str, int] | None) -> str:
    """The line ``evo run`` prints when generation ``record["generation"]`` ends. Where
    the curriculum moved a family's frontier in this generation, the line says so: the
    next generation is scored on another level, so its train accuracy is not comparable
    with this one's (a drop there is a harder batch, not a worse strategy)."""
    share = "  n/a" if validation is None else f"{validation:5.1%}"
    line = (f"gen {record['generation']:>3}/{generations}  rollouts {record['rollouts']:>5} (+{record['reused']} reused)  "
            f"best {record['best_fitness']:+.3f}  train acc {train_accuracy:5.1%}  val acc {share}  "
            f"tokens {record['tokens']:,}  {record['wall_s']:.0f}s")
    moves = [f"{family} {frontier_before[family]}->{level}" for family, level in sorted(record["frontier"].items())
             if frontier_before and family in frontier_before and frontier_before[family] != level]
    return line + (f"  (level moved: {', '.join(moves)}; next batch at the new level)" if moves else "")
