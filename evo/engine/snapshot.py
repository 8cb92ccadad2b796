"""The loop written to and read back from a checkpoint (:mod:`evo.rundir.checkpoint`
does the atomic files; :mod:`evo.engine.loop_state` the JSON of each part). A mixin of
:class:`evo.engine.loop.Loop`."""

from __future__ import annotations

import time

from evo.engine.exemplar_pool import legacy_pool
from evo.engine.loop_state import IndividualTable, individual_from_json
from evo.engine.surrogate import Surrogate
from evo.rundir import checkpoint
from evo.rundir.faults import maybe_crash
from evo.rundir.rng_state import (
    global_rng_arrays,
    restore_global_rngs,
    rng_from_json,
    rng_to_json,
)
from fitness.curriculum import Curriculum


class Snapshot:
    def checkpoint(self, gen: int, population: list) -> None:
        table = IndividualTable()
        arrays, global_scalars = global_rng_arrays()
        state = {
            "config": self.config.to_dict(),
            "population": table.refs(population),
            "hall": table.refs(self.hall),
            "validated": table.refs(self.validated),
            "pareto": table.refs(self.pareto) if self.pareto is not None else None,
            "individuals": table.rows,
            "metrics": self.metrics,
            "curriculum": self.curriculum.to_state(),
            "batch_states": [[list(item) for item in state] for state, _ in self.batches],
            "batch_epochs": [epoch for _, epoch in self.batches],
            "frontier_moved": self.frontier_moved,
            "exemplar_pool": self.exemplars.to_state(),
            "surrogate": self.surrogate.to_state(),
            "rng": rng_to_json(self.rng.getstate()),
            "global_rngs": global_scalars,
            "counters": {k: v for k, v in vars(self.counters).items() if k != "started"},
            "wall_s": time.perf_counter() - self.counters.started,
            "journal_rows": self.journal.count(),
            "log_lines": {name: self.run_dir.lines[name] for name in ("metrics.jsonl", "lineage.jsonl")},
        }
        checkpoint.write(self.run_dir.path, gen, state, arrays,
                         before_rename=lambda: maybe_crash("checkpoint-write", gen))

    def restore(self, saved: checkpoint.Checkpoint) -> list:
        """Put the loop back where ``saved`` left it; returns the population."""
        s = saved.state
        individuals = [individual_from_json(row, self.mode) for row in s["individuals"]]
        self.hall = [individuals[i] for i in s["hall"]]
        self.validated = [individuals[i] for i in s.get("validated", [])]  # [] in checkpoints made before the archive
        if self.pareto is not None:
            for i in s["pareto"] or []:
                self.pareto.insert(individuals[i])
        self.metrics = list(s["metrics"])
        for record in self.metrics:
            self.logbook.record(**record)
        self.curriculum = Curriculum.from_state(s["curriculum"])
        epochs = s.get("batch_epochs") or [0] * len(s["batch_states"])  # format 1 checkpoints never rotated
        for index, (state, epoch) in enumerate(zip(s["batch_states"], epochs)):
            key = (tuple((family, level) for family, level in state), epoch)
            self.batches[key] = self.draw_batch(*key, index=index)
        self.frontier_moved = s["frontier_moved"]
        if "exemplar_pool" in s:
            self.exemplars.restore(s["exemplar_pool"])
        else:  # checkpointed before the run's own data fed the pool
            self.exemplars = legacy_pool(self.pool)
        # checkpoints made before the surrogate: its evidence starts afresh
        self.surrogate = Surrogate.from_state(s.get("surrogate", []))
        self.rng.setstate(rng_from_json(s["rng"]))
        restore_global_rngs(saved.arrays, s["global_rngs"])
        for name, value in s["counters"].items():
            setattr(self.counters, name, value)
        self.counters.started = time.perf_counter() - s["wall_s"]
        for name, lines in s["log_lines"].items():  # drop rows of the generation that did not finish
            self.run_dir.truncate_jsonl(name, lines)
        return [individuals[i] for i in s["population"]]
