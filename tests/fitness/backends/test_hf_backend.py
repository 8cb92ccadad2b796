"""hf backend on the real bundled SmolLM2-135M: the shared conformance checks, plus
agreement with transformers' own ``generate`` and the batching mechanics."""

from __future__ import annotations

import pytest
from conformance import QUESTIONS, BackendConformance, make_request

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
    chunks = hf_backend._chunks([hf_backend._encode(i, r) for i, r in enumerate(requests)])
    assert len(chunks) == 1
    saved = hf_backend.token_budget
    try:
        hf_backend.token_budget = 120  # forces one or two rows per chunk
        assert len(hf_backend._chunks([hf_backend._encode(i, r) for i, r in enumerate(requests)])) >= 3
        narrow = [c.text for c in hf_backend.generate(requests)]
    finally:
        hf_backend.token_budget = saved
    assert narrow == wide


def test_shared_prefix_is_computed_once(hf_backend, monkeypatch):
    """Rows of one strategy share the system prompt; the first forward runs it as a
    single row, the next covers only the per-row suffixes."""
    long_system = "You are a careful solver. " * 20
    requests = [
        type(r)(({"role": "system", "content": long_system}, r.messages[1]), r.sampling)
        for r in (make_request(q, max_new_tokens=4) for q in QUESTIONS)
    ]
    shapes = []
    original = hf_backend._forward
    monkeypatch.setattr(hf_backend, "_forward", lambda ids, *a, **k: shapes.append(tuple(ids.shape)) or original(ids, *a, **k))
    batched = [c.text for c in hf_backend.generate(requests)]
    assert shapes[0][0] == 1 and shapes[0][1] > 100  # the shared prefix, once
    assert shapes[1][0] == len(QUESTIONS) and shapes[1][1] < 40  # the suffixes only
    monkeypatch.setattr(hf_backend, "_forward", original)
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
