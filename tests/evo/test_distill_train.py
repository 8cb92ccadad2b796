"""`evo distill --train` and `evo resume --inject-adapter`: the adapter is trained for
real (TRL DPO on the bundled model) and goes back into a population."""

from __future__ import annotations

import json

import pytest
from fakes import ArithmeticOracle, config, read_jsonl

from evo.rundir import checkpoint
from evo.cli.main import main
from evo.distill.pairs import Lineages, PairRules, build_pairs, read_pairs
from evo.distill.token_weights import SegmentWeights
from evo.distill.train import TrainSettings, adapter_hash, segment_weights, train_adapter, trained_gene
from evo.engine.run import resume_evolution, run_evolution
from evo.rundir.inject import import_adapter
from fitness.evaluate import ExampleResult
from genomes.chat_format import format_completion
from genomes.errors import InputError
from genomes.lora import LoraGene

WEIGHTS = {"alpha": 1.0, "beta": 1.0, "gamma": 0.2, "delta": 0.2}


def test_loss_weights_become_segment_weights():
    assert segment_weights(WEIGHTS) == SegmentWeights(chain=1.0, answer=1.0, response=0.2)
    with pytest.raises(InputError, match="α \\+ β \\+ γ"):
        segment_weights({"alpha": 0.0, "beta": 0.0, "gamma": 0.0, "delta": 1.0})
    with pytest.raises(InputError, match="--sft"):
        TrainSettings(sft=-1.0).check()


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
    trained = train_adapter(rows, tmp_path / "run", WEIGHTS, settings, example_weights=[1.5, 0.5, 1.0, 1.0][:len(rows)])

    assert trained.path == tmp_path / "run" / "adapters" / "trained" / trained.trained_hash
    assert adapter_hash(trained.path) == trained.trained_hash
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "training.json"} <= \
        {p.name for p in trained.path.iterdir()}
    assert [e["step"] for e in trained.record["log"] if "loss" in e] == [1, 2]
    assert trained.record["sft_weight"] == 1.0 and trained.record["token_weights"]["response"] == 0.2
    assert trained.record["example_weights"] == {"min": 0.5, "max": 1.5}
    assert any("sft_loss" in e for e in trained.record["log"]) and any("pref_loss" in e for e in trained.record["log"])
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


def _trainer(tmp_path, hf_backend, segments, sft, rows):
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evo.distill.train import _dpo_config
    from evo.distill.weighted_trainer import weighted_trainer

    tokenizer = AutoTokenizer.from_pretrained(hf_backend.model_path, local_files_only=True)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(hf_backend.model_path, local_files_only=True, dtype=torch.float32)
    base.config.pad_token_id = tokenizer.pad_token_id
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, task_type="CAUSAL_LM",
                      init_lora_weights=False)  # non-zero B: policy and reference differ from the start
    settings = TrainSettings(steps=1, batch_size=2, max_length=256)
    trainer = weighted_trainer(tokenizer, segments, sft, model=base, args=_dpo_config(settings, tmp_path, "cpu", True),
                               train_dataset=Dataset.from_list(rows), peft_config=lora)
    return trainer, tokenizer


@pytest.mark.slow
def test_weighted_loss_is_trl_dpo_at_unit_weights_and_weights_the_segments(tmp_path, hf_backend):
    """α = β = γ = 1, no SFT, δ = 0: the loss is TRL's own sigmoid DPO loss on the same
    batch. And the collator gives the answer block's tokens β, the chain's α."""
    import torch

    rows = read_pairs(_pairs_file(tmp_path))[:2]
    trainer, tokenizer = _trainer(tmp_path, hf_backend, SegmentWeights(1.0, 1.0, 1.0), 0.0, rows)
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model
    with torch.no_grad():
        ours = trainer.compute_loss(model, batch).item()
        plain = {k: v for k, v in batch.items() if k not in ("token_weights", "example_weight")}
        theirs = trainer._compute_loss(model, plain, False).item()
    assert ours == pytest.approx(theirs, rel=1e-4, abs=1e-5) and ours > 0
    # the reference's sums are kept per sequence: the same batch again runs the policy only
    forwards = []
    hook = model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    with torch.no_grad():
        again = trainer.compute_loss(model, batch).item()
    hook.remove()
    assert again == pytest.approx(ours, rel=1e-6) and len(forwards) == 1 and len(trainer.reference_sums) == 4

    trainer, _ = _trainer(tmp_path, hf_backend, SegmentWeights(chain=0.5, answer=3.0, response=0.0), 1.0, rows)
    batch = next(iter(trainer.get_train_dataloader()))
    row = batch["input_ids"][0]
    weights = batch["token_weights"][0]
    text = lambda w: tokenizer.decode(row[weights == w])  # noqa: E731
    assert "<begin_constrained_output>" in text(3.0) and "<end_constrained_output>" in text(3.0)
    assert "<cot>" in text(0.5) and "<begin_constrained_output>" not in text(0.5)
    assert "<begin_response>" not in text(3.0) + text(0.5)  # γ = 0: the response block weighs nothing
    assert (weights[batch["completion_mask"][0] == 0] == 0).all()  # the prompt weighs nothing
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    assert torch.isfinite(loss)


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


def test_exported_trained_adapters_are_staged_only_when_their_content_matches(tmp_path):
    import dataclasses

    from evo.rundir.inject import stage_exported_adapters
    from genomes.strategy import Strategy

    adapter = _fake_adapter(tmp_path / "exported" / "rank-1-x" / "adapter")
    other = _fake_adapter(tmp_path / "exported" / "rank-2-y" / "adapter", targets=("o_proj",))
    strategy = dataclasses.replace(Strategy.decode({"name": "tuned"}), lora=trained_gene(adapter))
    store = tmp_path / "store"
    with pytest.raises(InputError, match="its trained adapter .* is neither in"):
        stage_exported_adapters([strategy], lambda s: store, [other])  # another adapter's content: not it
    assert not (store / "trained").exists() or not any((store / "trained").iterdir())
    stage_exported_adapters([strategy], lambda s: store, [other, adapter])
    staged = store / "trained" / adapter_hash(adapter)
    assert adapter_hash(staged) == adapter_hash(adapter)
    stage_exported_adapters([strategy], lambda s: store, [])  # already there: nothing needed


def test_export_carries_the_trained_adapters_its_strategies_build_on(tmp_path):
    import dataclasses

    from evo.rundir.export import export_trained_adapters
    from genomes.strategy import Strategy

    cfg = config(tmp_path, run={"generations": 1})
    gene = import_adapter(cfg.run_dir, _fake_adapter(tmp_path / "adapter"))
    noisy = dataclasses.replace(gene, mutations=((5, 0.01),))  # noise on top: the rank's adapter/ differs
    plain = Strategy.decode({"name": "plain"})
    tuned = [dataclasses.replace(plain, name=f"t{i}", lora=g) for i, g in enumerate((gene, noisy))]
    export_trained_adapters([plain, *tuned], cfg.run_dir, cfg.to_dict(), tmp_path / "out" / "trained-adapters")
    copied = list((tmp_path / "out" / "trained-adapters").iterdir())
    assert [p.name for p in copied] == [gene.trained_hash] and adapter_hash(copied[0]) == gene.trained_hash
