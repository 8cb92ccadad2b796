"""runs/compare_search.py: the paired gain of one bench_search setting over another,
pooled over the seeds both hold; runs over different test tasks are refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "runs" / "compare_search.py"


def result(directory: Path, seed: int, correct: list[float], families: list[str]) -> None:
    (directory / f"seed{seed}").mkdir(parents=True)
    (directory / f"seed{seed}" / "result.json").write_text(json.dumps({
        "seed": seed, "families": families, "constant": [0.0] * len(families),
        "correct": {"evolution": correct}, "strategies": {"evolution": "h"}}))


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_pools_the_seeds_both_runs_hold(tmp_path):
    families = ["x", "x", "y", "y"]
    result(tmp_path / "a", 0, [1, 1, 0, 1], families)
    result(tmp_path / "b", 0, [0, 1, 0, 0], families)
    result(tmp_path / "a", 1, [1, 0, 1, 0], families)
    result(tmp_path / "b", 1, [1, 0, 1, 0], families)
    result(tmp_path / "a", 2, [1, 1, 1, 1], families)  # only in a: not pooled
    done = run(tmp_path / "a", tmp_path / "b")
    assert done.returncode == 0, done.stderr
    assert "pooled over seed0, seed1" in done.stdout
    assert "x                          4 tasks  +25.0" in done.stdout
    assert "all                        8 tasks  +25.0" in done.stdout


def test_different_test_tasks_are_refused(tmp_path):
    result(tmp_path / "a", 0, [1, 0], ["x", "x"])
    result(tmp_path / "b", 0, [1, 0], ["x", "y"])
    done = run(tmp_path / "a", tmp_path / "b")
    assert done.returncode != 0 and "different test tasks" in done.stderr
