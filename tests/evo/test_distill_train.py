"""`evo distill --train` and `evo resume --inject-adapter`: the adapter is trained for
real (TRL DPO on the bundled model) and goes back into a population."""

from __future__ import annotations

import json

import pytest
from fakes import ArithmeticOracle, config, read_jsonl

from evo.rundir import checkpoint
from evo.cli.main import main
from evo.distill.pairs import Lineages, PairRules, build_pairs, read_pairs
from evo.distill.train import TrainSettings, adapter_hash, sft_weight, train_adapter, trained_gene
from evo.engine.run import resume_evolution, run_evolution
from evo.rundir.inject import import_adapter
from fitness.evaluate import ExampleResult
from genomes.chat_format import format_completion
from genomes.errors import InputError
from genomes.lora import LoraGene

WEIGHTS = {"alpha": 1.0, "beta": 1.0, "gamma": 0.2, "delta": 0.2}


def test_sft_weight_maps_gamma_relative_to_alpha_and_beta():
    assert sft_weight(1.0, 1.0, 0.2) == pytest.approx(0.2)
    assert sft_weight(2.0, 0.0, 0.5) == pytest.approx(0.5)
    assert sft_weight(1.0, 1.0, 0.0) == 0.0
    with pytest.raises(InputError, match="α \\+ β"):
        sft_weight(0.0, 0.0, 1.0)


def test_bad_training_settings_name_the_flag():
    for settings, flag in ((TrainSettings(steps=0), "--steps"), (TrainSettings(rank=0), "--rank"),
                           (TrainSettings(learning_rate=0.0), "--learning-rate"),
                           (TrainSettings(targets=("embed_tokens",)), "--targets")):
        with pytest.raises(InputError, match=flag):
            settings.check()


def _result(genome, task, question, a, b, correct):
    answer = str(a + b) if correct else str(a + b + 1)
    text = format_completion([f"{a} + {b} = {answer}"], answer, f"The sum is {answer}.")
    return ExampleResult(genome, task, "basic_arithmetic", 0, 0.0, question, str(a + b), answer, None,
                         1.0 if correct else 0.0, (f"{a} + {b} = {answer}",), f"The sum is {answer}.", 6, 12, "stop", 1,
                         text)


def _pairs_file(tmp_path):
    results = []
    for i, (a, b) in enumerate(((2, 3), (7, 5), (11, 4), (6, 9))):
        question = f"What is {a} + {b}?"
        results += [_result("best", f"t{i}", question, a, b, True), _result("other", f"t{i}", question, a, b, False)]
    pairs = build_pairs(results, Lineages({"best": (1,)}, 1), PairRules())
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p.to_trl()) + "\n" for p in pairs))
    return path


@pytest.mark.slow
def test_real_dpo_steps_change_the_adapter_and_store_it(tmp_path, hf_backend):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from fitness.backends.lora_weights import AdapterStore

    rows = read_pairs(_pairs_file(tmp_path))  # the JSONL loads in TRL's DPOTrainer below
    settings = TrainSettings(steps=2, batch_size=2, rank=4, targets=("q_proj", "v_proj"), max_length=256)
    trained = train_adapter(rows, tmp_path / "run", WEIGHTS, settings)

    assert trained.path == tmp_path / "run" / "adapters" / "trained" / trained.trained_hash
    assert adapter_hash(trained.path) == trained.trained_hash
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "training.json"} <= \
        {p.name for p in trained.path.iterdir()}
    assert [e["step"] for e in trained.record["log"] if "loss" in e] == [1, 2]
    assert trained.record["sft_weight"] == pytest.approx(0.2)
    tensors = load_file(str(trained.path / "adapter_model.safetensors"))
    b_norms = [t.abs().sum().item() for name, t in tensors.items() if "lora_B" in name]
    assert b_norms and all(n > 0 for n in b_norms)  # PEFT starts B at exactly 0: training moved it
    assert trained.gene == trained_gene(trained.path)
    assert (trained.gene.source, trained.gene.rank, trained.gene.targets) == ("trained", 4, ("q_proj", "v_proj"))

    base = AutoModelForCausalLM.from_pretrained(hf_backend.model_path, local_files_only=True)
    loaded = PeftModel.from_pretrained(base, str(trained.path))
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in loaded.named_parameters())

    # the gene resolves from the run's adapter store; a mutation adds its noise on top
    store = AdapterStore(tmp_path / "run" / "adapters")
    assert store.path_for(trained.gene, hf_backend.base_model) == trained.path
    mutated = LoraGene(**{**trained.gene.__dict__, "mutations": ((7, 0.01),)})
    noisy = load_file(str(store.path_for(mutated, hf_backend.base_model) / "adapter_model.safetensors"))
    assert noisy.keys() == tensors.keys()
    diffs = [(noisy[k] - tensors[k]).abs().max().item() for k in tensors]
    assert all(0 < d < 0.1 for d in diffs)


class LoraOracle(ArithmeticOracle):
    """The scripted backend, able to "serve" LoRA genes (it ignores the weights)."""

    def materialise_lora(self, gene):
        return f"adapter-{gene.weights_hash()}"


def _fake_adapter(path, targets=("q_proj", "v_proj")):
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    LoraConfig(r=4, lora_alpha=8, target_modules=list(targets), task_type="CAUSAL_LM").save_pretrained(str(path))
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.ones(4, 8)},
              str(path / "adapter_model.safetensors"))
    return path


def test_inject_adds_individuals_carrying_the_adapter(tmp_path):
    cfg = config(tmp_path, run={"generations": 2})
    run_evolution(cfg, backend=LoraOracle(), show_progress=False)
    adapter = _fake_adapter(tmp_path / "adapter")
    backend = LoraOracle()
    resume_evolution(cfg.run_dir, generations=3, backend=backend, show_progress=False, inject_adapters=[adapter])

    trained_hash = adapter_hash(adapter)
    assert (cfg.run_dir / "adapters" / "trained" / trained_hash / "adapter_model.safetensors").is_file()
    injected = [row for row in read_jsonl(cfg.run_dir / "lineage.jsonl") if row["op"] == "inject"]
    assert len(injected) == 2 and all(row["generation"] == 3 for row in injected)
    for row in injected:
        lora = row["strategy"]["lora"]
        assert lora["source"] == "trained" and lora["trained_hash"] == trained_hash and lora["enabled"]
    assert {r.adapter for r in backend.requests} >= {f"adapter-{trained_gene(adapter).weights_hash()}"}
    saved = checkpoint.load_latest(cfg.run_dir)
    ops = [saved.state["individuals"][i]["op"] for i in saved.state["population"]]
    assert saved.generation == 3 and len(ops) == cfg.population.size  # selection trimmed the grown population


def test_bad_adapters_are_refused_before_anything_changes(tmp_path, capsys):
    cfg = config(tmp_path, run={"generations": 1})
    run_evolution(cfg, backend=LoraOracle(), show_progress=False)
    with pytest.raises(InputError, match="no such directory"):
        import_adapter(cfg.run_dir, tmp_path / "missing")
    with pytest.raises(InputError, match="lacks adapter_model.safetensors"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "adapter_config.json").write_text("{}")
        import_adapter(cfg.run_dir, tmp_path / "empty")
    with pytest.raises(InputError, match="lm_head"):
        import_adapter(cfg.run_dir, _fake_adapter(tmp_path / "head", targets=("lm_head",)))
    assert not (cfg.run_dir / "adapters" / "trained").exists() or not any((cfg.run_dir / "adapters" / "trained").iterdir())
    assert main(["resume", str(cfg.run_dir), "--generations", "2", "--inject-adapter", str(tmp_path / "missing")]) == 2
    assert "--inject-adapter: no such directory" in capsys.readouterr().err
    with pytest.raises(InputError, match="--generations 2 or more"):  # nothing would score the injected ones
        resume_evolution(cfg.run_dir, backend=LoraOracle(), show_progress=False,
                         inject_adapters=[_fake_adapter(tmp_path / "ok")])
    assert json.loads((cfg.run_dir / "config.json").read_text())["run"]["generations"] == 1
    assert checkpoint.load_latest(cfg.run_dir).generation == 1
