"""Backend conformance checks, shared by every backend's test module.

A backend test module subclasses :class:`BackendConformance` and provides a
``backend`` fixture (and ``lora_adapters``: two PEFT adapter directories for that
backend's model). The checks are the contract of ``fitness.backends.base``.
"""

from __future__ import annotations

import pytest

from fitness.backends.base import Request, SamplingParams

QUESTIONS = [
    "What is 7 + 5?",
    "Spell the word 'lamp' backwards.",
    "Name the largest planet in the solar system and say one fact about it in a full sentence.",
    "Is 17 a prime number?",
    "Sort these words alphabetically: pear, apple, fig, banana, cherry.",
]


def make_request(question: str, max_new_tokens: int = 24, temperature: float = 0.0, seed: int = 0,
                 adapter: str | None = None, prefill: str = "") -> Request:
    messages = ({"role": "system", "content": "Answer briefly."}, {"role": "user", "content": question})
    return Request(messages, SamplingParams(temperature, 0.95 if temperature else 1.0, max_new_tokens, seed), prefill, adapter)


def two_prefix_requests() -> list[Request]:
    """Ten greedy requests under two system prompts, alternating, with different token
    limits: the decoder's shared-prefix groups, parts and compactions all happen."""
    import dataclasses

    careful = {"role": "system", "content": "You are a careful assistant. Answer briefly and exactly."}
    requests = []
    for i, question in enumerate(QUESTIONS * 2):
        request = make_request(question, max_new_tokens=6 + 3 * i)
        requests.append(dataclasses.replace(request, messages=(careful, request.messages[1])) if i % 2 else request)
    return requests


def mixed_requests(adapters, max_new_tokens: int) -> list[Request]:
    """Per question: a greedy request, a seeded sample and an adapter request with a
    prefill (adapters alternate): the mix the Ray tests shard across actors."""
    out = []
    for i, q in enumerate(QUESTIONS):
        out.append(make_request(q, max_new_tokens=max_new_tokens))
        out.append(make_request(q, max_new_tokens=max_new_tokens, temperature=0.9, seed=100 + i))
        out.append(make_request(q, max_new_tokens=max_new_tokens, adapter=adapters[i % 2], prefill="<cot>"))
    return out


def constrained_request(question: str, mode: str, pattern: str, temperature: float = 0.0, seed: int = 0) -> Request:
    """A request under the reasoning format's grammar (``fitness.constrain``), prefilled with ``<cot>``."""
    import dataclasses

    from fitness.constrain import format_grammar

    request = make_request(question, max_new_tokens=128)
    return dataclasses.replace(request, prefill="<cot>", sampling=SamplingParams(temperature, 0.95, 128, seed),
                               grammar=format_grammar(mode, pattern, True, 128))


class BackendConformance:
    def test_same_length_and_order(self, backend):
        requests = [make_request(q, max_new_tokens=4 + 3 * i) for i, q in enumerate(QUESTIONS)]
        out = backend.generate(requests)
        assert len(out) == len(requests)
        for i, completion in enumerate(out):
            alone = backend.generate([requests[i]])[0]
            assert completion.text == alone.text  # result i belongs to request i
            assert completion.completion_tokens <= 4 + 3 * i

    def test_greedy_batched_equals_one_at_a_time(self, backend):
        requests = [make_request(q, max_new_tokens=32) for q in QUESTIONS]
        batched = backend.generate(requests)
        singles = [backend.generate([r])[0] for r in requests]
        assert [c.text for c in batched] == [c.text for c in singles]
        assert len({c.text for c in batched}) == len(QUESTIONS)  # really different answers

    def test_length_limit_and_finish_reason(self, backend):
        out = backend.generate([make_request(QUESTIONS[2], max_new_tokens=5)])[0]
        assert out.finish_reason == "length" and out.completion_tokens == 5
        out = backend.generate([make_request(QUESTIONS[0], max_new_tokens=200)])[0]
        assert out.finish_reason == "stop" and out.completion_tokens < 200

    def test_prefill_starts_the_completion(self, backend):
        out = backend.generate([make_request(QUESTIONS[0], prefill="<cot>")])[0]
        assert out.text.startswith("<cot>") and len(out.text) > len("<cot>")

    def test_seeds_are_honoured_and_batch_independent(self, backend):
        a = make_request(QUESTIONS[2], max_new_tokens=24, temperature=1.0, seed=11)
        b = make_request(QUESTIONS[2], max_new_tokens=24, temperature=1.0, seed=12)
        first = backend.generate([a])[0].text
        assert backend.generate([a])[0].text == first  # same seed, same sample
        in_batch = backend.generate([make_request(QUESTIONS[1]), a, b])
        assert in_batch[1].text == first  # what else is in the batch does not matter
        assert in_batch[2].text != first  # another seed, another sample

    def test_adapter_isolation(self, backend, lora_adapters):
        first, second = lora_adapters
        requests = [make_request(QUESTIONS[0]), make_request(QUESTIONS[0], adapter=first),
                    make_request(QUESTIONS[0], adapter=second), make_request(QUESTIONS[3])]
        mixed = [c.text for c in backend.generate(requests)]
        separately = [backend.generate([r])[0].text for r in requests]
        assert mixed == separately  # mixed-adapter batch == one adapter at a time
        assert mixed[1] != mixed[0] and mixed[2] != mixed[0] and mixed[1] != mixed[2]  # adapters act

    def test_constrained_requests_follow_the_format_and_others_are_unchanged(self, backend):
        pytest.importorskip("llguidance")
        from fitness.answer_patterns import fits
        from fitness.format import parse_completion

        free = [make_request(q, max_new_tokens=24) for q in QUESTIONS[:2]]
        constrained = [constrained_request(q, "answer", "integer") for q in QUESTIONS] + \
                      [constrained_request(q, "structure", "") for q in QUESTIONS[:2]] + \
                      [constrained_request(QUESTIONS[0], "answer", "integer", temperature=0.9, seed=s) for s in (1, 2)]
        alone = [c.text for c in backend.generate(free)]
        mixed = backend.generate(free + constrained)
        assert [c.text for c in mixed[: len(free)]] == alone  # a grammar in the batch changes no other row
        for request, completion in zip(constrained, mixed[len(free):]):
            parsed = parse_completion(completion.text)
            assert completion.finish_reason == "stop", completion.text
            assert parsed.well_formed and parsed.n_answer_blocks == 1, completion.text
            if "/-?[0-9]+/" in request.grammar:  # answer mode with the integer pattern
                assert fits("integer", parsed.answer), parsed.answer
        again = backend.generate(constrained[-2:])  # a seeded constrained sample is a function of the request
        assert [c.text for c in again] == [c.text for c in mixed[-2:]]
