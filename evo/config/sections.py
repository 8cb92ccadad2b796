"""Run configuration: typed sections, loaded from TOML or YAML and validated before
any model loads. Errors name the field (``population.size: must be >= 1``); unknown
fields are errors. ``RunConfig.to_dict()`` is what a run directory saves as its
resolved config, and ``load_config`` reads that file back unchanged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from fitness.backends.factory import BACKEND_KINDS
from fitness.tasks import TaskSpec
from genomes.lora import DEFAULT_SIGMAS, sigma_is_valid
from genomes.errors import InputError
from genomes.validation import as_mapping, build_dataclass, read_structured, reject_unknown

SELECTION_MODES = ("scalar", "multi")
OPERATORS = ("mut_prompt", "mut_chain", "mut_decoding", "cx_strategy")
OPTIONAL_OPERATORS = ("mut_lora",)  # LoRA genes evolve only when a config names this


@dataclass(frozen=True)
class RunSection:
    name: str = "run"
    out_dir: str = "runs/out"  # the run directory is out_dir/name
    seed: int = 0  # one seed for task draws, variation and sampling
    generations: int = 4


@dataclass(frozen=True)
class PopulationSection:
    size: int = 8  # mu: survivors per generation
    offspring: int = 8  # lambda: children per generation
    seeds: tuple[str, ...] = ("direct", "stepwise", "fewshot")  # initial strategies (names or files)
    crossover_prob: float = 0.3
    mutation_prob: float = 0.7
    operators: tuple[str, ...] = OPERATORS  # enabled variation operators
    mode: str = "scalar"  # scalar: select on -L_total; multi: NSGA-II on (accuracy, chain tokens)
    hall_of_fame: int = 5
    # With rotating batches: a strategy needs this many batches of evidence before it can
    # outrank one that has them in the hall of fame (and so be reported as the best); one
    # lucky batch is not enough. 1: rank on fitness alone.
    hall_min_batches: int = 1
    llm_rewrite_prob: float = 0.0  # share of mutations that ask the model to rewrite an instruction
    lora_sigmas: tuple[float, ...] = DEFAULT_SIGMAS  # mut_lora: noise scales a perturbation draws from


@dataclass(frozen=True)
class TasksSection:
    families: tuple[str, ...] = ("chain_sum", "basic_arithmetic", "letter_counting")  # families or .jsonl files
    per_family: int = 3  # training tasks per family per generation
    # Draw a fresh training batch every N generations (0: keep one batch until the
    # frontier moves). Survivors are scored on each new batch too, and an individual's
    # fitness covers every batch it was scored on since the frontier last moved, so
    # selection cannot overfit one small batch.
    rotate_every: int = 0
    heldout_per_family: int = 8
    heldout_level: int = 0  # level of the fixed held-out set
    heldout_top: int = 1  # best individuals scored on the held-out set each generation
    split_seed: int = 0
    heldout_fraction: float = 0.2


@dataclass(frozen=True)
class LossSection:
    alpha: float = 1.0  # L_reason: correct and short chains
    beta: float = 1.0  # L_constrained: verified answer
    gamma: float = 0.2  # L_response: well-formed, consistent explanation
    delta: float = 0.2  # L_diff: working at the edge of ability
    reference_tokens: int = 48  # chain length (model tokens) beyond which L_reason decays


@dataclass(frozen=True)
class CurriculumSection:
    start_level: int = 0
    up_threshold: float = 0.7  # best individual's success rate at the frontier that moves it up
    down_threshold: float = 0.2  # ... and down
    spread: int = 1  # levels sampled on either side of the frontier


@dataclass(frozen=True)
class ModelSection:
    name: str = "default"  # bundled SmolLM2-135M-Instruct, or a local HF model directory
    models: tuple[str, ...] = ("default",)  # what the decoding gene may choose from
    cache_dir: str = ""  # empty: $EVO_CACHE_DIR or ~/.cache/evo
    device: str = "cpu"  # hf backend: torch device ("cpu", "cuda")
    token_budget: int = 16_384  # hf backend: padded tokens per batch chunk
    backend: str = "hf"  # "hf" (transformers + PEFT, CPU or GPU) or "vllm" (GPU, pip install 'evo-reason[vllm]')
    max_loras: int = 0  # vllm: adapters resident at once; 0 = population.size + population.offspring
    max_lora_rank: int = 16  # vllm: the largest LoRA rank it will serve
    gpu_memory_utilization: float = 0.85  # vllm: share of GPU memory for weights + KV cache
    batch_invariant: bool = True  # vllm: greedy outputs independent of the batch (slower kernels)
    ray_actors: int = 0  # > 0: shard each generation over this many Ray actors, each with its own backend
    ray_address: str = ""  # empty: start a local Ray; else e.g. "auto" or "ray://head:10001"
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0  # 1.0 for one GPU per vllm actor


@dataclass(frozen=True)
class RunConfig:
    run: RunSection = field(default_factory=RunSection)
    population: PopulationSection = field(default_factory=PopulationSection)
    tasks: TasksSection = field(default_factory=TasksSection)
    loss: LossSection = field(default_factory=LossSection)
    curriculum: CurriculumSection = field(default_factory=CurriculumSection)
    model: ModelSection = field(default_factory=ModelSection)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.out_dir) / self.run.name

    def gene_weights(self) -> dict[str, float]:
        """Relative mutation weight per gene, restricted to the enabled operators."""
        base = {"prompt": 0.5, "chain": 0.3, "decoding": 0.2, "lora": 0.4}
        return {gene: w for gene, w in base.items() if f"mut_{gene}" in self.population.operators}

    def to_dict(self) -> dict[str, Any]:
        return {k: {n: list(v) if isinstance(v, tuple) else v for n, v in section.items()}
                for k, section in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Any, where: str = "config") -> RunConfig:
        data = as_mapping(data, where)
        reject_unknown(data, {f.name for f in fields(cls)}, where)
        sections = {
            f.name: build_dataclass(f.default_factory, as_mapping(data.get(f.name, {}), f.name), f.name)  # type: ignore[misc]
            for f in fields(cls)
        }
        config = cls(**sections)
        _validate(config)
        return config


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a TOML/YAML/JSON config; ``overrides`` ({"run": {"generations": 2}}) win."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file not found: {path}")
    data = read_structured(path) or {}
    as_mapping(data, path.name)
    data.pop("tune", None)  # the [tune] section is read by evo tune only
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
    return RunConfig.from_dict(data, where=path.name)


def _validate(c: RunConfig) -> None:
    p, t, loss, cur = c.population, c.tasks, c.loss, c.curriculum
    checks = [
        (c.run.name.strip() != "" and "/" not in c.run.name, "run.name", "must be a non-empty name without '/'"),
        (c.run.generations >= 1, "run.generations", "must be >= 1"),
        (p.size >= 1, "population.size", "must be >= 1"),
        (p.offspring >= 1, "population.offspring", "must be >= 1"),
        (len(p.seeds) >= 1, "population.seeds", "needs at least one strategy"),
        (0 <= p.crossover_prob <= 1, "population.crossover_prob", "must be in [0, 1]"),
        (0 <= p.mutation_prob <= 1, "population.mutation_prob", "must be in [0, 1]"),
        (p.crossover_prob + p.mutation_prob <= 1 + 1e-9, "population.mutation_prob",
         "crossover_prob + mutation_prob must be <= 1"),
        (p.mode in SELECTION_MODES, "population.mode", f"must be one of {', '.join(SELECTION_MODES)}"),
        (p.hall_of_fame >= 1, "population.hall_of_fame", "must be >= 1"),
        (p.hall_min_batches >= 1, "population.hall_min_batches", "must be >= 1"),
        (p.hall_min_batches == 1 or t.rotate_every >= 1, "population.hall_min_batches",
         "> 1 needs tasks.rotate_every >= 1 (without rotation every strategy is scored on one batch)"),
        (0 <= p.llm_rewrite_prob <= 1, "population.llm_rewrite_prob", "must be in [0, 1]"),
        (len(p.lora_sigmas) >= 1 and all(isinstance(x, float) and sigma_is_valid(x) for x in p.lora_sigmas),
         "population.lora_sigmas", "must be a non-empty list of floats with two significant digits in [1e-10, 9.9]"),
        (len(t.families) >= 1, "tasks.families", "needs at least one family or .jsonl file"),
        (t.per_family >= 1, "tasks.per_family", "must be >= 1"),
        (t.rotate_every >= 0, "tasks.rotate_every", "must be >= 0 (0: never rotate the training batch)"),
        (t.heldout_per_family >= 1, "tasks.heldout_per_family", "must be >= 1"),
        (t.heldout_level >= 0, "tasks.heldout_level", "must be >= 0"),
        (t.heldout_top >= 1, "tasks.heldout_top", "must be >= 1"),
        (0 < t.heldout_fraction < 1, "tasks.heldout_fraction", "must be in (0, 1)"),
        (loss.reference_tokens >= 1, "loss.reference_tokens", "must be >= 1"),
        (cur.start_level >= 0, "curriculum.start_level", "must be >= 0"),
        (0 <= cur.down_threshold < cur.up_threshold <= 1, "curriculum.up_threshold",
         "need 0 <= down_threshold < up_threshold <= 1"),
        (cur.spread >= 0, "curriculum.spread", "must be >= 0"),
        (len(c.model.models) >= 1, "model.models", "needs at least one model"),
        (c.model.token_budget >= 256, "model.token_budget", "must be >= 256"),
        (c.model.backend in BACKEND_KINDS, "model.backend", f"must be one of {', '.join(BACKEND_KINDS)}"),
        (c.model.max_loras >= 0, "model.max_loras", "must be >= 0 (0: sized to the population)"),
        (1 <= c.model.max_lora_rank <= 512, "model.max_lora_rank", "must be in [1, 512]"),
        (0 < c.model.gpu_memory_utilization <= 1, "model.gpu_memory_utilization", "must be in (0, 1]"),
        (c.model.ray_actors >= 0, "model.ray_actors", "must be >= 0 (0: no Ray)"),
        (c.model.cpus_per_actor > 0, "model.cpus_per_actor", "must be > 0"),
        (c.model.gpus_per_actor >= 0, "model.gpus_per_actor", "must be >= 0"),
    ]
    for name in ("alpha", "beta", "gamma", "delta"):
        value = getattr(loss, name)
        checks.append((math.isfinite(value) and value >= 0, f"loss.{name}", "must be a finite number >= 0"))
    for ok, name, why in checks:
        if not ok:
            raise InputError(f"{name}: {why}")
    for i, op in enumerate(p.operators):
        if op not in OPERATORS + OPTIONAL_OPERATORS:
            known = ", ".join(OPERATORS + OPTIONAL_OPERATORS)
            raise InputError(f"population.operators[{i}]: unknown operator {op!r} (known: {known})")
    if not any(op.startswith("mut_") for op in p.operators) and p.mutation_prob > 0:
        raise InputError("population.operators: mutation_prob > 0 needs at least one mut_* operator")
    for i, spec in enumerate(t.families):
        TaskSpec.parse(spec)  # syntax only here; families are checked against reasoning-gym by check_tasks
        if not spec.strip():
            raise InputError(f"tasks.families[{i}]: empty")


def check_tasks(config: RunConfig) -> None:
    """Families exist and JSONL files are readable (imports reasoning-gym: ~1 s)."""
    from fitness.tasks import load_jsonl, reasoning_gym_families

    known = set(reasoning_gym_families())
    for i, entry in enumerate(config.tasks.families):
        spec = TaskSpec.parse(entry)
        if spec.is_file:
            load_jsonl(spec.source)
        elif spec.source not in known:
            raise InputError(f"tasks.families[{i}]: unknown task family {spec.source!r}")
