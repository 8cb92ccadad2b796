"""Several base models behind one backend (fitness.backends.multi): routing by
``Request.model``, lazy loading with a bounded number resident, LoRA genes on their
own base model. Fakes for the mechanics; the bundled model beside a second, tiny
model of another architecture for the real thing (slow)."""

from __future__ import annotations

import pytest

from fitness.backends.base import Completion, Request, SamplingParams
from fitness.backends.factory import BackendSpec
from fitness.backends.multi import MultiModelBackend
from genomes.errors import InputError


class Echo:
    """A fake model that signs its completions with its name."""

    built: list[str] = []

    def __init__(self, name: str) -> None:
        self.name, self.seen, self.closed = name, [], False
        Echo.built.append(name)

    def generate(self, requests, progress=None):
        self.seen.append(len(requests))
        if progress:
            progress(len(requests))
        return [Completion(f"{self.name}:{r.messages[-1]['content']}", 1, 2, "stop") for r in requests]

    def count_tokens(self, text):
        return len(text.split())

    def materialise_lora(self, gene):
        return f"{self.name}/adapter"

    def close(self):
        self.closed = True


def multi(max_resident=2, names=("default", "big", "other")):
    Echo.built = []
    specs = {n: BackendSpec("fake", {"name": n}) for n in names}
    return MultiModelBackend(specs, "default", max_resident, build=lambda spec: Echo(spec.options["name"]))


def request(question: str, model: str = "") -> Request:
    return Request(({"role": "user", "content": question},), SamplingParams(max_new_tokens=4), model=model)


def test_requests_reach_the_model_they_name_in_input_order():
    backend = multi()
    requests = [request("a", "big"), request("b"), request("c", "default"), request("d", "big")]
    done = []
    out = backend.generate(requests, progress=lambda n, tokens=0: done.append(n))
    assert [c.text for c in out] == ["big:a", "default:b", "default:c", "big:d"]
    assert sum(done) == 4
    assert backend.backend("big").seen == [2]  # one batch per model, not one call per request


def test_models_load_lazily_and_the_least_recently_used_is_unloaded():
    backend = multi(max_resident=2)
    assert backend.resident == () and Echo.built == []
    backend.generate([request("a", "big")])
    assert Echo.built == ["big"]
    first_big = backend.backend("big")
    backend.generate([request("b")])
    backend.generate([request("c", "other")])  # evicts "big", the least recently used
    assert backend.resident == ("default", "other") and first_big.closed
    backend.generate([request("d", "big")])
    assert Echo.built == ["big", "default", "other", "big"] and backend.loads == 4


def test_a_call_serves_resident_models_before_loading_others():
    """With one model resident at a time, a call that needs two loads only the one
    missing: the resident model answers first, then gives way."""
    backend = multi(max_resident=1)
    backend.generate([request("warm", "big")])
    Echo.built = []
    out = backend.generate([request("x"), request("y", "big")])
    assert [c.text for c in out] == ["default:x", "big:y"]
    assert Echo.built == ["default"] and backend.resident == ("default",)


def test_unknown_model_is_a_clear_error_before_anything_loads():
    backend = multi()
    with pytest.raises(InputError, match="unknown model 'huge'.*default, big, other"):
        backend.generate([request("a"), request("b", "huge")])
    assert Echo.built == []


def test_lora_genes_are_materialised_on_their_base_model():
    from genomes.lora import LoraGene

    backend = multi()
    assert backend.materialise_lora(LoraGene(enabled=True, base="big")) == "big/adapter"
    assert backend.materialise_lora(LoraGene(enabled=True)) == "default/adapter"


def test_a_bad_setting_is_refused():
    with pytest.raises(InputError, match="max_resident_models"):
        MultiModelBackend({"default": BackendSpec()}, "default", 0, build=lambda s: None)
    with pytest.raises(InputError, match="primary model 'x'"):
        MultiModelBackend({"default": BackendSpec()}, "x", 1, build=lambda s: None)


# ---- real models ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("max_resident", [2, 1])
def test_two_real_models_answer_as_each_does_alone(hf_backend, tiny_model_dir, max_resident):
    """The bundled SmolLM2 and a tiny Gemma 3 behind one backend: every completion is
    the one its own model gives alone (greedy, float32), and the two models differ."""
    from fitness.backends.hf import HFBackend

    specs = {"default": BackendSpec("hf", {"model": "default", "dtype": "float32"}),
             "tiny": BackendSpec("hf", {"model": tiny_model_dir, "dtype": "float32"})}
    backend = MultiModelBackend(specs, "default", max_resident)
    questions = ["What is 2 + 3?", "Name a colour.", "Count to three."]
    requests = [request(q, model) for q in questions for model in ("", "tiny")]
    out = [c.text for c in backend.generate(requests)]
    tiny_alone = HFBackend(tiny_model_dir, dtype="float32")
    for r, text in zip(requests, out):
        alone = (tiny_alone if r.model == "tiny" else hf_backend).generate([r])[0].text
        assert text == alone
    assert out[0::2] != out[1::2]
    assert backend.count_tokens("two words") == hf_backend.count_tokens("two words")


@pytest.mark.slow
def test_a_lora_gene_on_the_second_model_changes_its_outputs(tiny_model_dir, tmp_path):
    from genomes.lora import LoraGene

    specs = {"default": BackendSpec("hf", {"model": "default", "dtype": "float32", "adapter_store": str(tmp_path / "a")}),
             "tiny": BackendSpec("hf", {"model": tiny_model_dir, "dtype": "float32",
                                        "adapter_store": str(tmp_path / "b")})}
    backend = MultiModelBackend(specs, "default", 2)
    gene = LoraGene(enabled=True, rank=4, alpha=64.0, mutations=((3, 0.5),), base="tiny")
    adapter = backend.materialise_lora(gene)
    assert adapter.startswith(str(tmp_path / "b"))
    plain, adapted = backend.generate([request("Hello there", "tiny"),
                                       Request(request("Hello there", "tiny").messages, SamplingParams(max_new_tokens=4),
                                               adapter=adapter, model="tiny")])
    assert plain.text != adapted.text


def test_a_byte_bound_unloads_the_least_recently_used_until_the_next_model_fits():
    """Sizes 3 / 5 / 4 (weight bytes) under a bound of 8: "default" + "big" fit; "other"
    needs the least recently used out, and then the next, until it fits; a model alone
    over the bound still loads, alone. Without a byte bound only the count bounds
    residency."""
    Echo.built = []
    sizes = {"default": 3, "big": 5, "other": 4}
    specs = {n: BackendSpec("fake", {"name": n}) for n in sizes}
    backend = MultiModelBackend(specs, "default", max_resident=3, build=lambda spec: Echo(spec.options["name"]),
                                max_resident_bytes=8, size_of=lambda spec: sizes[spec.options["name"]])
    backend.generate([request("a")])
    backend.generate([request("b", "big")])
    assert backend.resident == ("default", "big")  # 3 + 5 = 8 fits
    backend.generate([request("c", "other")])  # 4 more: "default" (LRU) goes, 5 + 4 = 9 still over: "big" too
    assert backend.resident == ("other",)
    backend.generate([request("d")])  # 4 + 3 = 7 fits
    assert backend.resident == ("other", "default")
    sizes["huge"] = 20
    specs["huge"] = BackendSpec("fake", {"name": "huge"})
    backend.specs["huge"] = specs["huge"]
    backend.generate([request("e", "huge")])
    assert backend.resident == ("huge",)
    unbounded = multi(max_resident=3)
    for model in ("default", "big", "other"):
        unbounded.generate([request("x", model)])
    assert unbounded.resident == ("default", "big", "other")


def test_weight_bytes_sums_the_weight_files_of_a_model_directory(tmp_path):
    from fitness.backends.multi import weight_bytes

    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "model.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / "tokenizer.json").write_text("{}" * 100)
    assert weight_bytes(BackendSpec("hf", {"model": str(tmp_path)})) == 1000
