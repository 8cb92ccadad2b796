"""Pre-flight: everything a run names exists, checked before any model loads, so a
mistake costs a second and one clear line (``InputError`` naming the field), not a
model load. The one home of these checks for ``evo run``, ``evo tune`` and the
library entry points."""

from __future__ import annotations

from evo.config.sections import RunConfig, gene_model, model_entry, served_models
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
        for name in served_models(config):
            entry_name = config.model.name if name == "default" else name
            where = f"models.{entry_name}.source" if entry_name in config.models else "model.name"
            try:
                check_model(model_entry(config, name).source)
            except InputError as e:
                raise InputError(f"{where}: {e}") from None


def check_model_gene(strategy, where: str, config: RunConfig) -> None:
    """A strategy's ``decoding.model`` must be one of the run's models, and a LoRA
    gene (or an injected adapter) must be for that model: anything else would look
    like a working gene while no backend could serve it."""
    served = served_models(config)
    name = strategy.decoding.model
    if name not in served and gene_model(config, name) not in served:
        raise InputError(f"{where}: decoding.model {name!r} is not one of the run's models "
                         f"({', '.join(served)}; list it in model.models with a [models.{name}] table)")
    base = lora_base(strategy.lora)
    if base is not None and gene_model(config, base) != gene_model(config, name):
        raise InputError(f"{where}: lora: its adapter was made for model {base or 'default'!r}, not for "
                         f"decoding.model {name!r} (an adapter fits only the base model it was made for)")


def lora_base(slot) -> str | None:
    """The base model a strategy's lora slot was made for ("" = the primary), or None
    without a LoRA gene or adapter."""
    if slot is None:
        return None
    if isinstance(slot, dict):
        return str(slot.get("base_model", ""))
    return slot.base
