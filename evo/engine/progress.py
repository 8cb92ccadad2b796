"""Progress a person sees while a batch of requests is generated.

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
