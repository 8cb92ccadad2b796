"""reasoning-gym draws that are the same in every process, whatever its hash seed.

Why: some reasoning-gym generators draw from a ``set`` of strings
(``rng.choice(list(self.letters))`` in ransom_note, for one), and the order of a
set of strings follows Python's per-process hash seed. Measured on the installed
reasoning-gym, two processes of different hash seeds drawing 4 items of every family:
isomorphic_strings, knight_swap, polynomial_multiplication, ransom_note and
word_ladder drew other questions (which of them depends on the level and size
drawn); list_functions and codeio also call the global ``random``, so they drew other
questions at every call, even in one process. Their tasks, and so every split,
training batch and test set built from them, changed between a run and its resume,
between `evo run` and `evo eval`, and between the methods of a benchmark run in
separate processes (``runs/check_task_determinism.py`` scans every family).

The canonical draw is the one made under ``PYTHONHASHSEED=0``. A process started
that way (``sys.flags.hash_randomization == 0``) draws in place; any other asks one
helper process, started once with ``PYTHONHASHSEED=0`` and kept for the process's
life, and keeps what it answered (one line of :mod:`fitness.typed_json` per draw:
no pickle, and every item comes back with its types). Draws of families whose generators do not depend
on the hash seed are the same either way: every family takes the same path, so a
family no scan has seen yet is covered too. If the helper cannot run, the draw is
made in place and a warning says that those families' tasks may differ between
processes.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

from fitness import typed_json

_lock = threading.Lock()
_helper: subprocess.Popen | None = None
_helper_pid: int | None = None  # the process that started _helper
_memo: dict[tuple, list[dict[str, Any]]] = {}
_helper_failed = False


def draw_items(family: str, level: int, seed: int, size: int) -> list[dict[str, Any]]:
    """The ``size`` items reasoning-gym generates for ``family`` at curriculum
    ``level`` (the plain dataset where the family has no curriculum) from ``seed``,
    as a process with ``PYTHONHASHSEED=0`` generates them."""
    key = (family, level, seed, size)
    with _lock:
        if key not in _memo:
            _memo[key] = generate_items(*key) if hash_seed_is_canonical() else _ask_helper(key)
        return [dict(item) for item in _memo[key]]  # callers may keep or change their copies


def hash_seed_is_canonical() -> bool:
    return sys.flags.hash_randomization == 0


def generate_items(family: str, level: int, seed: int, size: int) -> list[dict[str, Any]]:
    """The draw itself, in this process, with Python's and numpy's global generators
    seeded from the arguments for its duration (then restored): a few generators
    (list_functions, codeio) also call the global ``random``, so without this they
    drew other tasks at every call, even in one process."""
    import random

    from reasoning_gym.factory import CURRICULA, create_dataset

    numpy = sys.modules.get("numpy")
    saved = random.getstate(), numpy.random.get_state() if numpy else None
    random.seed(f"{family}/{level}/{seed}")
    if numpy:
        numpy.random.seed(random.Random(f"numpy/{family}/{level}/{seed}").randrange(2**32))
    try:
        if family in CURRICULA:
            curriculum = CURRICULA[family]()
            curriculum.set_global_level(level)
            config = curriculum.generate_configuration({"seed": seed, "size": size})
            dataset = create_dataset(family, **vars(config))
        else:
            dataset = create_dataset(family, seed=seed, size=size)
        return [dataset[i] for i in range(size)]
    finally:
        random.setstate(saved[0])
        if numpy:
            numpy.random.set_state(saved[1])


def _ask_helper(key: tuple) -> list[dict[str, Any]]:
    global _helper_failed
    if not _helper_failed:
        try:
            return _request(key)
        except (OSError, EOFError) as error:
            _helper_failed = True
            _stop_helper()
            warnings.warn(f"task draws: the PYTHONHASHSEED=0 helper process failed ({error}); drawing in this "
                          "process, where families such as ransom_note may draw other tasks than in another process",
                          RuntimeWarning, stacklevel=3)
        except _Unsendable as error:  # this draw only: the helper serves the others
            warnings.warn(f"task draws: {error}; drawing {key[0]} in this process, where it may draw other tasks "
                          "than in another process", RuntimeWarning, stacklevel=3)
    return generate_items(*key)


class _Unsendable(Exception):
    """The helper drew the items but cannot send them (a type typed_json does not carry)."""


def _request(key: tuple) -> list[dict[str, Any]]:
    global _helper, _helper_pid
    if _helper_pid != os.getpid():  # a forked child must not share its parent's pipes
        _helper, _helper_pid = None, os.getpid()
    if _helper is None or _helper.poll() is not None:
        package_root = str(Path(__file__).resolve().parent.parent)
        path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
        _helper = subprocess.Popen([sys.executable, "-m", "fitness.canonical_draws"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, encoding="utf-8",
                                   env={**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": path})
    _helper.stdin.write(typed_json.dumps(list(key)) + "\n")
    _helper.stdin.flush()
    line = _helper.stdout.readline()
    if not line:
        raise EOFError("the helper process closed its output")
    try:
        answer = typed_json.loads(line)
    except (ValueError, KeyError, TypeError) as error:
        raise OSError(f"unreadable answer: {error}") from error
    if "items" in answer:
        return answer["items"]
    if answer.get("unsendable"):
        raise _Unsendable(answer["error"])
    raise _error_of(answer["type"])(answer["error"])  # the generator's own error, as in-place drawing raises it


def _error_of(name: str) -> type[Exception]:
    """A built-in exception class by name (RuntimeError for any other): the helper's
    errors keep their kind where callers could tell them apart."""
    import builtins

    found = getattr(builtins, name, None)
    return found if isinstance(found, type) and issubclass(found, Exception) else RuntimeError


@atexit.register
def _stop_helper() -> None:
    global _helper
    if _helper is not None:
        try:
            _helper.stdin.close()
            _helper.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            _helper.kill()
        _helper = None


def _serve() -> None:
    """The helper: answer one typed-JSON line [family, level, seed, size] per request
    on stdin with one line ``{"items": [...]}`` or ``{"error": ..., "type": ...}``,
    until stdin closes."""
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # anything a generator prints must not reach the answers
    for line in sys.stdin:
        try:
            items = generate_items(*typed_json.loads(line))
        except Exception as error:  # sent back, raised in the asking process
            answer = typed_json.dumps({"error": str(error), "type": type(error).__name__})
        else:
            try:
                answer = typed_json.dumps({"items": items})
            except TypeError as error:
                answer = typed_json.dumps({"error": str(error), "unsendable": True})
        answers.write(answer + "\n")
        answers.flush()


if __name__ == "__main__":
    _serve()
