"""Pre-flight: everything a run names exists, checked before any model loads, so a
mistake costs a second and one clear line (``InputError`` naming the field), not a
model load. The one home of these checks for ``evo run``, ``evo tune`` and the
library entry points."""

from __future__ import annotations

from evo.config.sections import RunConfig, run_model_names
from genomes.errors import InputError


def check_tasks(config: RunConfig) -> None:
    """Families exist and JSONL files are readable (imports reasoning-gym: ~1 s)."""
    from fitness.tasks import TaskSpec, load_jsonl, reasoning_gym_families

    known = set(reasoning_gym_families())
    for i, entry in enumerate(config.tasks.families):
        spec = TaskSpec.parse(entry)
        if spec.is_file:
            load_jsonl(spec.source)
        elif spec.source not in known:
            raise InputError(f"tasks.families[{i}]: unknown task family {spec.source!r}")


def check_inputs(config: RunConfig, model: bool = True) -> None:
    """Seed strategies load, task families exist and (with ``model``) the model is
    installed or its directory exists."""
    from fitness.backends.model_store import check_model
    from genomes.strategy import Strategy

    for i, seed in enumerate(config.population.seeds):
        check_model_gene(Strategy.load(seed), f"population.seeds[{i}] ({seed})", config)
    check_tasks(config)
    if model:
        check_model(config.model.name)


def check_model_gene(strategy, where: str, config: RunConfig) -> None:
    """A strategy's ``decoding.model`` must be the run's model: every request of a run
    goes to ``model.name``, so another value would look like a working gene while
    changing nothing."""
    if strategy.decoding.model not in run_model_names(config):
        raise InputError(f"{where}: decoding.model {strategy.decoding.model!r} is not the run's model "
                         f"{config.model.name!r}; a run serves one model (set model.name, or drop decoding.model)")
