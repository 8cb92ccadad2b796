"""The engine and the user surface: CLI commands, and (in later modules) config,
the DEAP loop, checkpoints, export, report, distillation and tuning."""
