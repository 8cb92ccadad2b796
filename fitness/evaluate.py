"""Score strategies on tasks through one batched backend call.

Contract of :func:`evaluate_many`: every (strategy x task x vote) request of the call
goes to ``backend.generate`` at once, and each task gets one :class:`ExampleResult`.
Model output never raises here: unparseable completions are results with score 0.
Sampling seeds are derived from (seed, strategy hash, task id, vote index), so a
result does not depend on which other strategies or tasks share the call.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from fitness.backends.base import (
    Backend,
    Completion,
    LoraBackend,
    ProgressCallback,
    Request,
    SamplingParams,
)
from fitness.constrain import format_grammar
from fitness.format import ParsedCompletion, normalise_space, parse_completion
from fitness.tasks import Task
from fitness.verify import FULL_CREDIT, score_answer
from genomes.errors import InputError
from genomes.lora import LoraGene
from genomes.chat_format import COT
from genomes.strategy import Strategy


@dataclass(frozen=True)
class ExampleResult:
    """One (strategy, task) outcome; ``score`` is the verifier's c in [0, 1]."""

    strategy_hash: str
    task_id: str
    family: str
    level: int
    difficulty: float
    question: str
    gold: str | None
    answer: str | None
    answer_problem: str | None
    score: float
    steps: tuple[str, ...]  # the parsed <cot> steps
    response: str | None  # the parsed response block
    chain_tokens: int  # model tokens of the <cot> steps
    completion_tokens: int  # model tokens generated, summed over votes
    finish_reason: str
    votes: int
    completion: str

    @property
    def correct(self) -> bool:
        return self.score >= FULL_CREDIT

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    def to_json(self) -> dict:
        data = asdict(self)
        data["correct"] = self.correct
        data["n_steps"] = self.n_steps
        return data


def request_seed(seed: int, strategy_hash: str, task_id: str, vote: int) -> int:
    digest = hashlib.sha256(f"{seed}/{strategy_hash}/{task_id}/{vote}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def adapter_of(strategy: Strategy, backend: Backend | None = None) -> str | None:
    """The PEFT adapter directory for a strategy: a fixed ``{"adapter_dir": ...}``
    slot as it is; an active LoRA gene with weights materialised by the backend; None
    for base weights (no gene, a switched-off gene, or a seed chain whose B is still 0)."""
    lora = strategy.lora
    if isinstance(lora, dict):
        return lora.get("adapter_dir")
    if isinstance(lora, LoraGene) and lora.is_active and lora.has_weights:
        if not isinstance(backend, LoraBackend):
            raise InputError("this backend cannot serve LoRA genes")
        return backend.materialise_lora(lora)
    return None


def build_requests(strategy: Strategy, task: Task, seed: int, adapter: str | None = None) -> list[Request]:
    rendered = strategy.render(task.question)
    d = strategy.decoding
    strategy_hash = strategy.content_hash()
    return [
        Request(
            messages=rendered.messages,
            sampling=SamplingParams(d.temperature, d.top_p, d.max_new_tokens, request_seed(seed, strategy_hash, task.id, v)),
            prefill=rendered.prefill,
            adapter=adapter,
            grammar=format_grammar(d.constrain, task.answer_pattern, rendered.prefill.rstrip().endswith(COT), d.max_new_tokens),
            model="" if d.model == "default" else d.model,
        )
        for v in range(d.votes)
    ]


def evaluate_many(
    jobs: Sequence[tuple[Strategy, Sequence[Task]]], backend: Backend, seed: int = 0,
    progress: ProgressCallback | None = None,
) -> list[list[ExampleResult]]:
    """Results per job, per task, in input order, from a single ``generate`` call."""
    requests: list[Request] = []
    spans: list[list[tuple[int, int]]] = []  # per job, per task: [start, end) into requests
    for strategy, tasks in jobs:
        job_spans = []
        adapter = adapter_of(strategy, backend)
        for task in tasks:
            batch = build_requests(strategy, task, seed, adapter)
            job_spans.append((len(requests), len(requests) + len(batch)))
            requests += batch
        spans.append(job_spans)
    completions = backend.generate(requests, progress=progress)
    return [
        [_result(strategy, task, completions[a:b], backend) for task, (a, b) in zip(tasks, job_spans)]
        for (strategy, tasks), job_spans in zip(jobs, spans)
    ]


def evaluate(strategy: Strategy, tasks: Sequence[Task], backend: Backend, seed: int = 0,
             progress: ProgressCallback | None = None) -> list[ExampleResult]:
    return evaluate_many([(strategy, tasks)], backend, seed, progress)[0]


def _vote(parsed: list[ParsedCompletion]) -> int:
    """Index of the completion carrying the majority answer (self-consistency);
    ties go to the earliest sample; with no answer anywhere, the first sample."""
    answers = [normalise_space(p.answer).lower() if p.answer is not None else None for p in parsed]
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return 0
    best = max(counts.values())
    return next(i for i, a in enumerate(answers) if a is not None and counts[a] == best)


def _result(strategy: Strategy, task: Task, completions: Sequence[Completion], backend: Backend) -> ExampleResult:
    parsed = [parse_completion(c.text) for c in completions]
    chosen = _vote(parsed)
    p, c = parsed[chosen], completions[chosen]
    return ExampleResult(
        strategy_hash=strategy.content_hash(),
        task_id=task.id, family=task.family, level=task.level, difficulty=task.difficulty,
        question=task.question, gold=task.answer,
        answer=p.answer, answer_problem=p.answer_problem,
        score=score_answer(p.answer, task),
        steps=p.steps,
        response=p.response,
        chain_tokens=backend.count_tokens(" ".join(p.steps)) if p.steps else 0,
        completion_tokens=sum(x.completion_tokens for x in completions),
        finish_reason=c.finish_reason,
        votes=len(completions),
        completion=c.text,
    )


@dataclass(frozen=True)
class FamilySummary:
    family: str
    n: int
    accuracy: float
    mean_steps: float
    mean_chain_tokens: float
    mean_completion_tokens: float
    well_formed: float  # share with a single agreed answer


def summarise(results: Sequence[ExampleResult]) -> list[FamilySummary]:
    """One row per family (sorted), then an ``all`` row."""
    groups: dict[str, list[ExampleResult]] = defaultdict(list)
    for r in results:
        groups[r.family].append(r)
    rows = [_summary(f, groups[f]) for f in sorted(groups)]
    if results:
        rows.append(_summary("all", list(results)))
    return rows


def _summary(family: str, rs: list[ExampleResult]) -> FamilySummary:
    n = len(rs)
    return FamilySummary(
        family=family, n=n,
        accuracy=sum(r.correct for r in rs) / n,
        mean_steps=sum(r.n_steps for r in rs) / n,
        mean_chain_tokens=sum(r.chain_tokens for r in rs) / n,
        mean_completion_tokens=sum(r.completion_tokens for r in rs) / n,
        well_formed=sum(r.answer is not None for r in rs) / n,
    )


def evaluate_answerer(answerer, tasks: Sequence[Task], backend: Backend, seed: int = 0,
                      progress: ProgressCallback | None = None) -> list[ExampleResult]:
    """Every task answered by a :class:`genomes.strategy.Strategy`, or by its family's
    strategy of a :class:`genomes.routes.Routes`; results in task order, from one
    ``generate`` call."""
    from genomes.routes import in_task_order, route_jobs

    jobs, positions = route_jobs(answerer, list(tasks))
    return in_task_order(evaluate_many(jobs, backend, seed, progress), positions)

