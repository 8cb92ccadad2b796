"""The DSPy peers on our fake backend (skipped without the ``peers`` extra): the
engine batches DSPy's threaded calls into one generate and stops at the budget, the
adapter renders and parses our format (and reads any other signature's free text),
demos become our exemplars, and both optimizers run within their budget."""

from __future__ import annotations

import re
import threading

import pytest
from fakes import ArithmeticOracle, config

from evo.engine.task_pool import TaskPool
from evo.peers.budget import CountingBackend
from fitness.backends.base import Completion
from genomes.chat_format import format_completion

dspy = pytest.importorskip("dspy", reason="needs the peers extra (pip install -e '.[peers]')")

from evo.peers.dspy_peer import (  # noqa: E402
    BUDGET_SPENT,
    BackendEngine,
    adapter_class,
    demo_exemplars,
    mipro_sizes,
    random_search_candidates,
    run_dspy,
    strategy_of_program,
    task_program,
)


class Echo:
    """Answers each request with its last user message; records the batches it was sent."""

    def __init__(self) -> None:
        self.batches = []

    def generate(self, requests, progress=None):
        self.batches.append(list(requests))
        return [Completion(r.prefill + r.messages[-1]["content"], 3, 2, "stop") for r in requests]

    def count_tokens(self, text):
        return len(text.split())


def lm_request(text: str, prefill: str = ""):
    from dspy.lm15 import Message, Request

    messages = [Message.user(text)] + ([Message.assistant(prefill)] if prefill else [])
    return Request(model="evo/test", messages=tuple(messages), system="be brief")


def call_together(engine, texts):
    """``engine.complete`` from one thread per text, all at once; their reply texts."""
    replies = [None] * len(texts)

    def worker(i):
        replies[i] = engine.complete(lm_request(texts[i])).message.parts[0].text

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return replies


def test_the_engine_batches_concurrent_calls_and_answers_each_its_own():
    echo = Echo()
    engine = BackendEngine(CountingBackend(echo, 100), scored=True, max_new_tokens=16, window_s=0.5)
    texts = [f"question {i}" for i in range(8)]
    assert call_together(engine, texts) == texts
    assert sum(len(b) for b in echo.batches) == 8 and len(echo.batches) < 8  # batched, every call once
    request = echo.batches[0][0]
    assert request.messages[0] == {"role": "system", "content": "be brief"}
    assert request.sampling.max_new_tokens == 16 and request.sampling.temperature == 0.0


def test_a_trailing_assistant_message_is_the_prefill():
    echo = Echo()
    engine = BackendEngine(CountingBackend(echo, 10), scored=True, max_new_tokens=8)
    reply = engine.complete(lm_request("q", prefill="<cot>")).message.parts[0].text
    sent = echo.batches[0][0]
    assert sent.prefill == "<cot>" and sent.messages[-1] == {"role": "user", "content": "q"} and reply == "<cot>q"


def test_the_engine_generates_nothing_past_the_budget():
    echo = Echo()
    counting = CountingBackend(echo, 3)
    engine = BackendEngine(counting, scored=True, max_new_tokens=8, window_s=0.5)
    replies = call_together(engine, [f"q{i}" for i in range(5)])
    assert counting.rollouts == 3 and engine.refused == 2
    assert sorted(r == BUDGET_SPENT for r in replies) == [False, False, False, True, True]
    assert engine.complete(lm_request("later")).message.parts[0].text == BUDGET_SPENT
    proposals = BackendEngine(counting, scored=False, max_new_tokens=8)  # proposals are not rollouts
    assert proposals.complete(lm_request("propose")).message.parts[0].text == "propose"
    assert (counting.rollouts, counting.proposal_calls) == (3, 1)


def test_an_error_in_generate_reaches_every_caller_of_the_batch():
    class Broken(Echo):
        def generate(self, requests, progress=None):
            raise RuntimeError("backend down")

    engine = BackendEngine(CountingBackend(Broken(), 10), scored=True, max_new_tokens=8)
    with pytest.raises(RuntimeError, match="backend down"):
        engine.complete(lm_request("q"))


def test_the_adapter_renders_our_format_and_parses_it():
    adapter = adapter_class()()
    signature = task_program().signature
    demos = [dspy.Example(question="What is 2 + 3?", answer="5")]
    messages = adapter.format(signature, demos, {"question": "What is 4 + 4?"})
    rendered = strategy_of_program(signature.instructions, demos).render("What is 4 + 4?")
    assert messages[:-1] == list(rendered.messages) and messages[-1] == {"role": "assistant", "content": "<cot>"}
    assert messages[1] == {"role": "user", "content": "What is 2 + 3?"} and "5" in messages[2]["content"]
    parsed = adapter.parse(signature, format_completion(["4 + 4 = 8", "so 8"], "8", "It is 8."))
    assert parsed == {"steps": "4 + 4 = 8\nso 8", "answer": "8"}
    assert adapter.parse(signature, "no format at all") == {"steps": "", "answer": ""}  # scored 0, no crash


def test_any_other_signature_gets_plain_text_and_its_first_field_the_whole_reply():
    adapter = adapter_class()()
    proposer = dspy.Signature("task_description, examples -> proposed_instruction, notes", "Propose an instruction.")
    messages = adapter.format(proposer, [], {"task_description": "sums", "examples": "1 + 1 = 2"})
    assert messages[0]["content"].startswith("Propose an instruction.") and "proposed_instruction" in messages[0]["content"]
    assert messages[1]["content"] == "task_description: sums\n\nexamples: 1 + 1 = 2"
    assert adapter.parse(proposer, "  Add the numbers carefully. ") == {"proposed_instruction": "Add the numbers carefully.",
                                                                          "notes": ""}


def test_demos_become_exemplars_labeled_or_bootstrapped_and_bad_ones_are_left_out():
    demos = [dspy.Example(question="What is 2 + 3?", answer="5"),
             dspy.Example(question="What is 1 + 1?", steps="1 + 1 = 2\n\nso 2", answer="2"),
             dspy.Example(question="What is 9 - 9?", answer=""),  # no answer
             dspy.Example(question="x", steps="a <cot> b", answer="1")]  # a format marker in a step
    exemplars = demo_exemplars(demos)
    assert [e.question for e in exemplars] == ["What is 2 + 3?", "What is 1 + 1?"]
    assert exemplars[0].steps == ("The answer is 5.",) and exemplars[0].source == "dspy-labeled:train"
    assert exemplars[1].steps == ("1 + 1 = 2", "so 2") and exemplars[1].source == "dspy-bootstrapped:train"


def test_sizes_fit_the_budget():
    candidates = random_search_candidates(600, train=24, val=12)  # bootstraps of half the trainset fit
    assert (candidates + 3) * 12 + (candidates + 1) * 12 <= 600 < (candidates + 4) * 12 + (candidates + 2) * 12
    assert random_search_candidates(10, train=24, val=12) == 1
    sizes = mipro_sizes(600, train=24, val=12)
    trials, batch, every = sizes["num_trials"], sizes["minibatch_size"], sizes["minibatch_full_eval_steps"]
    used = (sizes["num_candidates"] - 2) * 24 + 12 + trials * batch + trials // every * 12
    assert used <= 600 < used + batch + 12 and trials >= 1


class HalfRight(ArithmeticOracle):
    """Right on even sums only, so candidates differ; proposals get a plain sentence."""

    def generate(self, requests, progress=None):
        out = []
        for request, completion in zip(requests, super().generate(requests, progress)):
            match = re.search(r"problem: (.*) =", request.messages[-1]["content"])
            if match is None:
                completion = Completion("Add the numbers one at a time.", 5, 5, "stop")
            elif eval(match.group(1)) % 2:
                completion = Completion(format_completion([match.group(1)], "0"), 5, 5, "stop")
            out.append(completion)
        return out


@pytest.mark.parametrize("method", ["bootstrap_rs", "mipro"])
def test_each_optimizer_runs_within_its_budget_and_renders_our_strategy(tmp_path, method):
    from genomes.strategy import Strategy

    pool = TaskPool(config(tmp_path))
    train = pool.training_batch([("chain_sum", 0)] * 6, generation=0)
    val = pool.training_batch([("chain_sum", 0)] * 4, generation=1)
    counting = CountingBackend(HalfRight(), 60)
    result = run_dspy(method, counting, train, val, 60, threads=4)
    assert 0 < counting.rollouts <= 60
    strategy = Strategy.decode(result["strategy"])
    assert strategy.name == method and strategy.prompt.approach == " ".join(result["instruction"].split())
    assert len(strategy.prompt.exemplars) == result["demos"] <= 4
    if method == "mipro":
        assert counting.proposal_calls > 0  # instructions were proposed, and not counted as rollouts
