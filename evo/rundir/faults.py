"""Fault injection for the crash-safety tests.

``EVO_FAULT=point@generation`` makes the process SIGKILL itself when it reaches
``point`` in that generation: the real thing a crash test needs (no cleanup, no
exception handlers, no atexit), at a moment chosen exactly. Points:

- ``after-evaluate``: the generation's completions are journaled, no checkpoint yet;
- ``checkpoint-write``: the checkpoint's files are written under a temporary name,
  not yet renamed into place.

Unset (always, outside tests) this costs one environment lookup per point.
"""

from __future__ import annotations

import os
import signal

ENV = "EVO_FAULT"


def maybe_crash(point: str, generation: int) -> None:
    if os.environ.get(ENV) == f"{point}@{generation}":
        os.kill(os.getpid(), signal.SIGKILL)
