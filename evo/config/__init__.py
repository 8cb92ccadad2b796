"""Run configuration: typed sections (:mod:`evo.config.sections`) and the generated
reference of every field (:mod:`evo.config.reference`)."""

from evo.config.preflight import check_inputs, check_tasks
from evo.config.sections import RunConfig, load_config

__all__ = ["RunConfig", "check_inputs", "check_tasks", "load_config"]
