"""`evo export`: strategies come back as files `evo eval` accepts; LoRA individuals
as PEFT directories that PeftModel loads as they are."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
from fakes import ArithmeticOracle, config

from evo.rundir import checkpoint
from evo.engine.run import run_evolution
from evo.rundir.export import ancestry, export_top, rank_by_validation, render_template, validation_scores
from genomes.errors import InputError
from genomes.strategy import Strategy


@pytest.fixture
def finished_run(tmp_path):
    run_evolution(config(tmp_path, run={"generations": 2}), backend=ArithmeticOracle(), show_progress=False)
    return tmp_path / "t"


def test_export_top_k_strategies(finished_run, tmp_path):
    out = tmp_path / "export"
    written = export_top(finished_run, 2, out)
    saved = checkpoint.load_latest(finished_run)
    hall = [saved.state["individuals"][i] for i in saved.state["hall"]]
    assert len(written) == 2
    for rank, (path, row) in enumerate(zip(written, hall), 1):
        strategy = Strategy.load(path / "strategy.json")
        assert strategy == Strategy.decode(row["strategy"])
        assert path.name == f"rank-{rank}-{strategy.content_hash()}"
        prompt = (path / "prompt.txt").read_text()
        assert "{question}" in prompt and strategy.prompt.role in prompt
        card = json.loads((path / "card.json").read_text())
        assert card["fitness"] == row["fitness"] and card["lineage"][0]["id"] == row["id"]
        assert not (path / "adapter").exists()  # no LoRA gene, no adapter
    index = json.loads((out / "index.json").read_text())
    assert [entry["rank"] for entry in index] == [1, 2]
    assert index[0]["validation_accuracy"] == saved.state["metrics"][-1]["heldout_accuracy"]
    assert saved.state["metrics"][-1]["heldout_split"] == "validation"
    from evo.cli.eval import load_eval_config

    assert load_eval_config(str(out)).to_dict() == saved.state["config"]  # `evo eval --config DIR` reads the run's


def test_export_ranks_by_validation_then_training_fitness(tmp_path):
    """With several hall members scored on validation, the one that validates best is
    exported first, whatever its training fitness; members never scored follow in
    hall order."""
    run_evolution(config(tmp_path, run={"generations": 1}, tasks={"heldout_top": 2}), backend=ArithmeticOracle(),
                  show_progress=False)
    run = tmp_path / "t"
    saved = checkpoint.load_latest(run)
    hall = [Strategy.decode(saved.state["individuals"][i]["strategy"]).content_hash() for i in saved.state["hall"]]
    scores = saved.state["metrics"][-1]["validation_scores"]
    assert list(scores) == hall[:2]
    assert rank_by_validation([{"strategy": Strategy.decode(saved.state["individuals"][i]["strategy"]).encode()}
                               for i in saved.state["hall"]], {hall[1]: 0.9, hall[0]: 0.1})[0]["strategy"] \
        == Strategy.decode(saved.state["individuals"][saved.state["hall"][1]]["strategy"]).encode()
    rows = [{"strategy": Strategy.decode(saved.state["individuals"][i]["strategy"]).encode()} for i in saved.state["hall"]]
    order = [Strategy.decode(r["strategy"]).content_hash() for r in rank_by_validation(rows, {hall[2]: 0.5})]
    assert order == [hall[2], hall[0], hall[1], *hall[3:]]
    assert validation_scores({"best_hash": "abc", "heldout_accuracy": 0.25}) == {"abc": 0.25}  # an older run


def test_ancestry_walks_every_parent():
    lineage = {
        0: {"generation": 0, "op": "seed", "parents": []},
        1: {"generation": 0, "op": "seed", "parents": []},
        2: {"generation": 1, "op": "cx_strategy", "parents": [0, 1]},
        3: {"generation": 2, "op": "mut_chain", "parents": [2]},
    }
    assert [a["id"] for a in ancestry(lineage, 3)] == [3, 2, 0, 1]


def test_export_errors(tmp_path, finished_run):
    with pytest.raises(InputError, match="not found"):
        export_top(tmp_path / "missing", 1, tmp_path / "o")
    with pytest.raises(InputError, match="--top"):
        export_top(finished_run, 0, tmp_path / "o")
    proc = subprocess.run([sys.executable, "-m", "evo.cli.main", "export", str(tmp_path / "missing"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "not found" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_lora_individual_exports_a_peft_directory_that_loads(tmp_path, lora_adapters, hf_backend):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    seed = Strategy(name="with-lora", lora={"adapter_dir": lora_adapters[0]})
    seed_file = tmp_path / "seed.json"
    seed.save(seed_file)
    cfg = config(tmp_path, run={"generations": 1}, population={"seeds": [str(seed_file)]})
    run_evolution(cfg, backend=ArithmeticOracle(), show_progress=False)
    written = export_top(tmp_path / "t", 1, tmp_path / "export")
    adapter = written[0] / "adapter"
    assert sorted(p.name for p in adapter.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert "library_name: peft" in (adapter / "README.md").read_text()

    base = AutoModelForCausalLM.from_pretrained(hf_backend.model_path, local_files_only=True)
    model = PeftModel.from_pretrained(base, str(adapter))
    exported = load_file(str(adapter / "adapter_model.safetensors"))
    original = load_file(f"{lora_adapters[0]}/adapter_model.safetensors")
    assert exported.keys() == original.keys()
    assert all(torch.equal(exported[k], original[k]) for k in exported)
    loaded = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert loaded and all(p.abs().sum() > 0 for p in loaded.values())  # real weights, not an empty init


def test_template_of_a_per_question_exemplar_choice_says_so():
    fewshot = Strategy.load("fewshot")
    nearest = replace(fewshot, prompt=replace(fewshot.prompt, exemplar_choice="nearest_only"))
    plain, chosen = render_template(fewshot), render_template(nearest)
    assert not plain.startswith("#")
    assert chosen.startswith("# exemplar_choice = nearest_only") and chosen.endswith(plain)
    for exemplar in fewshot.prompt.exemplars:  # every exemplar is in the template
        assert exemplar.question in chosen


def test_a_lora_gene_of_another_model_exports_an_adapter_of_that_model(tmp_path, tiny_model_dir):
    """A multi-model run's LoRA gene made for its second model comes from that model's
    store, with that model's shapes (the primary model's would not load on it)."""
    from safetensors import safe_open

    from evo.config.sections import load_config
    from evo.rundir.export import adapter_source
    from genomes.lora import LoraGene

    toml = tmp_path / "two.toml"
    toml.write_text(f'[model]\nmodels = ["default", "tiny"]\n[models.tiny]\nsource = "{tiny_model_dir}"\n')
    run_config = load_config(toml).to_dict()
    gene = LoraGene(enabled=True, rank=4, targets=("q_proj", "v_proj"), init_seed=3, mutations=((9, 0.01),), base="tiny")
    strategy = Strategy.decode({"name": "on-tiny", "decoding": {"model": "tiny"}, "lora": gene.encode()})
    path = adapter_source(strategy, tmp_path / "run", run_config)
    assert path.parent == tmp_path / "run" / "adapters" / "model-tiny"
    with safe_open(str(path / "adapter_model.safetensors"), "pt") as weights:
        shapes = {weights.get_tensor(name).shape[-1] for name in weights.keys() if "lora_A" in name}
    assert shapes == {64}  # the tiny model's hidden size (the bundled model's is 576)
