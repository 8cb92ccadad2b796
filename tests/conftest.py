"""Shared fixtures. The real bundled model loads once per session (seconds once the
safetensors cache exists; ~25 s the very first time on a machine)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def hf_backend():
    from fitness.backends.hf import HFBackend

    return HFBackend(dtype="float32")


@pytest.fixture(scope="session")
def lora_adapters(tmp_path_factory, hf_backend):
    """Two PEFT LoRA adapter directories with random (non-zero) weights on the
    bundled model, so they visibly change its outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for i, targets in enumerate((["q_proj", "v_proj"], ["o_proj", "down_proj"])):
        torch.manual_seed(1234 + i)
        base = AutoModelForCausalLM.from_pretrained(hf_backend.model_path, local_files_only=True)
        peft_model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=targets, init_lora_weights=False))
        out = tmp_path_factory.mktemp(f"adapter{i}")
        peft_model.save_pretrained(out)
        paths.append(str(out))
    return paths


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, hf_backend):
    """A second base model of another architecture: a 2-layer Gemma 3 text model
    with random weights (sliding-window and global attention layers) and the bundled
    tokenizer, saved as a local Hugging Face directory. Its outputs are noise, but
    they are its own: enough to prove that requests reach the model they name."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma3TextConfig

    tokenizer = AutoTokenizer.from_pretrained(hf_backend.model_path, local_files_only=True)
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=16,
                              layer_types=["sliding_attention", "full_attention"], max_position_embeddings=4096,
                              bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(7)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    out = tmp_path_factory.mktemp("tiny-gemma3")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)
