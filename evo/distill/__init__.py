"""Distillation: DPO pairs mined from a run's journal, and LoRA training on them with TRL."""
