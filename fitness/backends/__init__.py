"""Generation backends. ``base`` defines the contract; ``hf`` (transformers + PEFT,
CPU or GPU) is the default. Import a concrete backend module only when you need it:
they pull in torch."""

from fitness.backends.base import Backend, Completion, Request, SamplingParams

__all__ = ["Backend", "Completion", "Request", "SamplingParams"]
