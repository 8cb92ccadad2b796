"""hf backend on the real bundled SmolLM2-135M: the shared conformance checks, plus
agreement with transformers' own ``generate`` and the batching mechanics."""

from __future__ import annotations

import pytest
from conformance import QUESTIONS, BackendConformance, constrained_request, make_request

pytestmark = pytest.mark.slow


@pytest.fixture
def backend(hf_backend):
    return hf_backend


class TestHFConformance(BackendConformance):
    pass


def test_greedy_matches_transformers_generate(hf_backend):
    import torch
    from transformers import AutoModelForCausalLM

    # a fresh copy: the backend's own model may carry injected LoRA layers by now
    tok = hf_backend.tokenizer
    model = AutoModelForCausalLM.from_pretrained(hf_backend.model_path, local_files_only=True).eval()
    requests = [make_request(q, max_new_tokens=20) for q in QUESTIONS[:3]]
    ours = hf_backend.generate(requests)
    for request, completion in zip(requests, ours):
        prompt = tok.apply_chat_template(list(request.messages), add_generation_prompt=True, tokenize=False)
        ids = torch.tensor([tok.encode(prompt, add_special_tokens=False)])
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=20, do_sample=False)
        assert completion.text == tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_small_token_budget_gives_same_results(hf_backend):
    requests = [make_request(q, max_new_tokens=16) for q in QUESTIONS]
    wide = [c.text for c in hf_backend.generate(requests)]
    saved = hf_backend.token_budget
    try:
        hf_backend.token_budget = 120  # room for one or two rows at a time
        narrow = [c.text for c in hf_backend.generate(requests)]
    finally:
        hf_backend.token_budget = saved
    assert narrow == wide


def _forward_shapes(hf_backend, monkeypatch) -> list[tuple[int, int]]:
    shapes: list[tuple[int, int]] = []
    original = hf_backend._forward
    monkeypatch.setattr(hf_backend, "_forward",
                        lambda ids, *a, **k: shapes.append(tuple(ids.shape)) or original(ids, *a, **k))
    return shapes


def test_finished_rows_are_refilled_from_the_queue(hf_backend, monkeypatch):
    """Continuous batching: with room for 4 rows, a short request that stops frees
    its slot for the next queued ones while the long rows keep decoding, and every
    output equals decoding that request alone."""
    requests = [make_request(q, max_new_tokens=3 if i % 2 else 40) for i, q in enumerate(QUESTIONS * 2)]
    singles = [hf_backend.generate([r])[0].text for r in requests]
    shapes = _forward_shapes(hf_backend, monkeypatch)
    saved = hf_backend.max_batch
    try:
        hf_backend.max_batch = 4
        batched = hf_backend.generate(requests)
    finally:
        hf_backend.max_batch = saved
    assert [c.text for c in batched] == singles
    prefills = [i for i, (_, width) in enumerate(shapes) if width > 1]
    decode_steps = len(shapes) - len(prefills)
    assert any(i > 0 and shapes[i - 1][1] == 1 for i in prefills)  # a prefill between decode steps
    assert decode_steps < sum(c.completion_tokens for c in batched) / 2  # rows really decoded together
    assert [c.completion_tokens for c in batched[1::2]] == [3] * (len(requests) // 2)


def test_progress_reports_each_request_and_its_tokens(hf_backend):
    calls: list[tuple[int, int]] = []
    requests = [make_request(q, max_new_tokens=6) for q in QUESTIONS]
    out = hf_backend.generate(requests, progress=lambda n, tokens=0: calls.append((n, tokens)))
    assert sum(n for n, _ in calls) == len(requests)
    assert sum(t for _, t in calls) == sum(c.completion_tokens for c in out)


def test_shared_prefix_is_computed_once(hf_backend, monkeypatch):
    """Rows of one strategy share the system prompt; the first forward runs it as a
    single row, the next covers only the per-row suffixes."""
    long_system = "You are a careful solver. " * 20
    requests = [
        type(r)(({"role": "system", "content": long_system}, r.messages[1]), r.sampling)
        for r in (make_request(q, max_new_tokens=4) for q in QUESTIONS)
    ]
    shapes = _forward_shapes(hf_backend, monkeypatch)
    batched = [c.text for c in hf_backend.generate(requests)]
    assert shapes[0][0] == 1 and shapes[0][1] > 100  # the shared prefix, once
    assert shapes[1][0] == len(QUESTIONS) and shapes[1][1] < 40  # the suffixes only
    monkeypatch.undo()
    assert batched == [hf_backend.generate([r])[0].text for r in requests]


def test_count_tokens_uses_the_model_tokenizer(hf_backend):
    assert hf_backend.count_tokens("") == 0
    assert hf_backend.count_tokens("hello world") == len(hf_backend.tokenizer.encode("hello world"))


def test_missing_adapter_is_a_clear_error(hf_backend, tmp_path):
    from genomes.errors import InputError

    with pytest.raises(InputError, match="adapter_model.safetensors"):
        hf_backend.generate([make_request(QUESTIONS[0], adapter=str(tmp_path))])


def test_bad_model_path_is_a_clear_error(tmp_path):
    from fitness.backends.hf import HFBackend
    from genomes.errors import InputError

    with pytest.raises(InputError, match="does not exist"):
        HFBackend(model=str(tmp_path / "nope"))
    with pytest.raises(InputError, match="config.json"):
        HFBackend(model=str(tmp_path))


def test_generation_raises_no_deprecation_or_future_warning(hf_backend):
    """The backend uses the installed transformers' current API (the KV cache passed
    as ``cache``, not the deprecated ``past_key_values``): nothing it calls warns."""
    import warnings

    requests = [make_request(q, max_new_tokens=8) for q in QUESTIONS[:3]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hf_backend.generate(requests)
    bad = [f"{w.category.__name__}: {w.message}" for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert not bad, bad


def test_loading_an_adapter_raises_no_future_warning(lora_adapters):
    """PEFT's wrapper reads transformers' deprecated ``is_gradient_checkpointing`` when
    it wraps the model: the backend keeps that out of every run's output."""
    import warnings

    from fitness.backends.hf import HFBackend

    backend = HFBackend(dtype="float32")  # a fresh one: its first adapter wraps the model
    requests = [make_request(QUESTIONS[0], max_new_tokens=4, adapter=path) for path in lora_adapters]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend.generate(requests)
    bad = [f"{w.category.__name__}: {w.message}" for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert not bad, bad


def test_bfloat16_loads_in_bfloat16_and_is_deterministic():
    """bf16 (the `auto` choice on AMX / AVX512-BF16 CPUs): weights really in bf16, the
    same batch gives the same outputs twice, logits reach the sampler as float32."""
    import torch

    from fitness.backends.hf import HFBackend

    backend = HFBackend(dtype="bfloat16")
    assert backend.dtype == "bfloat16" and next(backend.model.parameters()).dtype == torch.bfloat16
    requests = [make_request(q, max_new_tokens=12) for q in QUESTIONS]
    first, second = backend.generate(requests), backend.generate(requests)
    assert [c.text for c in first] == [c.text for c in second]
    assert all(c.completion_tokens > 0 for c in first)


def test_dtype_choice():
    from fitness.backends.model_store import resolve_dtype
    from genomes.errors import InputError

    assert resolve_dtype("float32", "cpu") == "float32" and resolve_dtype("bfloat16", "cpu") == "bfloat16"
    assert resolve_dtype("auto", "cpu") in ("float32", "bfloat16")
    with pytest.raises(InputError, match="dtype must be one of"):
        resolve_dtype("float8", "cpu")


# ---- constrained decoding (formats: BackendConformance) ----------------------------
def test_constrained_decoding_without_llguidance_is_one_clear_error(hf_backend, monkeypatch):
    from fitness.backends import grammar_rows
    from genomes.errors import InputError

    monkeypatch.setattr(grammar_rows, "available", lambda: False)
    monkeypatch.setattr(hf_backend, "_grammars", None)
    with pytest.raises(InputError, match="llguidance"):
        hf_backend.generate([constrained_request(QUESTIONS[0], "structure", "")])


def test_max_context_shrinks_the_token_limit_and_scores_an_overlong_prompt_empty(hf_backend):
    """A model with a short context: a request generates at most what fits; a prompt
    that alone fills the context gets an empty completion, not an error."""
    short = make_request(QUESTIONS[0], max_new_tokens=40)
    long = make_request(" ".join(QUESTIONS * 6), max_new_tokens=40)
    prompt_tokens = hf_backend.generate([short])[0].prompt_tokens
    saved = hf_backend.max_context
    try:
        hf_backend.max_context = prompt_tokens + 5
        fitted, overlong = hf_backend.generate([short, long])
    finally:
        hf_backend.max_context = saved
    assert fitted.completion_tokens <= 5 and fitted.finish_reason in ("length", "stop")
    assert fitted.text == hf_backend.generate([make_request(QUESTIONS[0], max_new_tokens=5)])[0].text
    assert (overlong.text, overlong.completion_tokens, overlong.finish_reason) == ("", 0, "length")
