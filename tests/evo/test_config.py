"""Run configs: defaults, round-trip, and errors that name the field before any
model loads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from evo.config.sections import RunConfig, load_config
from genomes.errors import InputError


def test_recipes_load():
    for name in ("quickstart", "lora", "tune", "gpu", "ray", "search", "custom_tasks", "models", "tune_train", "any_family"):
        load_config(f"runs/{name}.toml")
    assert load_config("runs/gpu.toml").model.backend == "vllm"
    assert load_config("runs/ray.toml").model.ray_actors == 2


def test_quickstart_recipe_loads_and_round_trips():
    config = load_config("runs/quickstart.toml")
    assert config.run.name == "quickstart" and config.population.size == 6
    assert RunConfig.from_dict(config.to_dict()) == config


def test_empty_config_gives_defaults(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("")
    assert load_config(path) == RunConfig()


def test_yaml_config_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run:\n  name: y\n  generations: 7\nloss:\n  alpha: 2\n")
    config = load_config(path, {"run": {"generations": 2}})
    assert (config.run.name, config.run.generations, config.loss.alpha) == ("y", 2, 2.0)


@pytest.mark.parametrize(
    "text, field",
    [
        ("[population]\nsize = -3\n", "population.size"),
        ("[population]\noperators = ['mut_prompt', 'mut_everything']\n", "population.operators[1]"),
        ("[loss]\nalpha = 'high'\n", "loss.alpha"),
        ("[loss]\ngamma = -1.0\n", "loss.gamma"),
        ("[population]\nlora_sigmas = [0.123]\n", "population.lora_sigmas"),
        ("[population]\nlora_sigmas = ['big']\n", "population.lora_sigmas"),
        ("[model]\nbackend = 'tgi'\n", "model.backend"),
        ("[model]\nray_actors = -1\n", "model.ray_actors"),
        ("[model]\ngpu_memory_utilization = 1.5\n", "model.gpu_memory_utilization"),
        ("[loss]\ndelta = nan\n", "loss.delta"),
        ("[run]\ngenerations = 0\n", "run.generations"),
        ("[population]\nmode = 'pareto'\n", "population.mode"),
        ("[population]\ncrossover_prob = 0.8\nmutation_prob = 0.5\n", "population.mutation_prob"),
        ("[populaton]\nsize = 3\n", "populaton"),
        ("[tasks]\nper_famly = 3\n", "tasks.per_famly"),
        ("[tasks]\nfamilies = []\n", "tasks.families"),
        ("[tasks]\nrotate_every = -1\n", "tasks.rotate_every"),
        ("[tasks]\nrotate_every = 'often'\n", "tasks.rotate_every"),
        ("[population]\nhall_min_batches = 0\n", "population.hall_min_batches"),
        ("[population]\nhall_min_batches = 2\n", "population.hall_min_batches"),  # without rotation
        ("[curriculum]\nup_threshold = 0.1\ndown_threshold = 0.5\n", "curriculum.up_threshold"),
        ("[curriculum]\nmin_evidence = 9\n", "curriculum.min_evidence"),  # more than the window holds
        ("[curriculum]\nmin_evidence = 0\n", "curriculum.min_evidence"),
        ("[population]\nsize = true\n", "population.size"),
        ("[model]\nmodels = ['default', 'other-model']\n", "model.models[1]"),  # no [models.other-model]
        ("[models.big]\ndtype = 'float32'\n", "models.big.source"),
        ("[models.big]\nsource = 'default'\ncost = 0\n", "models.big.cost"),
        ("[models.big]\nsource = 'default'\nmax_context = -1\n", "models.big.max_context"),
        ("[models.big]\nsource = 'default'\ndtype = 'int4'\n", "models.big.dtype"),
        ("[models.big]\nsorce = 'default'\n", "models.big.sorce"),
        ("[models.default]\nsource = 'default'\n", "models.default"),
        ("[tasks]\nheldout_fraction = 0.0\n", "tasks.heldout_fraction"),
    ],
)
def test_bad_values_name_the_field(tmp_path, text, field):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_config(path)
    assert field in str(err.value)


def test_malformed_and_missing_files(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[run\n")
    with pytest.raises(InputError, match="malformed TOML"):
        load_config(path)
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "nope.toml")


def _evo_run(*args):
    return subprocess.run([sys.executable, "-m", "evo.cli.main", "run", *args], capture_output=True, text=True, timeout=120)


def test_cli_rejects_bad_config_before_loading_a_model(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[population]\nsize = -1\n[model]\nname = 'default'\n")
    proc = _evo_run(str(path))
    assert proc.returncode == 2 and "population.size" in proc.stderr and "Traceback" not in proc.stderr
    path.write_text("[tasks]\nfamilies = ['chain_sum', 'not_a_family']\n")
    proc = _evo_run(str(path))
    assert proc.returncode == 2 and "tasks.families[1]" in proc.stderr
    path.write_text(f"[model]\nname = '{tmp_path / 'missing-model'}'\n")
    proc = _evo_run(str(path))
    assert proc.returncode == 2 and "missing-model" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_a_seed_naming_another_model_is_refused_before_any_model_loads(tmp_path):
    """A strategy that names a model the run does not serve is an error, not a
    silent no-op."""
    from evo.config.preflight import check_inputs

    seed = tmp_path / "other.toml"
    seed.write_text('name = "other"\n[decoding]\nmodel = "some/other-model"\n')
    config = RunConfig.from_dict({"population": {"seeds": ["direct", str(seed)]}})
    with pytest.raises(InputError) as err:
        check_inputs(config, model=False)
    assert str(err.value).startswith("population.seeds[1]") and "decoding.model" in str(err.value)
    check_inputs(RunConfig.from_dict({"population": {"seeds": ["direct"]}}), model=False)
