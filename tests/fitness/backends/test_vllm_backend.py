"""vllm backend: the shared conformance checks on a GPU (skipped cleanly without vllm
or CUDA), plus the CPU-testable parts: adapter names and ids by content, and LoRA
materialisation from a weightless model copy."""

from __future__ import annotations

import shutil

import pytest
from conformance import QUESTIONS, BackendConformance, make_request

from fitness.backends.vllm_engine import AdapterRegistry, adapter_content_hash, meta_model, vllm_max_lora_rank


def _gpu_vllm_available() -> bool:
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


needs_gpu = pytest.mark.skipif(not _gpu_vllm_available(), reason="needs the vllm package and a CUDA GPU")


@pytest.fixture(scope="module")
def vllm_backend(tmp_path_factory):
    from fitness.backends.vllm_engine import VLLMBackend

    return VLLMBackend(max_loras=4, max_lora_rank=8, gpu_memory_utilization=0.5,
                       materialise_dir=tmp_path_factory.mktemp("vllm-adapters"))


@pytest.fixture
def backend(vllm_backend):
    return vllm_backend


@pytest.mark.gpu
@pytest.mark.vllm
@needs_gpu
class TestVLLMConformance(BackendConformance):
    def test_reused_adapter_path_with_new_weights_is_not_stale(self, backend, lora_adapters, tmp_path):
        # the same directory name, other weights: a name reused by path would serve the old ones
        path = tmp_path / "adapter"
        shutil.copytree(lora_adapters[0], path)
        first = backend.generate([make_request(QUESTIONS[0], adapter=str(path))])[0].text
        shutil.rmtree(path)
        shutil.copytree(lora_adapters[1], path)
        second = backend.generate([make_request(QUESTIONS[0], adapter=str(path))])[0].text
        expected = backend.generate([make_request(QUESTIONS[0], adapter=lora_adapters[1])])[0].text
        assert second == expected and second != first


@pytest.mark.gpu
@pytest.mark.vllm
@needs_gpu
def test_vllm_greedy_agrees_with_hf_mostly(vllm_backend, hf_backend):
    # bf16 kernels vs float32 on CPU: not bit-identical, but the same model
    requests = [make_request(q, max_new_tokens=8) for q in QUESTIONS]
    ours = [c.text for c in vllm_backend.generate(requests)]
    ref = [c.text for c in hf_backend.generate(requests)]
    assert sum(a.split()[:2] == b.split()[:2] for a, b in zip(ours, ref)) >= 3


def test_max_lora_rank_rounds_up_to_a_rank_vllm_accepts():
    from genomes.errors import InputError

    assert [vllm_max_lora_rank(r) for r in (1, 4, 8, 12, 16, 300, 512)] == [1, 8, 8, 16, 16, 320, 512]
    with pytest.raises(InputError, match="max_lora_rank"):
        vllm_max_lora_rank(513)


def test_registry_names_and_ids_follow_content(tmp_path, lora_adapters):
    registry = AdapterRegistry()
    copy = tmp_path / "copy"
    shutil.copytree(lora_adapters[0], copy)
    a = registry.name_and_id(lora_adapters[0])
    assert registry.name_and_id(str(copy)) == a  # same content, same name and id
    b = registry.name_and_id(lora_adapters[1])
    assert a[0] != b[0] and a[1] != b[1] and a[1] > 0 and b[1] > 0
    assert a[0] == f"evo-{adapter_content_hash(copy)[:16]}"


def test_registry_ids_never_collide(tmp_path, lora_adapters, monkeypatch):
    import fitness.backends.vllm_engine as engine

    hashes = iter(["00000005" + "a" * 56, "00000005" + "b" * 56])  # same id prefix, other content
    monkeypatch.setattr(engine, "adapter_content_hash", lambda path: next(hashes))
    registry = AdapterRegistry()
    first = registry.name_and_id(lora_adapters[0])
    second = registry.name_and_id(lora_adapters[1])
    assert first == ("evo-00000005aaaaaaaa", 5) and second[1] == 6


def test_registry_missing_adapter_is_a_clear_error(tmp_path):
    from genomes.errors import InputError

    with pytest.raises(InputError, match="lacks adapter_model.safetensors"):
        AdapterRegistry().name_and_id(str(tmp_path))


@pytest.mark.slow
def test_materialising_from_a_weightless_model_gives_the_same_bytes(hf_backend, tmp_path):
    from fitness.backends.lora_weights import AdapterStore
    from genomes.lora import LoraGene

    gene = LoraGene(enabled=True, rank=4, targets=("q_proj", "v_proj"), init_seed=3, mutations=((9, 0.01),))
    from_meta = AdapterStore(tmp_path / "meta").path_for(gene, meta_model(hf_backend.model_path))
    from_real = AdapterStore(tmp_path / "real").path_for(gene, hf_backend.base_model)
    assert (from_meta / "adapter_model.safetensors").read_bytes() == (from_real / "adapter_model.safetensors").read_bytes()
