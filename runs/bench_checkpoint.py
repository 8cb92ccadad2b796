"""Benchmark: checkpoint write time and size per 100 individuals (adapter weights aside).

    python runs/bench_checkpoint.py

Runs one generation of a 100-individual population on an instant scripted backend
(no model: this measures the checkpoint, not generation), then rewrites its
checkpoint 20 times. Targets: < 0.5 s and < 1 MB per 100 individuals.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from evo.rundir import checkpoint
from evo.config.sections import RunConfig
from evo.engine.run import run_evolution
from fitness.backends.base import Completion


class InstantBackend:
    def generate(self, requests, progress=None):
        return [Completion("<cot> 1 + 1 = 2 <begin_constrained_output> 2 <end_constrained_output>", 50, 20, "stop")
                for _ in requests]

    def count_tokens(self, text):
        return len(text.split())


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = RunConfig.from_dict({
            "run": {"name": "bench", "out_dir": tmp, "generations": 1},
            "population": {"size": 100, "offspring": 100, "hall_of_fame": 10},
            "tasks": {"families": ["chain_sum"], "per_family": 2, "heldout_per_family": 2},
        })
        run_evolution(config, backend=InstantBackend(), show_progress=False)
        saved = checkpoint.load_latest(Path(tmp) / "bench")
        n = len(saved.state["individuals"])
        target = Path(tmp) / "rewrite"
        times = []
        for _ in range(20):
            started = time.perf_counter()
            path = checkpoint.write(target, saved.generation, saved.state, saved.arrays)
            times.append(time.perf_counter() - started)
        size = sum(f.stat().st_size for f in path.iterdir())
    per_100 = 100 / n
    print(f"individuals in checkpoint: {n} (population 100 + hall of fame)")
    print(f"write time: median {statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms "
          f"-> {statistics.median(times) * per_100 * 1000:.1f} ms per 100 individuals (target < 500 ms)")
    print(f"size: {size / 1024:.1f} KiB -> {size * per_100 / 1024:.1f} KiB per 100 individuals (target < 1024 KiB)")


if __name__ == "__main__":
    main()
