"""`evo eval` and `evo tasks` as a user runs them: real processes, the real bundled
model, one-line errors with exit status 2 for bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest


def evo(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evo.cli.main", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("evo: error:"), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def quick_strategy(tmp_path):
    path = tmp_path / "quick.toml"
    path.write_text('name = "quick"\n[decoding]\nmax_new_tokens = 24\n[chain]\nmax_steps = 2\n')
    return path


def test_unknown_family(quick_strategy):
    assert_one_line_error(evo("eval", str(quick_strategy), "--tasks", "chain_sum,no_such_family"), "no_such_family")


def test_missing_strategy_file(tmp_path):
    assert_one_line_error(evo("eval", str(tmp_path / "missing.json"), "--tasks", "chain_sum"), "missing.json", "not found")


def test_malformed_json_and_toml(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"name": "x",, }')
    assert_one_line_error(evo("eval", str(bad_json), "--tasks", "chain_sum"), "bad.json", "malformed JSON", "line 1")
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("name = \n")
    assert_one_line_error(evo("eval", str(bad_toml), "--tasks", "chain_sum"), "bad.toml", "malformed TOML")


def test_invalid_strategy_field_is_named(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("[decoding]\ntemperature = -1\n")
    assert_one_line_error(evo("eval", str(path), "--tasks", "chain_sum"), "decoding.temperature")


def test_answerless_jsonl_row(quick_strategy, tmp_path):
    tasks = tmp_path / "mine.jsonl"
    tasks.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?"}\n')
    assert_one_line_error(evo("eval", str(quick_strategy), "--tasks", str(tasks)), "mine.jsonl:2", "answer")


def test_model_path_that_does_not_exist(quick_strategy, tmp_path):
    proc = evo("eval", str(quick_strategy), "--tasks", "chain_sum", "--model", str(tmp_path / "no-model"))
    assert_one_line_error(proc, "no-model", "does not exist")


def test_tasks_lists_families_with_levels():
    proc = evo("tasks", "chain")
    assert proc.returncode == 0
    assert any(line.startswith("chain_sum") and "levels 0.." in line for line in proc.stdout.splitlines())
    assert_one_line_error(evo("tasks", "zzz_nothing"), "zzz_nothing")


@pytest.mark.slow
def test_eval_on_the_bundled_model_writes_results(quick_strategy, tmp_path):
    tasks = tmp_path / "sums.jsonl"
    tasks.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(40)))
    out = tmp_path / "results.jsonl"
    proc = evo("eval", str(quick_strategy), "--tasks", f"chain_sum@0,{tasks}", "--n", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6
    assert {r["family"] for r in rows} == {"chain_sum", "jsonl:sums"}
    for r in rows:
        assert 0 < r["completion_tokens"] <= 24
        assert r["completion"].startswith("<cot>")  # the chain gene's prefill
        assert r["correct"] == (r["score"] == 1.0)
        assert r["correct"] is False or r["answer"] is not None
    table = proc.stdout
    assert "accuracy" in table and "chain_sum" in table and "jsonl:sums" in table
    all_row = next(line for line in table.splitlines() if line.startswith("all "))
    assert all_row.split()[1] == "6"
    assert f"results: {out}" in table


def test_eval_reads_a_routes_file_and_answers_each_family_with_its_strategy(quick_strategy, tmp_path):
    from genomes.routes import Routes
    from genomes.strategy import Strategy

    tasks = tmp_path / "sums.jsonl"
    tasks.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(40)))
    default = Strategy.load(quick_strategy)
    terse = Strategy.decode({"name": "terse", "decoding": {"max_new_tokens": 6}, "chain": {"max_steps": 1}})
    routes = tmp_path / "routes.json"
    Routes(default, {"jsonl:sums": terse}).save(routes)
    out = tmp_path / "results.jsonl"
    proc = evo("eval", str(routes), "--tasks", f"chain_sum@0,{tasks}", "--n", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"jsonl:sums: routed to terse ({terse.content_hash()})" in proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["family"] for r in rows] == ["chain_sum"] * 3 + ["jsonl:sums"] * 3  # task order kept
    assert {r["strategy_hash"] for r in rows[:3]} == {default.content_hash()}
    assert {r["strategy_hash"] for r in rows[3:]} == {terse.content_hash()}
    assert all(r["completion_tokens"] <= 6 for r in rows[3:])


def test_a_malformed_routes_file_is_one_line_naming_the_field(tmp_path):
    path = tmp_path / "routes.json"
    path.write_text(json.dumps({"kind": "routes", "routes": {}}))
    assert_one_line_error(evo("eval", str(path), "--tasks", "chain_sum"), "default")


# ---- several models: each strategy is answered by the model it names -------------------
def _two_model_config(tmp_path, tiny_model_dir):
    config = tmp_path / "two.toml"
    config.write_text(f'[model]\nmodels = ["default", "tiny"]\n[models.tiny]\nsource = "{tiny_model_dir}"\n'
                      'dtype = "float32"\n')
    return config


def _eval_args(**given):
    import argparse

    defaults = {"model": None, "config": None, "cache_dir": None, "device": None, "dtype": None, "token_budget": None}
    return argparse.Namespace(**{**defaults, **given})


def test_a_routes_file_over_two_models_gets_a_backend_per_model(quick_strategy, tmp_path, tiny_model_dir):
    from evo.cli.eval import eval_backend_spec
    from genomes.errors import InputError
    from genomes.routes import Routes
    from genomes.strategy import Strategy

    default = Strategy.load(quick_strategy)
    tiny = Strategy.decode({"name": "tiny", "decoding": {"model": "tiny", "max_new_tokens": 6}})
    routes = Routes(default, {"jsonl:sums": tiny})
    config = str(_two_model_config(tmp_path, tiny_model_dir))
    spec, sources = eval_backend_spec(routes, _eval_args(config=config))
    assert spec.kind == "multi" and spec.options["primary"] == "default"
    assert sources == {"default": "default", "tiny": tiny_model_dir}
    assert spec.options["models"]["tiny"].options["dtype"] == "float32"  # the model's own setting
    spec, _ = eval_backend_spec(routes, _eval_args(config=config, dtype="bfloat16"))
    assert {m.options["dtype"] for m in spec.options["models"].values()} == {"bfloat16"}  # the command line wins
    spec, sources = eval_backend_spec(routes, _eval_args(model="default"))
    assert spec.kind == "hf" and sources == {"default": "default"}  # --model: one model for all
    with pytest.raises(InputError, match="needs --config"):
        eval_backend_spec(routes, _eval_args())
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no config.json"):
        eval_backend_spec(routes, _eval_args(config=str(tmp_path / "empty")))
    (tmp_path / "one.toml").write_text("[run]\nseed = 0\n")
    with pytest.raises(InputError, match="'tiny' is not one of the config's models"):
        eval_backend_spec(routes, _eval_args(config=str(tmp_path / "one.toml")))


@pytest.mark.slow
def test_eval_answers_each_routed_family_with_its_own_model(quick_strategy, tmp_path, tiny_model_dir):
    from genomes.routes import Routes
    from genomes.strategy import Strategy

    tasks = tmp_path / "sums.jsonl"
    tasks.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(40)))
    tiny = Strategy.decode({"name": "tiny", "decoding": {"model": "tiny", "max_new_tokens": 6}})
    routes = tmp_path / "routes.json"
    Routes(Strategy.load(quick_strategy), {"jsonl:sums": tiny}).save(routes)
    config = _two_model_config(tmp_path, tiny_model_dir)
    both, alone = tmp_path / "both.jsonl", tmp_path / "alone.jsonl"
    proc = evo("eval", str(routes), "--config", str(config), "--tasks", f"chain_sum@0,{tasks}", "--n", "2",
               "--out", str(both))
    assert proc.returncode == 0, proc.stderr
    assert f"tiny = {tiny_model_dir}" in proc.stderr
    tiny_file = tmp_path / "tiny.json"
    tiny.save(tiny_file)
    proc = evo("eval", str(tiny_file), "--model", tiny_model_dir, "--dtype", "float32", "--tasks", str(tasks),
               "--n", "2", "--out", str(alone))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in both.read_text().splitlines()]
    routed = [r["completion"] for r in rows if r["family"] == "jsonl:sums"]
    assert routed == [json.loads(line)["completion"] for line in alone.read_text().splitlines()]


# ---- trained adapters travel with an export ------------------------------------------
def _exported_trained_strategy(tmp_path, adapter):
    """An `evo export` rank directory by hand: a strategy whose LoRA gene is a trained
    adapter (as `evo improve` and `--inject-adapter` make them) and its adapter/."""
    import dataclasses

    from evo.distill.train import trained_gene
    from genomes.strategy import Strategy

    rank = tmp_path / "exported" / "rank-1-x"
    shutil.copytree(adapter, rank / "adapter")
    strategy = dataclasses.replace(Strategy.decode({"name": "tuned", "decoding": {"max_new_tokens": 8}}),
                                   lora=trained_gene(rank / "adapter"))
    strategy.save(rank / "strategy.json")
    return rank


@pytest.mark.slow
def test_an_exported_strategy_with_a_trained_adapter_evaluates_from_the_export(tmp_path, lora_adapters):
    import os

    from fitness.backends.model_store import default_cache_dir

    rank = _exported_trained_strategy(tmp_path, lora_adapters[0])
    # adapters go to $EVO_CACHE_DIR/adapters: a store that has never seen this one; the
    # converted model comes from the usual cache (--cache-dir)
    env = {**os.environ, "EVO_CACHE_DIR": str(tmp_path / "cache")}
    run = lambda: subprocess.run([sys.executable, "-m", "evo.cli.main", "eval", str(rank / "strategy.json"),
                                  "--tasks", "chain_sum", "--n", "2", "--out", str(tmp_path / "r.jsonl"),
                                  "--cache-dir", str(default_cache_dir())],
                                 capture_output=True, text=True, timeout=600, env=env)
    proc = run()
    assert proc.returncode == 0, proc.stderr
    with_adapter = [json.loads(line)["completion"] for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert (tmp_path / "cache" / "adapters" / "trained").is_dir()
    shutil.rmtree(rank / "adapter")
    shutil.rmtree(tmp_path / "cache" / "adapters")
    proc = run()
    assert_one_line_error(proc, "its trained adapter", "--config")
    assert "model ready" not in proc.stderr  # refused before the model loads
    assert len(with_adapter) == 2


def test_a_fixed_adapter_that_is_not_there_is_one_line_before_the_model_loads(tmp_path):
    path = tmp_path / "champion.json"
    path.write_text(json.dumps({"name": "champion", "lora": {"adapter_dir": "runs/out/gone/adapters/trained/abc"}}))
    proc = evo("eval", str(path), "--tasks", "chain_sum", "--n", "2", cwd=tmp_path)
    assert_one_line_error(proc, "lora.adapter_dir runs/out/gone/adapters/trained/abc lacks", "where the run was started")
    assert "model ready" not in proc.stderr


def test_a_champion_whose_run_moved_reads_its_adapter_from_the_run_it_lies_in(tmp_path, lora_adapters, capsys):
    """improve/champion.json names its adapter by the path the run had (relative to where
    it started); after the run directory is renamed, the adapter is found in the run
    the file lies in, by content hash; a directory of that name with other weights is not."""
    from evo.cli.eval import _check_fixed_adapters
    from genomes.errors import InputError
    from fitness.backends.lora_weights import adapter_hash
    from genomes.strategy import Strategy

    digest = adapter_hash(lora_adapters[0])
    run = tmp_path / "renamed-run"
    shutil.copytree(lora_adapters[0], run / "adapters" / "trained" / digest)
    champion_file = run / "improve" / "champion.json"
    champion_file.parent.mkdir()
    champion_file.write_text("{}")
    old = f"runs/out/old-name/adapters/trained/{digest}"
    champion = Strategy(name="champion", lora={"adapter_dir": old})
    _check_fixed_adapters([champion], champion_file)
    assert champion.lora["adapter_dir"] == str(run.resolve() / "adapters" / "trained" / digest)
    assert "is not there; reading the same adapter" in capsys.readouterr().err
    impostor = run / "adapters" / "trained" / digest
    shutil.rmtree(impostor)
    shutil.copytree(lora_adapters[1], impostor)
    with pytest.raises(InputError, match="lora.adapter_dir runs/out/old-name/.* lacks"):
        _check_fixed_adapters([Strategy(name="champion", lora={"adapter_dir": old})], champion_file)
