"""The engine and the user surface: config, the DEAP loop, run directory, CLI.

Library use (the same run as ``evo run runs/quickstart.toml``)::

    from evo import load_config, run_evolution
    result = run_evolution(load_config("runs/quickstart.toml"))
    print(result.best.encode(), result.metrics[-1]["heldout_accuracy"])
"""

from evo.config.sections import RunConfig, load_config
from evo.engine.loop import RunResult
from evo.engine.run import run_evolution

__all__ = ["RunConfig", "RunResult", "load_config", "run_evolution"]
