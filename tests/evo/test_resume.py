"""Checkpoints and exact resume: k generations + resume == N straight; SIGKILL at
several moments loses nothing and regenerates nothing; corrupt checkpoints fall back;
unknown versions fail clearly; the first released format keeps loading."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import ArithmeticOracle, config, read_jsonl

from evo.config.sections import RunConfig
from evo.rundir import checkpoint
from evo.rundir.files import RunDir
from evo.engine.run import resume_evolution, run_evolution
from genomes.errors import InputError

HERE = Path(__file__).parent
TIMING = ("wall_s", "backend_s")
FIXTURE_V1 = HERE.parent / "fixtures" / "checkpoint_v1"


def final_state(run_dir: Path) -> dict:
    """What must be identical: populations, fitness, logbook, hall, lineage."""
    saved = checkpoint.load_latest(run_dir)
    state = saved.state
    individuals = state["individuals"]
    return {
        "generation": saved.generation,
        "population": [individuals[i] for i in state["population"]],
        "hall": [individuals[i] for i in state["hall"]],
        "logbook": [{k: v for k, v in m.items() if k not in TIMING} for m in state["metrics"]],
        "curriculum": state["curriculum"],
        "rng": state["rng"],
        "lineage": read_jsonl(run_dir / "lineage.jsonl"),
        "metrics_file": [{k: v for k, v in m.items() if k not in TIMING} for m in read_jsonl(run_dir / "metrics.jsonl")],
    }


def straight(tmp_path: Path, generations: int = 4, **sections) -> tuple[dict, int]:
    backend = ArithmeticOracle()
    run_evolution(config(tmp_path / "straight", run={"generations": generations}, **sections), backend=backend,
                  show_progress=False)
    return final_state(tmp_path / "straight" / "t"), len(backend.requests)


@pytest.mark.parametrize("mode", ["scalar", "multi"])
def test_k_generations_plus_resume_equals_a_straight_run(tmp_path, mode):
    expected, _ = straight(tmp_path, population={"mode": mode})
    run_evolution(config(tmp_path / "split", run={"generations": 2}, population={"mode": mode}),
                  backend=ArithmeticOracle(), show_progress=False)
    resume_evolution(tmp_path / "split" / "t", generations=4, backend=ArithmeticOracle(), show_progress=False)
    assert final_state(tmp_path / "split" / "t") == expected


def test_resume_with_rotating_batches_equals_a_straight_run(tmp_path):
    """Survivors' evidence (the batches they were scored on) survives a checkpoint.
    (A frontier move on 2 outcomes: the last one comes early enough that the final
    survivors carry two batches.)"""
    moves = {"curriculum": {"min_evidence": 2}, "tasks": {"rotate_every": 1}}
    expected, _ = straight(tmp_path, **moves)
    run_evolution(config(tmp_path / "split", run={"generations": 2}, **moves), backend=ArithmeticOracle(),
                  show_progress=False)
    resume_evolution(tmp_path / "split" / "t", generations=4, backend=ArithmeticOracle(), show_progress=False)
    assert final_state(tmp_path / "split" / "t") == expected
    assert any(len(ind["scored_on"]) > 1 for ind in expected["population"])


def test_resume_twice_in_a_row_and_default_target(tmp_path):
    expected, _ = straight(tmp_path)
    run_evolution(config(tmp_path / "s", run={"generations": 1}), backend=ArithmeticOracle(), show_progress=False)
    resume_evolution(tmp_path / "s" / "t", generations=2, backend=ArithmeticOracle(), show_progress=False)
    resume_evolution(tmp_path / "s" / "t", generations=4, backend=ArithmeticOracle(), show_progress=False)
    assert final_state(tmp_path / "s" / "t") == expected
    # nothing left to do: resuming a finished run changes nothing
    resume_evolution(tmp_path / "s" / "t", backend=ArithmeticOracle(), show_progress=False)
    assert final_state(tmp_path / "s" / "t") == expected


def _run_killed(tmp_path: Path, fault: str) -> tuple[Path, Path]:
    cfg = config(tmp_path / "killed", run={"generations": 4})
    counts = tmp_path / "counts.txt"
    env = {**os.environ, "EVO_FAULT": fault}
    proc = subprocess.run([sys.executable, str(HERE / "crash_runner.py"), "run", json.dumps(cfg.to_dict()), str(counts)],
                          env=env, cwd=Path.cwd(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr  # SIGKILL, no cleanup
    return tmp_path / "killed" / "t", counts


@pytest.mark.parametrize("fault", ["after-evaluate@2", "checkpoint-write@2", "checkpoint-write@3", "after-evaluate@1"])
def test_sigkill_at_any_moment_resumes_from_the_last_checkpoint(tmp_path, fault):
    expected, straight_requests = straight(tmp_path)
    run_dir, counts = _run_killed(tmp_path, fault)
    killed_gen = int(fault.split("@")[1])
    latest = checkpoint.load_latest(run_dir)
    assert latest.generation == killed_gen - 1  # the unfinished generation left no checkpoint
    assert not list((run_dir / "checkpoints").glob("gen-*" + f"{killed_gen:06d}"))
    resumed = ArithmeticOracle()
    resume_evolution(run_dir, generations=4, backend=resumed, show_progress=False)
    state = final_state(run_dir)
    for key in ("population", "hall", "curriculum", "rng", "generation"):
        assert state[key] == expected[key]
    assert [row["id"] for row in state["lineage"]] == [row["id"] for row in expected["lineage"]]
    killed_requests = sum(int(line) for line in counts.read_text().split())
    # journaled completions are reused, not regenerated: together, the killed and the
    # resumed process sent exactly the requests of a run that never stopped
    assert killed_requests + len(resumed.requests) == straight_requests


def test_corrupt_or_truncated_latest_checkpoint_falls_back(tmp_path, capsys):
    expected, _ = straight(tmp_path)
    run_evolution(config(tmp_path / "c", run={"generations": 3}), backend=ArithmeticOracle(), show_progress=False)
    run_dir = tmp_path / "c" / "t"
    latest = run_dir / "checkpoints" / "gen-000003" / "state.json"
    latest.write_bytes(latest.read_bytes()[: len(latest.read_bytes()) // 2])  # truncated
    warnings = []
    assert checkpoint.load_latest(run_dir, warn=warnings.append).generation == 2
    assert "gen-000003" in warnings[0] and "state.json" in warnings[0]
    previous = run_dir / "checkpoints" / "gen-000002" / "state.json"
    previous.write_text(previous.read_text().replace('"op": "seed"', '"op": "evil"', 1))  # altered
    assert checkpoint.load_latest(run_dir, warn=warnings.append).generation == 1
    assert any("gen-000002" in w and "state.json" in w and "checksum" in w for w in warnings)
    resume_evolution(run_dir, generations=4, backend=ArithmeticOracle(), show_progress=False)
    assert final_state(run_dir)["population"] == expected["population"]
    assert "falling back" in capsys.readouterr().err


def test_unknown_version_is_a_clear_error(tmp_path):
    run_evolution(config(tmp_path, run={"generations": 1}), backend=ArithmeticOracle(), show_progress=False)
    path = tmp_path / "t" / "checkpoints" / "gen-000001" / "state.json"
    document = json.loads(path.read_text())
    document["version"] = 99
    path.write_text(json.dumps(document))
    with pytest.raises(InputError, match="unknown checkpoint version 99"):
        resume_evolution(tmp_path / "t", backend=ArithmeticOracle(), show_progress=False)


def test_no_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no checkpoint"):
        resume_evolution(tmp_path, backend=ArithmeticOracle(), show_progress=False)


def test_checkpoints_hold_no_pickle_and_are_small(tmp_path):
    run_evolution(config(tmp_path, run={"generations": 1}), backend=ArithmeticOracle(), show_progress=False)
    files = sorted(p.name for p in (tmp_path / "t" / "checkpoints" / "gen-000001").iterdir())
    assert files == ["manifest.json", "rng.safetensors", "state.json"]
    state = json.loads((tmp_path / "t" / "checkpoints" / "gen-000001" / "state.json").read_text())
    assert state["format"] == "evo-checkpoint" and state["version"] == checkpoint.VERSION


def test_first_released_format_keeps_loading(tmp_path):
    """tests/fixtures/checkpoint_v1 was written by the first release of the format and
    must never be regenerated: it is what old runs on users' disks look like."""
    run_dir = tmp_path / "old"
    shutil.copytree(FIXTURE_V1, run_dir)
    saved = checkpoint.load_latest(run_dir)
    assert saved.generation == 1 and len(saved.state["population"]) == 4
    resume_evolution(run_dir, generations=2, backend=ArithmeticOracle(), show_progress=False)
    assert checkpoint.load_latest(run_dir).generation == 2


def test_runs_written_before_the_dtype_setting_resume_in_float32(tmp_path):
    """A new default must not change a run half way: the fixture's config has no
    model.dtype (it predates it) and ran in float32, so it resumes in float32."""
    run_dir = tmp_path / "old"
    shutil.copytree(FIXTURE_V1, run_dir)
    assert "dtype" not in json.loads((run_dir / "config.json").read_text())["model"]
    saved = checkpoint.load_latest(run_dir)
    assert RunConfig.from_saved(saved.state["config"], "checkpoint").model.dtype == "float32"
    assert RunDir(run_dir).read_config().model.dtype == "float32"
    assert RunConfig.from_dict({}).model.dtype == "auto"  # new runs get today's default
    # ... and it never constrained decoding, so its mutations go on never doing so
    assert RunDir(run_dir).read_config().population.constrain_modes == ("off",)
    assert RunConfig.from_dict({}).population.constrain_modes == ("off", "structure", "answer")


def test_resume_command_errors_are_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "evo.cli.main", "resume", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "run directory not found" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "evo.cli.main", "resume", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no checkpoint" in proc.stderr


@pytest.mark.slow
def test_exact_resume_on_the_bundled_model(tmp_path):
    """The acceptance check on the real model: 2 generations straight == 1 + resume."""
    small = {"population": {"size": 2, "offspring": 2}, "tasks": {"per_family": 2, "heldout_per_family": 2}}
    run_evolution(config(tmp_path / "straight", run={"generations": 2}, **small), show_progress=False)
    run_evolution(config(tmp_path / "split", run={"generations": 1}, **small), show_progress=False)
    resume_evolution(tmp_path / "split" / "t", generations=2, show_progress=False)
    assert final_state(tmp_path / "split" / "t") == final_state(tmp_path / "straight" / "t")


BUDGET = ("rollouts", "heldout_rollouts", "reused", "tokens", "evaluated")


def budget(run_dir: Path) -> list[dict]:
    return [{k: m[k] for k in BUDGET} for m in read_jsonl(run_dir / "metrics.jsonl")]


@pytest.mark.parametrize("fault", ["after-evaluate@0", "checkpoint-write@0"])
def test_a_run_killed_before_its_first_checkpoint_resumes(tmp_path, fault, capsys):
    """Only config.json and the journal exist: resume restarts from generation 0,
    reuses every journaled completion, and ends where a run that never stopped ends."""
    expected, straight_requests = straight(tmp_path)
    run_dir, counts = _run_killed(tmp_path, fault)
    assert not checkpoint.has_checkpoint(run_dir) and (run_dir / "config.json").exists()
    resumed = ArithmeticOracle()
    resume_evolution(run_dir, generations=4, backend=resumed, show_progress=True)
    assert "restarting it from generation 0" in capsys.readouterr().err
    assert final_state(run_dir) == expected
    killed_requests = sum(int(line) for line in counts.read_text().split())
    assert killed_requests > 0 and killed_requests + len(resumed.requests) == straight_requests
    assert budget(run_dir) == budget(tmp_path / "straight" / "t")


@pytest.mark.parametrize("fault", ["after-evaluate@2", "checkpoint-write@3"])
def test_budget_figures_after_a_resume_equal_an_uninterrupted_run(tmp_path, fault):
    straight(tmp_path)
    run_dir, _ = _run_killed(tmp_path, fault)
    resume_evolution(run_dir, generations=4, backend=ArithmeticOracle(), show_progress=False)
    assert budget(run_dir) == budget(tmp_path / "straight" / "t")


def test_leftover_staging_files_are_removed_on_resume(tmp_path, capsys):
    run_dir, _ = _run_killed(tmp_path, "checkpoint-write@2")
    assert list((run_dir / "checkpoints").glob(".tmp-gen-*"))
    resume_evolution(run_dir, generations=3, backend=ArithmeticOracle(), show_progress=True)
    assert "removed 1 leftover file(s) of an interrupted write: checkpoints/.tmp-gen-000002" in capsys.readouterr().err
    assert not list((run_dir / "checkpoints").glob(".tmp-gen-*"))


def _damage_rng(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")  # safetensors: length, JSON header, then the tensors
    if how == "random":
        import random

        data[header:] = random.Random(0).randbytes(len(data) - header)
    elif how == "flipped":
        for i in range(16):
            data[header + 40 + i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["random", "flipped"])
def test_a_damaged_rng_file_falls_back_with_one_line(tmp_path, how, capsys):
    expected, _ = straight(tmp_path)
    run_evolution(config(tmp_path / "c", run={"generations": 3}), backend=ArithmeticOracle(), show_progress=False)
    run_dir = tmp_path / "c" / "t"
    _damage_rng(run_dir / "checkpoints" / "gen-000003" / "rng.safetensors", how)
    resume_evolution(run_dir, generations=4, backend=ArithmeticOracle(), show_progress=False)
    err = capsys.readouterr().err
    assert "gen-000003: rng.safetensors" in err and "falling back" in err and "Traceback" not in err
    assert final_state(run_dir) == expected


def test_rng_states_that_do_not_load_are_caught_without_a_manifest(tmp_path):
    """Checkpoints from before the manifest: a torch RNG state that does not load (the
    crash users saw: "Invalid mt19937 state") is a fallback, not a traceback."""
    import torch  # noqa: F401  (loaded, so checkpoints carry torch's RNG state, as with the real model)

    run_evolution(config(tmp_path, run={"generations": 2}), backend=ArithmeticOracle(), show_progress=False)
    latest = tmp_path / "t" / "checkpoints" / "gen-000002"
    (latest / "manifest.json").unlink()  # as version 1 wrote it
    document = json.loads((latest / "state.json").read_text())
    (latest / "state.json").write_text(json.dumps({**document, "version": 1}))
    _damage_rng(latest / "rng.safetensors", "random")
    warnings = []
    assert checkpoint.load_latest(tmp_path / "t", warn=warnings.append).generation == 1
    assert "rng.safetensors unreadable" in warnings[0]


def test_every_checkpoint_damaged_restarts_the_run_from_its_config(tmp_path, capsys):
    expected, _ = straight(tmp_path)
    run_evolution(config(tmp_path / "c", run={"generations": 2}), backend=ArithmeticOracle(), show_progress=False)
    run_dir = tmp_path / "c" / "t"
    for state in (run_dir / "checkpoints").glob("gen-*/state.json"):
        state.write_text("{")
    resume_evolution(run_dir, generations=4, backend=ArithmeticOracle(), show_progress=True)
    assert "restarting it from generation 0" in capsys.readouterr().err
    assert final_state(run_dir) == expected


def test_evo_run_on_an_interrupted_run_points_to_resume(tmp_path):
    run_dir, _ = _run_killed(tmp_path, "after-evaluate@0")
    cfg = config(tmp_path / "killed", run={"generations": 4})
    with pytest.raises(InputError, match="evo resume"):
        run_evolution(cfg, backend=ArithmeticOracle(), show_progress=False)
