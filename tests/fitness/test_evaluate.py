"""The evaluator with a scripted backend: batching into one call, scoring, voting,
summaries. (The real model is exercised in tests/evo/test_cli_eval.py.)"""

from __future__ import annotations

import pytest

from fitness.backends.base import Completion
from fitness.evaluate import evaluate, evaluate_many, request_seed, summarise
from fitness.tasks import Task
from genomes.chat_format import format_completion
from genomes.strategy import DecodingGene, Strategy


class ScriptedBackend:
    """Answers each request from ``reply(request)``; records every call."""

    def __init__(self, reply):
        self.reply = reply
        self.calls = []

    def generate(self, requests, progress=None):
        self.calls.append(list(requests))
        if progress:
            progress(len(requests))
        return [Completion(self.reply(r), 10, 5, "stop") for r in requests]

    def count_tokens(self, text):
        return len(text.split())


def task(i: int, answer: str, family: str = "jsonl:t") -> Task:
    return Task(id=f"{family}/L0/{i}", family=family, question=f"What is {answer}?", answer=answer,
                level=0, difficulty=0.0, verifier="numeric")


def answer_with(value: str) -> str:
    return format_completion(["look", "write it"], value, "done")


def test_one_backend_call_for_all_jobs_and_scores_follow_the_verifier():
    tasks = [task(1, "3"), task(2, "4")]
    backend = ScriptedBackend(lambda r: answer_with("3"))
    per_job = evaluate_many([(Strategy(name="a"), tasks), (Strategy(name="b", decoding=DecodingGene(max_new_tokens=7)), tasks)], backend)
    assert len(backend.calls) == 1 and len(backend.calls[0]) == 4
    assert [[r.score for r in job] for job in per_job] == [[1.0, 0.0], [1.0, 0.0]]
    assert per_job[0][0].n_steps == 2 and per_job[0][0].chain_tokens == 3  # "look" + "write it"
    assert per_job[0][0].response == "done" and per_job[0][0].correct and not per_job[0][1].correct


@pytest.mark.parametrize("garbage", ["", "\x00\xff" * 100, "<begin_constrained_output><end_constrained_output>",
                                     "<cot> 3", "<begin_constrained_output> 3 <end_constrained_output>"
                                                "<begin_constrained_output> 4 <end_constrained_output>", "x" * 300_000])
def test_garbage_output_scores_zero_without_raising(garbage):
    result = evaluate(Strategy(), [task(1, "3")], ScriptedBackend(lambda r: garbage))[0]
    assert result.score == 0.0 and result.answer is None


def test_self_consistency_takes_the_majority_answer():
    replies = iter(["7", "3", "3", "9", "3"])  # one strategy x one task x 5 votes
    strategy = Strategy(decoding=DecodingGene(temperature=0.8, votes=5))
    backend = ScriptedBackend(lambda r: answer_with(next(replies)))
    result = evaluate(strategy, [task(1, "3")], backend)[0]
    assert len(backend.calls[0]) == 5
    assert len({r.sampling.seed for r in backend.calls[0]}) == 5  # each vote its own seed
    assert result.answer == "3" and result.score == 1.0 and result.votes == 5
    assert result.completion_tokens == 25  # tokens of all votes are spent


def test_sampling_seed_depends_on_request_identity_not_batch_composition():
    strategy = Strategy(decoding=DecodingGene(temperature=1.0))
    alone = ScriptedBackend(lambda r: "")
    evaluate(strategy, [task(1, "3")], alone, seed=5)
    crowded = ScriptedBackend(lambda r: "")
    evaluate_many([(Strategy(name="other", decoding=DecodingGene(temperature=0.5)), [task(9, "1")]),
                   (strategy, [task(0, "2"), task(1, "3")])], crowded, seed=5)
    assert alone.calls[0][0].sampling.seed == crowded.calls[0][2].sampling.seed
    assert request_seed(5, "h", "t", 0) != request_seed(6, "h", "t", 0)


def test_summary_per_family_with_hand_computed_values():
    tasks = [task(1, "3", "jsonl:a"), task(2, "4", "jsonl:a"), task(3, "5", "jsonl:b")]
    results = evaluate(Strategy(), tasks, ScriptedBackend(lambda r: answer_with("3") if "3" in r.messages[-1]["content"] else "junk"))
    rows = {row.family: row for row in summarise(results)}
    assert rows["jsonl:a"].n == 2 and rows["jsonl:a"].accuracy == 0.5
    assert rows["jsonl:a"].mean_steps == 1.0  # 2 steps and 0 steps
    assert rows["jsonl:a"].well_formed == 0.5
    assert rows["jsonl:b"].accuracy == 0.0
    assert rows["all"].n == 3 and rows["all"].accuracy == pytest.approx(1 / 3)
    assert list(rows) == ["jsonl:a", "jsonl:b", "all"]
