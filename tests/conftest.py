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
