"""LoRA genes on the real bundled model: materialisation is bit-identical across
processes, the PEFT directory loads as it is, evaluation mixes adapters in a batch."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from conformance import QUESTIONS, make_request

from fitness.backends.lora_weights import AdapterStore, decoder_linears
from genomes.lora import LoraGene, mut_lora_perturb

pytestmark = pytest.mark.slow

GENE = mut_lora_perturb(LoraGene(enabled=True, rank=8, init_seed=7), __import__("random").Random(3), sigmas=(0.05,))


def _digest(path) -> str:
    import hashlib

    return hashlib.sha256((path / "adapter_model.safetensors").read_bytes()).hexdigest()


def test_same_gene_same_bytes_in_another_process(hf_backend, tmp_path):
    here = AdapterStore(tmp_path / "a").path_for(GENE, hf_backend.base_model)
    code = (
        "import sys, random; from fitness.backends.hf import HFBackend; "
        "from fitness.backends.lora_weights import AdapterStore; "
        "from genomes.lora import LoraGene, mut_lora_perturb; "
        "g = mut_lora_perturb(LoraGene(enabled=True, rank=8, init_seed=7), random.Random(3), sigmas=(0.05,)); "
        "print(AdapterStore(sys.argv[1]).path_for(g, HFBackend().base_model))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "b")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    there = type(here)(out.stdout.strip().splitlines()[-1])
    assert _digest(here) == _digest(there)


def test_materialised_adapter_loads_in_peft_with_the_gene_shapes(hf_backend, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    path = AdapterStore(tmp_path).path_for(GENE, hf_backend.base_model)
    assert AdapterStore(tmp_path).path_for(GENE, hf_backend.base_model) == path  # cached by weights hash
    base = AutoModelForCausalLM.from_pretrained(hf_backend.model_path, local_files_only=True)
    n_layers = 1 + max(layer for layer, _ in decoder_linears(base))
    model = PeftModel.from_pretrained(base, str(path))
    lora_a = {n: p for n, p in model.named_parameters() if "lora_A" in n}
    lora_b = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert len(lora_a) == len(lora_b) == n_layers * len(GENE.targets)
    assert all(p.shape[0] == 8 for p in lora_a.values())
    assert all(p.abs().sum() > 0 for p in lora_b.values())  # the perturbation made B non-zero


def test_genes_change_outputs_and_mix_in_one_batch(hf_backend):
    other = dataclasses.replace(GENE, init_seed=8)
    dirs = [hf_backend.materialise_lora(GENE), hf_backend.materialise_lora(other)]
    requests = [make_request(QUESTIONS[0], adapter=None), make_request(QUESTIONS[0], adapter=dirs[0]),
                make_request(QUESTIONS[0], adapter=dirs[1])]
    mixed = [c.text for c in hf_backend.generate(requests)]
    alone = [hf_backend.generate([r])[0].text for r in requests]
    assert mixed == alone
    assert len(set(mixed)) == 3  # each adapter changes what the model says


def test_a_gene_without_weights_is_the_base_model(hf_backend):
    from fitness.evaluate import adapter_of
    from genomes.strategy import Strategy

    assert adapter_of(Strategy(lora=LoraGene(enabled=True)), hf_backend) is None  # B = 0: no-op adapter
    assert adapter_of(Strategy(lora=dataclasses.replace(GENE, enabled=False)), hf_backend) is None
    assert adapter_of(Strategy(lora=GENE), hf_backend).endswith(GENE.weights_hash())


def test_a_damaged_cached_adapter_is_made_again(hf_backend, tmp_path, capsys):
    path = AdapterStore(tmp_path).path_for(GENE, hf_backend.base_model)
    good = (path / "adapter_model.safetensors").read_bytes()
    damaged = bytearray(good)
    damaged[-64:] = bytes(64)  # the last weights zeroed: still loads, silently wrong
    (path / "adapter_model.safetensors").write_bytes(bytes(damaged))
    again = AdapterStore(tmp_path).path_for(GENE, hf_backend.base_model)  # a new process's store
    assert again == path and (path / "adapter_model.safetensors").read_bytes() == good
    assert "cached adapter" in capsys.readouterr().err


def test_a_damaged_trained_adapter_is_one_clear_error(hf_backend, tmp_path):
    import dataclasses

    from fitness.backends.lora_weights import adapter_hash
    from genomes.errors import InputError

    made = AdapterStore(tmp_path / "cache").path_for(GENE, hf_backend.base_model)
    trained_hash = adapter_hash(made)
    stored = tmp_path / "cache" / "trained" / trained_hash
    stored.mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (stored / name).write_bytes((made / name).read_bytes())
    gene = dataclasses.replace(GENE, source="trained", trained_hash=trained_hash, mutations=())
    assert AdapterStore(tmp_path / "cache").path_for(gene, hf_backend.base_model) == stored
    data = bytearray((stored / "adapter_model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (stored / "adapter_model.safetensors").write_bytes(bytes(data))
    with pytest.raises(InputError, match="is damaged"):
        AdapterStore(tmp_path / "cache").path_for(gene, hf_backend.base_model)
