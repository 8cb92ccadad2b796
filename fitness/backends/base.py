"""The backend contract shared by the hf and vllm backends.

``Backend.generate(requests)`` takes a whole list of requests and returns one
:class:`Completion` per request, same length, same order. It may batch, sort and
chunk internally as it likes; callers never see that. Each request carries chat
messages, an optional assistant prefill, an optional adapter (a PEFT directory) and
its own sampling parameters with a seed:

- ``temperature == 0`` is greedy decoding: the output is a function of the request
  alone, equal to generating it by itself;
- with ``temperature > 0`` the sample is a function of (request, seed): the backend
  draws from a generator seeded per request, never from global RNG state;
- with a ``grammar`` the generated text follows it (tokens it forbids are never
  picked) and ends when it is complete.

Generation failures that are the model's doing (garbage, no EOS before the token
limit) are data in the completion. ``generate`` raises only for environment
problems (a missing adapter directory, out of memory).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True)
class Request:
    messages: tuple[dict[str, str], ...]
    sampling: SamplingParams = SamplingParams()
    prefill: str = ""  # text the assistant turn starts with; part of the completion
    adapter: str | None = None  # path of a PEFT LoRA adapter directory; None = base model
    # constrained decoding: the Lark grammar (llguidance dialect) the generated text
    # must follow (fitness.constrain.format_grammar); None = free decoding
    grammar: str | None = None
    # which configured model answers (the strategy's decoding.model); "" or "default":
    # the backend's own (primary) model. Single-model backends ignore it (the run's
    # pre-flight allows only their model); fitness.backends.multi routes by it.
    model: str = ""


@dataclass(frozen=True)
class Completion:
    text: str  # prefill + generated text, special tokens removed
    prompt_tokens: int
    completion_tokens: int  # generated tokens only, the stop token included
    finish_reason: str  # "stop" (EOS) or "length" (hit max_new_tokens)


class ProgressCallback(Protocol):
    """Called as requests finish: ``progress(requests_just_finished, tokens=their generated tokens)``.
    ``tokens`` is 0 where a backend does not count them as it goes."""

    def __call__(self, requests: int, tokens: int = 0) -> None: ...


@runtime_checkable
class Backend(Protocol):
    """A model that answers batches of requests. See the module docstring."""

    def generate(self, requests: Sequence[Request], progress: ProgressCallback | None = None) -> list[Completion]:
        ...

    def count_tokens(self, text: str) -> int:
        """Length of ``text`` in this backend's model tokens."""
        ...



@runtime_checkable
class LoraBackend(Backend, Protocol):
    """A backend that serves LoRA genes (hf, vllm, Ray over either)."""

    def materialise_lora(self, gene) -> str:
        """The PEFT adapter directory of ``gene`` (a :class:`genomes.lora.LoraGene`),
        made on first use: the same directory for the same weights. The evaluator calls
        it for strategies whose LoRA gene is active."""
        ...
