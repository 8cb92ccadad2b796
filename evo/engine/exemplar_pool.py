"""Where mutation takes few-shot exemplars from: the run's own training data.

Three sources (``exemplars.sources`` in the config), in this order in the pool:

- ``library``: the hand-written exemplars (:data:`genomes.fragments.EXEMPLARS`) whose
  question is of a kind the run trains on; none when no kind fits (a run on a family
  the library does not cover gains nothing from a letter-counting example, and the
  bundled model copies whatever kind it was shown);
- ``labeled``: ``exemplars.labeled_per_family`` tasks per family from its *training*
  split, each its question and gold answer with a minimal chain (the task's gold
  steps when it has them, else one step stating the answer); known before the first
  generation, so the initial population can use them;
- ``bootstrapped``: the run's own verified-correct completions of training tasks
  (their parsed steps, answer and response), harvested after every generation from
  the individuals just scored; per family the ``exemplars.bootstrapped_per_family``
  with the shortest chains are kept.

Contract: only tasks of the training batches and the training split ever enter the
pool (never a held-out task), every pool exemplar records its ``source`` (kind,
split, task id, and the individual for a bootstrapped one), and the pool is a pure
function of the config and the results scored so far: :meth:`to_state` goes into the
checkpoint, so a resumed run mutates from the same pool. A task whose question is
asked is never shown as its own exemplar (``Strategy.render`` skips it).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

from fitness.tasks import TRAIN, Task
from genomes.errors import InputError
from genomes.strategy import Exemplar, decode_exemplar

MAX_ANSWER_CHARS = 300  # a longer gold answer makes a poor worked example (and a long prompt)


class ExemplarPool:
    def __init__(self, sources: Sequence[str], library: Sequence[Exemplar] = (), labeled: Sequence[Exemplar] = (),
                 bootstrapped_per_family: int = 4, max_question_chars: int = 1500) -> None:
        self.sources = tuple(sources)
        self.library = tuple(library) if "library" in self.sources else ()
        self.labeled = tuple(labeled) if "labeled" in self.sources else ()
        self.per_family = bootstrapped_per_family if "bootstrapped" in self.sources else 0
        self.max_question_chars = max_question_chars
        self.bootstrapped: dict[str, tuple[int, str, Exemplar]] = {}  # task id -> (chain tokens, family, exemplar)

    def exemplars(self) -> tuple[Exemplar, ...]:
        """The pool now: library, then labeled, then the kept bootstrapped exemplars."""
        return self.library + self.labeled + tuple(ex for _, _, ex in self._kept())

    def harvest(self, scored: Iterable[Any], training_ids: set[str]) -> int:
        """Add the verified-correct completions of training tasks among ``scored``
        individuals' results (the shortest per task; an earlier one wins a tie);
        returns how many exemplars the pool gained."""
        if not self.per_family:
            return 0
        before = set(self.bootstrapped)
        for ind in scored:
            for r in ind.results or ():
                if not r.correct or r.task_id not in training_ids or not r.steps:
                    continue
                held = self.bootstrapped.get(r.task_id)
                if held is not None and held[0] <= r.chain_tokens:
                    continue
                exemplar = make_exemplar(r.question, r.steps, r.answer, r.response or "",
                                         f"bootstrapped:{TRAIN}:{r.task_id}:#{ind.id}", self.max_question_chars)
                if exemplar is not None:
                    self.bootstrapped[r.task_id] = (r.chain_tokens, r.family, exemplar)
        return len(set(self.bootstrapped) - before)

    def _kept(self) -> list[tuple[int, str, Exemplar]]:
        """Per family the ``per_family`` shortest chains (task id breaks ties), in
        family order of first appearance."""
        by_family: dict[str, list[tuple[int, str, Exemplar]]] = {}
        for task_id, (tokens, family, exemplar) in self.bootstrapped.items():
            by_family.setdefault(family, []).append((tokens, task_id, exemplar))
        kept = []
        for family, rows in by_family.items():
            kept += [(tokens, family, ex) for tokens, _, ex in sorted(rows, key=lambda t: t[:2])[: self.per_family]]
        return kept

    # ---- checkpoint state -----------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {"bootstrapped": [[task_id, tokens, family, _encode(ex)]
                                 for task_id, (tokens, family, ex) in self.bootstrapped.items()]}

    def restore(self, state: dict[str, Any]) -> None:
        self.bootstrapped = {task_id: (tokens, family, decode_exemplar(data, "checkpoint exemplar"))
                             for task_id, tokens, family, data in state["bootstrapped"]}


def make_exemplar(question: str, steps: Sequence[str], answer: str | None, response: str, source: str,
                  max_question_chars: int) -> Exemplar | None:
    """A valid exemplar, or None for material that makes a poor or invalid one (no
    answer, a question or answer too long, a format marker or a blank step inside,
    which the model would copy)."""
    if not answer or len(question) > max_question_chars or len(answer) > MAX_ANSWER_CHARS:
        return None
    try:
        return decode_exemplar({"question": question, "steps": list(steps), "answer": answer, "response": response,
                                "source": source})
    except InputError:
        return None


def stated_answer(answer: str) -> str:
    """The one step (and response) of an exemplar that has no chain of its own."""
    return f"The answer is {answer}."


def labeled_exemplars(tasks: Sequence[Task], max_question_chars: int) -> tuple[Exemplar, ...]:
    """Training tasks as exemplars: the question, the gold steps (or one step stating
    the answer), the gold answer and a one-line response."""
    out = []
    for task in tasks:
        answer = (task.answer or "").strip()
        steps = tuple(task.steps) if task.steps else (stated_answer(answer),)
        exemplar = make_exemplar(task.question, steps, answer, stated_answer(answer),
                                 f"labeled:{TRAIN}:{task.id}", max_question_chars)
        if exemplar is not None:
            out.append(exemplar)
    return tuple(out)


def build_pool(config, task_pool, show_progress: bool = True) -> ExemplarPool:
    """The pool a new run starts from: the fitting library exemplars and the labeled
    ones; one note line per family that gave no labeled exemplar (a small training
    split, no gold answers, or only questions past ``exemplars.max_question_chars``)."""
    ex = config.exemplars
    labeled: list[Exemplar] = []
    if "labeled" in ex.sources and ex.labeled_per_family:
        for family, tasks in task_pool.labeled_tasks(ex.labeled_per_family).items():
            made = labeled_exemplars(tasks, ex.max_question_chars)
            if not made and show_progress:
                print(f"evo: note: no labeled exemplars for {family} (no usable training task with a gold answer); "
                      "it relies on the other sources", file=sys.stderr, flush=True)
            labeled += made
    return ExemplarPool(ex.sources, task_pool.library_exemplars(), labeled, ex.bootstrapped_per_family,
                        ex.max_question_chars)


def legacy_pool(task_pool) -> ExemplarPool:
    """The pool of runs checkpointed before the run's own data fed it: the fitting
    library exemplars, or the whole library when none fit (so they resume exactly)."""
    return ExemplarPool(("library",), task_pool.exemplar_pool())


def _encode(exemplar: Exemplar) -> dict[str, Any]:
    return {"question": exemplar.question, "steps": list(exemplar.steps), "answer": exemplar.answer,
            "response": exemplar.response, "source": exemplar.source}
