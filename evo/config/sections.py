"""Run configuration: typed sections, loaded from TOML or YAML and validated before
any model loads. Errors name the field (``population.size: must be >= 1``); unknown
fields are errors. ``RunConfig.to_dict()`` is what a run directory saves as its
resolved config, and ``load_config`` reads that file back unchanged.

Every field is declared with :func:`setting`: its default, its help text and its
allowed values live in the field's metadata, the one source of the checks below, of
``evo config`` and of the README's config table (:mod:`evo.config.reference`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from fitness.backends.factory import BACKEND_KINDS
from fitness.backends.model_store import DTYPES
from fitness.loss import DEFAULT_REFERENCE_TOKENS, LossWeights
from fitness.tasks import TaskSpec
from genomes.errors import InputError
from genomes.lora import DEFAULT_SIGMAS, sigma_is_valid
from genomes.operators import GENE_WEIGHTS
from genomes.strategy import CONSTRAIN_MODES
from genomes.validation import (
    as_mapping,
    build_dataclass,
    read_structured,
    reject_unknown,
)

SELECTION_MODES = ("scalar", "multi")
OPERATORS = ("mut_prompt", "mut_chain", "mut_decoding", "cx_strategy")
OPTIONAL_OPERATORS = ("mut_lora",)  # LoRA genes evolve only when a config names this
DEFAULT_MODEL = "default"  # the bundled SmolLM2-135M-Instruct
EXEMPLAR_SOURCES = ("library", "labeled", "bootstrapped")


def setting(default: Any, help: str, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, choices: tuple[str, ...] | None = None) -> Any:
    """A config field: ``default``, one line of ``help``, and the allowed values
    (``[low, high]``, ``(low, ...`` with ``low_open``, or one of ``choices``) that
    :func:`check_ranges` enforces and the reference prints."""
    return field(default=default, metadata={"help": help, "low": low, "high": high, "low_open": low_open,
                                            "choices": choices})


@dataclass(frozen=True)
class RunSection:
    name: str = setting("run", "the run directory is out_dir/name (no '/')")
    out_dir: str = setting("runs/out", "where run directories are made")
    seed: int = setting(0, "one seed for task draws, variation and sampling")
    generations: int = setting(4, "generations after the initial one", low=1)


@dataclass(frozen=True)
class PopulationSection:
    size: int = setting(8, "mu: survivors per generation", low=1)
    offspring: int = setting(8, "lambda: children per generation", low=1)
    seeds: tuple[str, ...] = setting(("direct", "stepwise", "fewshot"), "initial strategies: shipped seed names or strategy files")
    crossover_prob: float = setting(0.3, "share of children made by crossover", low=0, high=1)
    mutation_prob: float = setting(0.7, "share made by mutation (crossover_prob + mutation_prob <= 1; the rest are copies)",
                                   low=0, high=1)
    operators: tuple[str, ...] = setting(OPERATORS, "enabled variation operators; add mut_lora to evolve LoRA genes",
                                         choices=OPERATORS + OPTIONAL_OPERATORS)
    mode: str = setting("scalar", "scalar: select on -L_total; multi: NSGA-II on (accuracy, chain tokens), or "
                                 "(accuracy, cost) when model.models lists several models",
                        choices=SELECTION_MODES)
    hall_of_fame: int = setting(5, "best distinct strategies kept (ranked by L_total)", low=1)
    hall_min_batches: int = setting(1, "with rotating batches: batches of evidence a strategy needs before it can "
                                       "outrank one that has them (1: rank on fitness alone)", low=1)
    llm_rewrite_prob: float = setting(0.0, "share of mutations that ask the model to rewrite an instruction", low=0, high=1)
    lora_sigmas: tuple[float, ...] = setting(DEFAULT_SIGMAS, "mut_lora: noise scales a perturbation draws from "
                                                             "(two significant digits, in [1e-10, 9.9])")
    race_share: float = setting(0.0, "racing: share of the training batch a new child is scored on first "
                                     "(0: off, every child sees the whole batch)", low=0, high=1)
    race_keep: float = setting(0.5, "racing: share of those children, the best by loss on that part, scored on the "
                                    "rest of the batch; the others are raced out (never selected)", low=0, high=1,
                               low_open=True)
    proposals: int = setting(1, "K > 1: a child is the best of K draws of its operator under a Thompson sample of "
                                "accuracy pooled over gene values (evo.engine.surrogate); 1: plain variation", low=1)
    constrain_modes: tuple[str, ...] = setting(
        CONSTRAIN_MODES, "constrained decoding modes mut_decoding may give a strategy (off: free; structure: steps, "
                         "one answer block, a response; answer: structure + the family's answer pattern); needs llguidance",
        choices=CONSTRAIN_MODES)


@dataclass(frozen=True)
class TasksSection:
    families: tuple[str, ...] = setting(("chain_sum", "basic_arithmetic", "letter_counting"),
                                        "reasoning-gym families (family or family@LEVEL) or .jsonl files")
    per_family: int = setting(3, "training tasks per family per generation", low=1)
    rotate_every: int = setting(0, "draw a fresh training batch every N generations; survivors are scored on it "
                                   "too (0: keep one batch until the frontier moves)", low=0)
    heldout_per_family: int = setting(8, "validation tasks per family, scored each generation (choices read it; "
                                         "selection never does)", low=1)
    heldout_level: int = setting(0, "level of the fixed validation set", low=0)
    heldout_top: int = setting(1, "best individuals scored on the validation set each generation", low=1)
    pick: str = setting("last_generation", "the run's best (export, routes, tuning): highest validation accuracy of "
                        "the last generation or of any", choices=("last_generation", "best_validated"))
    split_seed: int = setting(0, "salt of the train/validation/test partition of every task source")
    heldout_fraction: float = setting(0.2, "share of each task source held out of training (validation + test)",
                                      low=0, high=1, low_open=True)
    test_share: float = setting(0.5, "share of the held-out part that is the test split (reported only, never read "
                                     "by a choice); the rest is validation", low=0, high=0.9)


@dataclass(frozen=True)
class BudgetSection:
    rollouts: int = setting(0, "hard limit on search rollouts (training completions, each vote counted; held-out "
                               "scoring is reported apart); 0: no limit", low=0)
    counts_validation: bool = setting(False, "validation counts against budget.rollouts too (as peers' dev sets "
                                             "do); the search keeps one generation's validation back")


@dataclass(frozen=True)
class RoutingSection:
    enabled: bool = setting(True, "keep a strategy per task family (evo export writes routes.json): the one with the "
                                  "best training evidence, when it beats the default on the family's validation tasks")
    min_tasks: int = setting(8, "training tasks of a family an individual needs to be its candidate", low=1)
    prior_tasks: float = setting(4.0, "pseudo-tasks at the family's mean added to a candidate's evidence", low=0)
    significance: float = setting(0.1, "p a route needs in a sign test against the default on validation", low=0, high=1)
    keep_specialists: bool = setting(False, "selection keeps each family's best among the survivors (scalar mode)")


@dataclass(frozen=True)
class ExemplarsSection:
    sources: tuple[str, ...] = setting(
        EXEMPLAR_SOURCES, "where mutation takes few-shot exemplars from: library (the hand-written ones that fit the "
                          "run's tasks), labeled (training tasks with their gold answer), bootstrapped (the run's own "
                          "verified-correct completions of training tasks)", choices=EXEMPLAR_SOURCES)
    labeled_per_family: int = setting(4, "labeled exemplars drawn per family from its training split", low=0)
    bootstrapped_per_family: int = setting(4, "bootstrapped exemplars kept per family (the shortest correct chains), "
                                              "refreshed every generation", low=0)
    max_question_chars: int = setting(1500, "training questions longer than this are not made exemplars (prompt cost)",
                                      low=20)
    pair_up_seed: bool = setting(True, "start the population with the first seed given two pool exemplars of every "
                                       "kind of task, shown nearest_two (the pair-up mutation)")


@dataclass(frozen=True)
class LossSection:
    alpha: float = setting(LossWeights.alpha, "α, weight of L_reason: correct and short chains", low=0)
    beta: float = setting(LossWeights.beta, "β, weight of L_constrained: the verified answer", low=0)
    gamma: float = setting(LossWeights.gamma, "γ, weight of L_response: a well-formed, consistent explanation", low=0)
    delta: float = setting(LossWeights.delta, "δ, weight of L_diff: working at the edge of ability", low=0)
    reference_tokens: int = setting(DEFAULT_REFERENCE_TOKENS, "chain length (model tokens) beyond which L_reason "
                                                              "decays", low=1)


@dataclass(frozen=True)
class CurriculumSection:
    start_level: int = setting(0, "frontier level each family starts at (family@LEVEL overrides)", low=0)
    up_threshold: float = setting(0.7, "success rate of the best at the frontier that moves it up", low=0, high=1)
    down_threshold: float = setting(0.2, "... and down (below up_threshold)", low=0, high=1)
    spread: int = setting(1, "levels sampled on either side of the frontier", low=0)
    min_evidence: int = setting(6, "frontier outcomes of the best (window of 8) before the frontier may move", low=1, high=8)


@dataclass(frozen=True)
class ModelSection:
    name: str = setting(DEFAULT_MODEL, "the primary model (strategies with decoding.model 'default' use it): the "
                                       "bundled SmolLM2-135M-Instruct ('default'), a name from [models], a packaged "
                                       "model, a .gguf file or a local Hugging Face model directory")
    models: tuple[str, ...] = setting((DEFAULT_MODEL,), "models the decoding.model gene may choose from: 'default' "
                                                        "(the primary model) and names from [models]; two or more "
                                                        "make the model an evolving gene")
    max_resident_models: int = setting(2, "several models: at most this many loaded at once (least recently used "
                                          "unloaded first)", low=1)
    max_resident_gb: float = setting(0.0, "several models: at most this many GiB of weight files loaded at once, "
                                          "least recently used unloaded first (0: no bound but the count)", low=0)
    cache_dir: str = setting("", "where the converted default model is cached (empty: $EVO_CACHE_DIR or ~/.cache/evo)")
    device: str = setting("cpu", "hf backend: torch device (cpu, cuda)")
    dtype: str = setting("auto", "hf backend: weights and activations; auto = bfloat16 where the device multiplies it "
                                 "natively (AMX / AVX512-BF16 CPUs, recent GPUs), else float32", choices=DTYPES)
    token_budget: int = setting(0, "hf backend: padded tokens in the running batch (rows x longest prompt "
                                   "+ tokens it may still generate); 0: auto (32768, and 96 rows, where shared prompt "
                                   "prefixes are read once: the lean bf16 forward; else 16384 and 64)", low=0)
    backend: str = setting("hf", "hf (transformers + PEFT, CPU or GPU) or vllm (pip install 'evo-reason[vllm]')",
                           choices=BACKEND_KINDS)
    max_loras: int = setting(0, "vllm: adapters resident at once (0: population.size + population.offspring + "
                                "tasks.heldout_top)", low=0)
    max_lora_rank: int = setting(16, "vllm: the largest LoRA rank it will serve", low=1, high=512)
    gpu_memory_utilization: float = setting(0.85, "vllm: share of GPU memory for weights and KV cache",
                                            low=0, high=1, low_open=True)
    batch_invariant: bool = setting(True, "vllm: greedy outputs independent of the batch (slower kernels)")
    ray_actors: int = setting(0, "shard each generation over this many Ray actors, each with its own backend "
                                 "(0: no Ray)", low=0)
    ray_address: str = setting("", "Ray cluster (empty: start a local Ray; e.g. 'auto' or 'ray://head:10001')")
    cpus_per_actor: float = setting(1.0, "CPUs reserved per Ray actor", low=0, low_open=True)
    gpus_per_actor: float = setting(0.0, "GPUs reserved per Ray actor (1.0 for one GPU per vllm actor)", low=0)


@dataclass(frozen=True)
class ModelEntry:
    """One ``[models.NAME]`` table: a model a strategy's ``decoding.model`` may name."""

    source: str = setting("", "where its weights are: 'default' (the bundled SmolLM2-135M), a packaged model "
                              "('gemma3-270m', after `bash runs/setup_models.sh`), a .gguf file or a local Hugging "
                              "Face model directory")
    dtype: str = setting("", "its weights and activations (empty: model.dtype)", choices=("",) + DTYPES)
    max_context: int = setting(0, "prompt + generated tokens it may hold; longer requests generate less, a prompt "
                                  "that fills it scores 0 (0: no cap)", low=0)
    cost: float = setting(1.0, "relative cost of one generated token (multi mode with several models minimises mean "
                               "generated tokens x cost; e.g. parameters in units of the primary model's)",
                          low=0, low_open=True)


MODELS_SECTION = "models"  # [models.NAME] tables: a mapping, not a fixed section


@dataclass(frozen=True)
class RunConfig:
    run: RunSection = field(default_factory=RunSection)
    population: PopulationSection = field(default_factory=PopulationSection)
    tasks: TasksSection = field(default_factory=TasksSection)
    budget: BudgetSection = field(default_factory=BudgetSection)
    routing: RoutingSection = field(default_factory=RoutingSection)
    exemplars: ExemplarsSection = field(default_factory=ExemplarsSection)
    loss: LossSection = field(default_factory=LossSection)
    curriculum: CurriculumSection = field(default_factory=CurriculumSection)
    model: ModelSection = field(default_factory=ModelSection)
    models: dict[str, ModelEntry] = field(default_factory=dict)  # [models.NAME]: see ModelEntry

    @property
    def run_dir(self) -> Path:
        return Path(self.run.out_dir) / self.run.name

    def gene_weights(self) -> dict[str, float]:
        """Relative mutation weight per gene, restricted to the enabled operators."""
        return {gene: w for gene, w in GENE_WEIGHTS.items() if f"mut_{gene}" in self.population.operators}

    def loss_weights(self) -> LossWeights:
        return LossWeights(self.loss.alpha, self.loss.beta, self.loss.gamma, self.loss.delta)

    def to_dict(self) -> dict[str, Any]:
        data = {k: {n: list(v) if isinstance(v, tuple) else v for n, v in section.items()}
                for k, section in asdict(self).items()}
        if not self.models:  # runs written before [models] existed read back the same
            del data[MODELS_SECTION]
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str = "config") -> RunConfig:
        data = as_mapping(data, where)
        reject_unknown(data, {f.name for f in fields(cls)}, where)
        sections = {
            f.name: build_dataclass(f.default_factory, as_mapping(data.get(f.name, {}), f.name), f.name)  # type: ignore[misc]
            for f in fields(cls) if f.name != MODELS_SECTION
        }
        tables = as_mapping(data.get(MODELS_SECTION, {}), MODELS_SECTION)
        sections[MODELS_SECTION] = {
            str(name): build_dataclass(ModelEntry, as_mapping(entry, f"{MODELS_SECTION}.{name}"), f"{MODELS_SECTION}.{name}")
            for name, entry in tables.items()
        }
        config = cls(**sections)
        check_ranges(config)
        _check_relations(config)
        return config

    @classmethod
    def from_saved(cls, data: Any, where: str) -> RunConfig:
        """A config a run wrote (config.json, a checkpoint). Fields added since are
        given the value that run actually used, not today's default: runs written
        before ``model.dtype`` existed ran in float32, and those written before
        ``population.constrain_modes`` never constrained decoding, and those written
        before ``tasks.test_share`` had no test split (their held-out set is all
        validation, the same tasks as before), and those written before ``[routing]``
        kept no routes; resume them so."""
        data = as_mapping(data, where)
        model = data.get("model")
        if isinstance(model, dict) and "dtype" not in model:
            data = {**data, "model": {**model, "dtype": "float32"}}
        population = data.get("population")
        if isinstance(population, dict) and "constrain_modes" not in population:
            data = {**data, "population": {**population, "constrain_modes": ["off"]}}
        tasks = data.get("tasks")
        if isinstance(tasks, dict) and "test_share" not in tasks:
            data = {**data, "tasks": {**tasks, "test_share": 0.0}}
        if "routing" not in data:
            data = {**data, "routing": {"enabled": False}}
        return cls.from_dict(data, where)


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


def allowed_text(meta: Any) -> str:
    """The allowed values of a field, as the error messages and the reference say them."""
    low, high, choices = meta.get("low"), meta.get("high"), meta.get("choices")
    if choices:
        return f"one of {', '.join(choices)}"
    if low is not None and high is not None:
        return f"in {'(' if meta.get('low_open') else '['}{low:g}, {high:g}]"
    if low is not None:
        return f"{'>' if meta.get('low_open') else '>='} {low:g}"
    return ""


def check_ranges(config: RunConfig) -> None:
    """Every field against the allowed values in its metadata; floats must be finite."""
    parts = [(section.name, getattr(config, section.name)) for section in fields(config) if section.name != MODELS_SECTION]
    parts += [(f"{MODELS_SECTION}.{name}", entry) for name, entry in config.models.items()]
    for part, values in parts:
        for f in fields(values):
            value, meta, where = getattr(values, f.name), f.metadata, f"{part}.{f.name}"
            if isinstance(value, float) and not math.isfinite(value):
                raise InputError(f"{where}: must be a finite number")
            if meta.get("choices") and isinstance(value, tuple):
                for i, item in enumerate(value):
                    if item not in meta["choices"]:
                        raise InputError(f"{where}[{i}]: unknown value {item!r} ({allowed_text(meta)})")
            elif meta.get("choices") and value not in meta["choices"]:
                raise InputError(f"{where}: must be {allowed_text(meta)} (got {value!r})")
            elif not _in_range(value, meta):
                raise InputError(f"{where}: must be {allowed_text(meta)} (got {value!r})")


def _in_range(value: Any, meta: Any) -> bool:
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value <= low if meta.get("low_open") else value < low):
        return False
    return high is None or value <= high


def _check_relations(c: RunConfig) -> None:
    """The rules that tie fields together or look inside values."""
    p, t, cur, m = c.population, c.tasks, c.curriculum, c.model
    checks = [
        (c.run.name.strip() != "" and "/" not in c.run.name, "run.name", "must be a non-empty name without '/'"),
        (len(p.seeds) >= 1, "population.seeds", "needs at least one strategy"),
        (len(p.constrain_modes) >= 1, "population.constrain_modes", "needs at least one mode (off: never constrain)"),
        (p.crossover_prob + p.mutation_prob <= 1 + 1e-9, "population.mutation_prob", "crossover_prob + mutation_prob must be <= 1"),
        (p.hall_min_batches == 1 or t.rotate_every >= 1, "population.hall_min_batches",
         "> 1 needs tasks.rotate_every >= 1 (without rotation every strategy is scored on one batch)"),
        (len(p.lora_sigmas) >= 1 and all(isinstance(x, float) and sigma_is_valid(x) for x in p.lora_sigmas),
         "population.lora_sigmas", "must be a non-empty list of floats with two significant digits in [1e-10, 9.9]"),
        (any(op.startswith("mut_") for op in p.operators) or p.mutation_prob == 0, "population.operators",
         "mutation_prob > 0 needs at least one mut_* operator"),
        (len(t.families) >= 1, "tasks.families", "needs at least one family or .jsonl file"),
        (cur.down_threshold < cur.up_threshold, "curriculum.up_threshold", "need 0 <= down_threshold < up_threshold <= 1"),
        (len(m.models) >= 1, "model.models", "needs at least one model"),
    ]
    for ok, name, why in checks:
        if not ok:
            raise InputError(f"{name}: {why}")
    for name, entry in c.models.items():
        if not name.strip() or "/" in name or name in PRIMARY_ALIASES:
            raise InputError(f"models.{name}: a model needs a name without '/', other than 'default' "
                             "(the primary model is model.name)")
        if not entry.source.strip():
            raise InputError(f"models.{name}.source: empty (say where the weights are: 'default', 'gemma3-270m', "
                             "a .gguf file or a model directory)")
    for i, name in enumerate(m.models):
        if name not in run_model_names(c):
            known = ", ".join(dict.fromkeys((DEFAULT_MODEL, m.name, *c.models)))
            raise InputError(f"model.models[{i}]: unknown model {name!r} (known: {known}; add a [models.{name}] "
                             "table with its source)")
    for i, spec in enumerate(t.families):
        if not spec.strip():
            raise InputError(f"tasks.families[{i}]: empty")
        TaskSpec.parse(spec)  # syntax only here; families are checked against reasoning-gym before a run


PRIMARY_ALIASES = ("", DEFAULT_MODEL)


def run_model_names(config: RunConfig) -> tuple[str, ...]:
    """Names ``model.models`` may hold: "default" and ``model.name`` (the primary), and the [models] tables."""
    return tuple(dict.fromkeys((config.model.name, DEFAULT_MODEL, *config.models)))


def gene_model(config: RunConfig, name: str) -> str:
    """The ``decoding.model`` value for a configured name: "default" for any alias of the primary model."""
    return DEFAULT_MODEL if name in PRIMARY_ALIASES or name == config.model.name else name


def served_models(config: RunConfig) -> tuple[str, ...]:
    """The run's models as ``decoding.model`` values, "default" first: what mutation
    chooses from. More than one: the model evolves and the backend serves several."""
    return tuple(dict.fromkeys((DEFAULT_MODEL, *(gene_model(config, n) for n in config.model.models))))


def model_entry(config: RunConfig, gene: str) -> ModelEntry:
    """The settings of the model a ``decoding.model`` value names (canonical or not)."""
    name = config.model.name if gene_model(config, gene) == DEFAULT_MODEL else gene
    if name in config.models:
        return config.models[name]
    return ModelEntry(source=name)
