"""A reasoning strategy: prompt gene, chain gene, decoding gene (and a LoRA slot).

Contract:
- every gene is an immutable dataclass; ``Strategy.encode()`` gives plain JSON data
  with a schema version, ``Strategy.decode()`` validates it and raises
  :class:`~genomes.errors.InputError` naming the offending field (unknown keys too,
  so typos do not pass silently);
- ``Strategy.content_hash()`` is a stable hash of the encoded genes; the display
  ``name`` is not part of it, so renaming a strategy never invalidates cached scores;
- ``Strategy.render(question)`` is pure and gives the chat messages plus an optional
  assistant prefill that the backend continues from; which exemplars it shows may
  depend on the question (``PromptGene.exemplar_choice``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from genomes.chat_format import BEGIN_ANSWER, BEGIN_RESPONSE, COT, END_ANSWER, END_RESPONSE, MARKERS, format_completion
from genomes.errors import InputError
from genomes.exemplar_choice import EXEMPLAR_CHOICES, FIXED, choose_exemplars
from genomes.lora import LoraGene, decode_slot, encode_slot
from genomes.validation import as_mapping, build_dataclass, read_structured, reject_unknown, str_tuple, typed

SCHEMA_VERSION = 1
CONSTRAIN_MODES = ("off", "structure", "answer")  # DecodingGene.constrain
SEEDS_DIR = Path(__file__).parent / "seeds"


@dataclass(frozen=True)
class Exemplar:
    """A worked example shown as a user/assistant turn before the real question.

    ``source`` says where it came from: empty for the hand-written library, else
    ``"labeled:<split>:<task id>"`` (a task's question and gold answer) or
    ``"bootstrapped:<split>:<task id>:#<individual id>"`` (a verified-correct
    completion of the run's own model); see :mod:`evo.engine.exemplar_pool`."""

    question: str
    steps: tuple[str, ...]
    answer: str
    response: str = ""
    source: str = ""


@dataclass(frozen=True)
class PromptGene:
    """System instruction built from fragment slots, plus few-shot exemplars."""

    role: str = "You are a careful problem solver."
    approach: str = "Think step by step."
    format_rule: str = (
        f"Write each reasoning step after a {COT} marker. Then write only the final answer "
        f"between {BEGIN_ANSWER} and {END_ANSWER}, then one short sentence for a person "
        f"between {BEGIN_RESPONSE} and {END_RESPONSE}."
    )
    cautions: str = ""
    answer_format: str = "The final answer is a bare value: no units, no words, no working."
    exemplars: tuple[Exemplar, ...] = ()
    # Which exemplars each question sees: genomes.exemplar_choice.EXEMPLAR_CHOICES.
    exemplar_choice: str = FIXED

    def system_text(self) -> str:
        slots = (self.role, self.approach, self.format_rule, self.answer_format, self.cautions)
        return " ".join(s.strip() for s in slots if s and s.strip())


@dataclass(frozen=True)
class ChainGene:
    """The chain template: ordered step hints rendered as the required <cot> structure."""

    step_hints: tuple[str, ...] = ()
    max_steps: int = 6
    self_check: bool = False
    prefill: bool = True  # start the assistant turn with "<cot>" so the format is entered

    def instruction(self) -> str:
        hints = list(self.step_hints)
        if self.self_check:
            hints.append("Check the result once more.")
        parts = [f"Use at most {self.max_steps} steps."]
        if hints:
            template = " ".join(f"{COT} {h}" for h in hints)
            parts.append(f"Follow this chain: {template} {BEGIN_ANSWER} ... {END_ANSWER}")
        return " ".join(parts)


@dataclass(frozen=True)
class DecodingGene:
    """Architecture and decoding choices."""

    model: str = "default"  # a name from the configured model list, or a local path
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    max_new_tokens: int = 128
    votes: int = 1  # 1: single pass; k > 1: self-consistency, majority of k samples
    # constrained decoding of the reasoning format (fitness.constrain): off, structure
    # (steps, one answer block, a response block) or answer (structure + the family's
    # answer pattern)
    constrain: str = "off"


@dataclass(frozen=True)
class RenderedPrompt:
    """Chat messages for one question, and text the assistant turn starts with."""

    messages: tuple[dict[str, str], ...]
    prefill: str = ""


@dataclass(frozen=True)
class Strategy:
    name: str = "unnamed"
    prompt: PromptGene = field(default_factory=PromptGene)
    chain: ChainGene = field(default_factory=ChainGene)
    decoding: DecodingGene = field(default_factory=DecodingGene)
    # The LoRA gene (genomes.lora.LoraGene); None = base weights. A dict without an
    # "enabled" key ({"adapter_dir": ...}) is a fixed adapter, kept verbatim and never mutated.
    lora: LoraGene | dict[str, Any] | None = None

    # ---- rendering -------------------------------------------------------------
    def render(self, question: str) -> RenderedPrompt:
        system = f"{self.prompt.system_text()} {self.chain.instruction()}".strip()
        messages: list[dict[str, str]] = [{"role": "system", "content": system}]
        # an exemplar of this very question would hand the model its answer
        shown = [ex for ex in self.prompt.exemplars if ex.question != question]
        for ex in choose_exemplars(shown, question, self.prompt.exemplar_choice):
            messages.append({"role": "user", "content": ex.question})
            messages.append({"role": "assistant", "content": format_completion(ex.steps, ex.answer, ex.response)})
        messages.append({"role": "user", "content": question})
        return RenderedPrompt(messages=tuple(messages), prefill=COT if self.chain.prefill else "")

    # ---- encoding --------------------------------------------------------------
    def encode(self) -> dict[str, Any]:
        data = asdict(self)
        data["lora"] = encode_slot(self.lora)
        # Left out at its default so every strategy written before the field existed
        # keeps its content hash (journal caches and checkpoints are keyed by it).
        if data["prompt"]["exemplar_choice"] == FIXED:
            del data["prompt"]["exemplar_choice"]
        if data["decoding"]["constrain"] == "off":
            del data["decoding"]["constrain"]
        for exemplar in data["prompt"]["exemplars"]:  # library exemplars: hashes as before
            if not exemplar["source"]:
                del exemplar["source"]
        data["schema_version"] = SCHEMA_VERSION
        return data

    def content_hash(self) -> str:
        genes = self.encode()
        genes.pop("name")
        canonical = json.dumps(genes, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @classmethod
    def decode(cls, data: Any, where: str = "strategy") -> Strategy:
        data = as_mapping(data, where)
        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise InputError(f"{where}.schema_version: unsupported version {version!r} (this build reads {SCHEMA_VERSION})")
        reject_unknown(data, {f.name for f in fields(cls)} | {"schema_version"}, where)
        prompt = as_mapping(data.get("prompt", {}), f"{where}.prompt")
        exemplars = prompt.get("exemplars", [])
        if not isinstance(exemplars, (list, tuple)):  # a tuple is what encode() gives
            raise InputError(f"{where}.prompt.exemplars: expected a list, got {type(exemplars).__name__}")
        prompt = {**prompt, "exemplars": tuple(decode_exemplar(e, f"{where}.prompt.exemplars[{i}]") for i, e in enumerate(exemplars))}
        chain = as_mapping(data.get("chain", {}), f"{where}.chain")
        if "step_hints" in chain:
            chain = {**chain, "step_hints": str_tuple(chain["step_hints"], f"{where}.chain.step_hints")}
        lora = decode_slot(data.get("lora"), f"{where}.lora")
        strategy = cls(
            name=typed(data.get("name", "unnamed"), str, f"{where}.name"),
            prompt=build_dataclass(PromptGene, prompt, f"{where}.prompt"),
            chain=build_dataclass(ChainGene, chain, f"{where}.chain"),
            decoding=build_dataclass(DecodingGene, as_mapping(data.get("decoding", {}), f"{where}.decoding"), f"{where}.decoding"),
            lora=lora,
        )
        _check_ranges(strategy, where)
        return strategy

    # ---- files -----------------------------------------------------------------
    @classmethod
    def load(cls, path_or_name: str | Path) -> Strategy:
        """Load a strategy from a .json/.toml/.yaml file, or a shipped seed by name."""
        path = Path(path_or_name)
        if not path.exists() and (SEEDS_DIR / f"{path_or_name}.json").exists():
            path = SEEDS_DIR / f"{path_or_name}.json"
        if not path.is_file():
            seeds = ", ".join(seed_names())
            raise InputError(f"strategy file not found: {path_or_name} (shipped seeds: {seeds})")
        return cls.decode(read_structured(path), where=path.name)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.encode(), indent=2) + "\n")


def seed_names() -> list[str]:
    return sorted(p.stem for p in SEEDS_DIR.glob("*.json"))


# ---- strategy-specific validation --------------------------------------------------
def decode_exemplar(data: Any, where: str = "exemplar") -> Exemplar:
    """An :class:`Exemplar` from JSON data, validated (InputError names the field)."""
    data = dict(as_mapping(data, where))
    for required in ("question", "answer"):
        if required not in data:
            raise InputError(f"{where}.{required}: missing")
    data["steps"] = str_tuple(data.get("steps", []), f"{where}.steps")
    exemplar = build_dataclass(Exemplar, data, where)
    # The assistant turn is rendered with format_completion: a blank answer or step,
    # or a format marker inside one, would show the model a completion that the
    # parser reads differently (an empty answer block, a second answer).
    if not exemplar.answer.strip():
        raise InputError(f"{where}.answer: must not be empty")
    for i, step in enumerate(exemplar.steps):
        if not step.strip():
            raise InputError(f"{where}.steps[{i}]: must not be empty")
    for name, text in [("answer", exemplar.answer), ("response", exemplar.response)] + [
        (f"steps[{i}]", step) for i, step in enumerate(exemplar.steps)
    ]:
        marker = next((m for m in MARKERS if m in text), None)
        if marker:
            raise InputError(f"{where}.{name}: contains the format marker {marker}")
    return exemplar


def _check_ranges(s: Strategy, where: str) -> None:
    d, c = s.decoding, s.chain
    checks = [
        (d.temperature >= 0, "decoding.temperature", "must be >= 0"),
        (math.isfinite(d.temperature), "decoding.temperature", "must be finite"),
        (0 < d.top_p <= 1, "decoding.top_p", "must be in (0, 1]"),
        (1 <= d.max_new_tokens <= 8192, "decoding.max_new_tokens", "must be in [1, 8192]"),
        (1 <= d.votes <= 64, "decoding.votes", "must be in [1, 64]"),
        (d.votes == 1 or d.temperature > 0, "decoding.votes", "self-consistency needs temperature > 0"),
        (d.constrain in CONSTRAIN_MODES, "decoding.constrain", f"must be one of {', '.join(CONSTRAIN_MODES)}"),
        (1 <= c.max_steps <= 64, "chain.max_steps", "must be in [1, 64]"),
        (s.prompt.exemplar_choice in EXEMPLAR_CHOICES, "prompt.exemplar_choice", f"must be one of {', '.join(EXEMPLAR_CHOICES)}"),
    ]
    for ok, name, why in checks:
        if not ok:
            raise InputError(f"{where}.{name}: {why}")
