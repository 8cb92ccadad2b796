"""Run configuration: typed sections (:mod:`evo.config.sections`) and the generated
reference of every field (:mod:`evo.config.reference`)."""

from evo.config.sections import RunConfig, check_tasks, load_config

__all__ = ["RunConfig", "check_tasks", "load_config"]
