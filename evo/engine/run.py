"""Starting and resuming a run: the library entry points behind ``evo run`` and
``evo resume`` (see :mod:`evo.engine.loop` for what one generation does)."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from evo.config.sections import RunConfig, gene_model
from evo.engine.backend import Counters, TimedBackend, build_backend
from evo.engine.loop import GenerationCallback, Loop, RunResult
from evo.rundir import checkpoint
from evo.rundir.files import RunDir
from fitness.backends.base import Backend
from fitness.journal import Journal
from genomes.errors import InputError
from genomes.strategy import Strategy


def run_evolution(config: RunConfig, backend: Backend | None = None, show_progress: bool = True,
                  overwrite: bool = False, on_generation: GenerationCallback | None = None) -> RunResult:
    """Run ``config.run.generations`` generations in ``config.run_dir``; see module doc.

    Refuses (InputError) to start in a directory that already holds a run, unless
    ``overwrite``, which deletes it first. ``on_generation(record)`` is called with
    each generation's metrics record after its checkpoint is written; an exception it
    raises (e.g. an Optuna prune) stops the run there and propagates.
    """
    from evo.config.preflight import check_inputs

    check_inputs(config, model=backend is None)
    seeds = [_canonical_model(Strategy.load(s), config) for s in config.population.seeds]
    run_dir = RunDir(config.run_dir)
    run_dir.create(config.to_dict(), overwrite=overwrite)
    counters = Counters()
    backend = TimedBackend(backend or build_backend(config), counters)
    loop = Loop(config, backend, run_dir, counters, show_progress, on_generation)
    with Journal(run_dir.journal_path) as journal:
        loop.journal = journal
        return loop.run(seeds)


def _canonical_model(strategy: Strategy, config: RunConfig) -> Strategy:
    """A seed that names the primary model by ``model.name`` says "default" instead:
    one name per model, so mutation, LoRA bases and the journal agree on it."""
    name = gene_model(config, strategy.decoding.model)
    if name == strategy.decoding.model:
        return strategy
    return dataclasses.replace(strategy, decoding=dataclasses.replace(strategy.decoding, model=name))


def resume_evolution(run_dir: str | Path, generations: int | None = None, backend: Backend | None = None,
                     show_progress: bool = True, on_generation: GenerationCallback | None = None,
                     inject_adapters: Sequence[str | Path] = ()) -> RunResult:
    """Continue a run from its last complete checkpoint, up to ``generations`` in total
    (default: the configured number). Completions already in the journal are reused.

    ``inject_adapters``: PEFT adapter directories (e.g. from ``evo distill --train``)
    imported into the run's adapter store and added to the population as new
    individuals (see :mod:`evo.rundir.inject`); they are scored in the next generation. The
    injection lives in the checkpoints from that generation on: a run killed before
    it needs the flag again."""
    from evo.rundir.inject import import_adapter

    run = RunDir(run_dir)
    removed = run.remove_leftovers()
    if removed and show_progress:
        print(f"removed {len(removed)} leftover file(s) of an interrupted write: {', '.join(removed)}",
              file=sys.stderr, flush=True)
    saved = checkpoint.load_latest(run.path, none_usable_ok=True)
    config = _resumed_config(run, saved, generations)
    if saved is None:
        if inject_adapters:
            raise InputError("--inject-adapter: the run has no checkpoint yet; resume it once without the flag")
        if generations is not None:
            run.write_json("config.json", config.to_dict())
        return _restart(run, config, backend, show_progress, on_generation)
    if inject_adapters and config.run.generations <= saved.generation:
        raise InputError(f"--inject-adapter: the run already has all its {saved.generation} generations; pass "
                         f"--generations {saved.generation + 1} or more so the injected individuals are scored")
    genes = [import_adapter(run.path, path) for path in inject_adapters]  # refuse bad adapters before the model loads
    if generations is not None:
        run.write_json("config.json", config.to_dict())
    counters = Counters()
    backend = TimedBackend(backend or build_backend(config), counters)
    loop = Loop(config, backend, run, counters, show_progress, on_generation)
    with Journal(run.journal_path) as journal:
        loop.journal = journal
        journal.recount_after = saved.state["journal_rows"]  # budget figures as if it had never stopped
        population = loop.restore(saved)
        population = population + loop.inject(genes, population, saved.generation + 1)
        if show_progress:
            print(f"resuming {run.path} after generation {saved.generation} "
                  f"({journal.count() - saved.state['journal_rows']} journaled completions past the checkpoint will be reused)",
                  file=sys.stderr, flush=True)
        return loop.continue_from(population, saved.generation + 1)


def _resumed_config(run: RunDir, saved, generations: int | None) -> RunConfig:
    """The run's config (from its checkpoint, else from config.json), with the new
    generation target (the caller writes it to config.json once every input is checked)."""
    if saved is not None:
        config = RunConfig.from_saved(saved.state["config"], where="checkpoint config")
        done = saved.generation
    else:
        config, done = run.read_config(), -1
    if generations is not None:
        if generations < done:
            raise InputError(f"--generations {generations}: the run already has {done} generations")
        config = dataclasses.replace(config, run=dataclasses.replace(config.run, generations=generations))
    return config


def _restart(run: RunDir, config: RunConfig, backend: Backend | None, show_progress: bool,
             on_generation: GenerationCallback | None) -> RunResult:
    """A run killed before its first checkpoint (or whose every checkpoint is damaged):
    start it again from its config. The run is a pure function of its config, so this
    gives what an uninterrupted run gives, and every completion it journaled is reused
    (and counted as this run's own, as it was)."""
    if show_progress:
        print(f"{run.path} has no usable checkpoint: restarting it from generation 0, reusing its journal",
              file=sys.stderr, flush=True)
    seeds = [Strategy.load(s) for s in config.population.seeds]
    for name in ("metrics.jsonl", "lineage.jsonl"):
        run.truncate_jsonl(name, 0)
    counters = Counters()
    backend = TimedBackend(backend or build_backend(config), counters)
    loop = Loop(config, backend, run, counters, show_progress, on_generation)
    with Journal(run.journal_path) as journal:
        loop.journal = journal
        journal.recount_after = 0
        return loop.run(seeds)
