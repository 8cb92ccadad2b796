"""The LoRA gene: rank, alpha, target modules, layers, and where the weights come from.

Weights come from one of two sources:

- ``"seed_chain"``: Deep Neuroevolution's compact encoding (Such et al., 2017). The
  adapter is an initial seed plus a list of ``(seed, sigma)`` mutations; the weights
  are re-materialised deterministically from them (see :func:`tensor_spec` for the
  exact contract), so a genome is bytes, not megabytes;
- ``"trained"``: an adapter produced by distillation and kept in the run's adapter
  store under its content hash (``trained_hash``). A chain of ``(seed, sigma)``
  mutations may follow it: its noise is added on top of the trained weights.

Contract:

- :class:`LoraGene` is a frozen dataclass. ``encode()`` gives plain JSON data,
  ``LoraGene.decode()`` validates it and raises :class:`~genomes.errors.InputError`
  naming the offending field (``lora.rank: must be in [1, 256] (got 0)``); unknown
  keys are errors too. ``decode(encode(g)) == g`` for every valid gene.
- A switched-off gene keeps all its fields, so switching it back on restores the same
  adapter; ``content_hash()`` covers every field. ``weights_hash()`` covers only what
  the weights depend on (the key to cache a materialised adapter under).
- The JSON encoding stays under 1 KB whatever the adapter size (rank, model width,
  depth): the chain is packed into 7 characters per mutation (:func:`encode_chain`)
  and is capped at ``max_chain`` (at most :data:`MAX_CHAIN`) mutations, and at most
  :data:`MAX_LAYERS` layers are listed (an empty ``layers`` means every layer).
  At the cap, :func:`mut_lora_perturb` refuses to append and returns the gene
  unchanged: a chain cannot be folded into a shorter one without the weights.
- sigma has at most two significant decimal digits and lies in
  [:data:`SIGMA_MIN`, :data:`SIGMA_MAX`] (0.002, 0.005, 0.01, 0.0025 are fine;
  0.0123 is not): that is what lets a mutation pack into 42 bits, exactly.
- Operators take an explicit ``random.Random``, never touch the global ``random``
  module and never modify their inputs (genes are frozen; results are built with
  :func:`dataclasses.replace`); their output is deterministic in (inputs, rng state).

Pure Python: no torch, no numpy. The torch side (``fitness/backends/lora_weights.py``)
implements the materialisation contract of :func:`tensor_spec` with :func:`derive`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from genomes.errors import InputError
from genomes.validation import as_mapping, reject_unknown, str_tuple, typed

__all__ = [
    "DEFAULT_SIGMAS",
    "KNOWN_TARGETS",
    "LAYER_CHOICES",
    "MATERIALISE_VERSION",
    "MAX_CHAIN",
    "MAX_LAYERS",
    "MAX_LAYER_INDEX",
    "RANKS",
    "SEED_LIMIT",
    "SIGMA_MAX",
    "SIGMA_MIN",
    "SOURCES",
    "TARGET_SETS",
    "LoraGene",
    "ModuleRecipe",
    "TensorSpec",
    "cx_lora",
    "decode_chain",
    "decode_slot",
    "derive",
    "encode_chain",
    "encode_slot",
    "gene_of_slot",
    "layer_choices_for",
    "mut_lora",
    "mut_lora_perturb",
    "mut_lora_reshape",
    "mut_lora_switch",
    "random_lora",
    "sigma_is_valid",
    "tensor_spec",
]

KNOWN_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SOURCES = ("seed_chain", "trained")
RANK_RANGE = (1, 256)
SEED_LIMIT = 2**32  # seeds are in [0, SEED_LIMIT)
MAX_CHAIN = 64  # the largest allowed max_chain
MAX_LAYERS = 32  # at most this many layers listed; () means all layers
MAX_LAYER_INDEX = 255
SIGMA_MIN = 1e-10
SIGMA_MAX = 9.9
HASH_LENGTHS = (16, 64)  # a trained_hash is 16 to 64 lowercase hex digits
MATERIALISE_VERSION = 1  # bump when the contract of tensor_spec changes

DEFAULT_SIGMAS = (0.002, 0.005, 0.01)
RANKS = (4, 8, 16)
TARGET_SETS: tuple[tuple[str, ...], ...] = (
    ("q_proj", "v_proj"),
    ("q_proj", "k_proj", "v_proj", "o_proj"),
    ("gate_proj", "up_proj", "down_proj"),
    KNOWN_TARGETS,
)
# The gene does not know the model's depth, so by default only "all layers" is offered;
# pass layer_choices_for(n_layers) to search over layer subsets too.
LAYER_CHOICES: tuple[tuple[int, ...], ...] = ((),)
# mut_lora's choice among the applicable operators of an enabled gene.
OP_WEIGHTS: Mapping[str, float] = {"perturb": 0.7, "reshape": 0.2, "switch": 0.1}


# ---- sigma and the packed chain -----------------------------------------------------
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"  # base64url
_DIGIT = {c: i for i, c in enumerate(_ALPHABET)}
_TOKEN = 7  # 7 base64url digits = 42 bits = 32-bit seed + 10-bit sigma code
_SIGMA_BITS = 10
_MANTISSAS = 90  # two significant digits: 10..99
_EXPONENTS = 11  # sigma = m * 10**-k, k in 1..11


def _sigma_code(sigma: Any) -> int | None:
    """The 10-bit code of sigma = m * 10**-k (m in 10..99, k in 1..11), or None when
    sigma is not such a number (not a finite float with two significant digits in
    [SIGMA_MIN, SIGMA_MAX])."""
    if not isinstance(sigma, float) or not math.isfinite(sigma) or sigma <= 0:
        return None
    text = f"{sigma:.1e}"  # "5.0e-03"
    if float(text) != sigma:
        return None
    mantissa, exponent = text.split("e")
    m, k = int(mantissa.replace(".", "")), 1 - int(exponent)
    if not 1 <= k <= _EXPONENTS:
        return None
    return (k - 1) * _MANTISSAS + (m - 10)


def _sigma_of(code: int) -> float:
    k, m = code // _MANTISSAS + 1, code % _MANTISSAS + 10
    return float(f"{m}e-{k}")


def sigma_is_valid(sigma: Any) -> bool:
    """Whether ``sigma`` can be a mutation strength (see the module docstring)."""
    return _sigma_code(sigma) is not None


def encode_chain(mutations: Sequence[tuple[int, float]]) -> str:
    """Pack ``(seed, sigma)`` pairs into 7 base64url characters each, in chain order:
    the 42-bit big-endian number ``seed << 10 | sigma_code``. Exact, and 64 mutations
    take 448 characters. Raises ValueError on a seed or sigma out of range."""
    out = []
    for seed, sigma in mutations:
        code = _sigma_code(sigma)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT or code is None:
            raise ValueError(f"encode_chain: invalid mutation {(seed, sigma)!r}")
        value = seed << _SIGMA_BITS | code
        out.append("".join(_ALPHABET[(value >> shift) & 63] for shift in range(6 * (_TOKEN - 1), -1, -6)))
    return "".join(out)


def decode_chain(text: str, where: str = "lora.mutations") -> tuple[tuple[int, float], ...]:
    """The inverse of :func:`encode_chain`; bad text raises InputError naming ``where``."""
    if len(text) % _TOKEN:
        raise InputError(f"{where}: a packed chain has 7 characters per mutation (got {len(text)} characters)")
    bad = next((c for c in text if c not in _DIGIT), None)
    if bad is not None:
        raise InputError(f"{where}: {bad!r} is not a base64url character")
    out = []
    for i in range(0, len(text), _TOKEN):
        value = 0
        for c in text[i:i + _TOKEN]:
            value = value << 6 | _DIGIT[c]
        code = value & ((1 << _SIGMA_BITS) - 1)
        if code >= _MANTISSAS * _EXPONENTS:
            raise InputError(f"{where}[{i // _TOKEN}]: invalid sigma code {code}")
        out.append((value >> _SIGMA_BITS, _sigma_of(code)))
    return tuple(out)


# ---- derived seeds ------------------------------------------------------------------
def derive(*parts: int | str) -> int:
    """A seed derived from ``parts``: the parts written with ``str()`` (ints in
    decimal), joined with ``"/"``, UTF-8 encoded and hashed with SHA-256; the first 8
    bytes of the digest read as a big-endian unsigned integer, modulo 2**63.

    ``derive("init", 7, 3, "q_proj", "A")`` hashes the bytes ``b"init/7/3/q_proj/A"``.
    Stable across processes, machines and Python versions (no ``hash()``), and in
    range for ``torch.Generator().manual_seed``.
    """
    if not parts:
        raise ValueError("derive: needs at least one part")
    for p in parts:
        if isinstance(p, bool) or not isinstance(p, (int, str)):
            raise TypeError(f"derive: parts must be int or str, got {p!r}")
        if isinstance(p, str) and "/" in p:
            raise ValueError(f"derive: a str part must not contain '/', got {p!r}")
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 2**63


def _hash(data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# ---- the gene -----------------------------------------------------------------------
@dataclass(frozen=True)
class LoraGene:
    """A LoRA adapter as a gene. ``enabled=False`` means base weights; the other
    fields are kept so that switching the gene back on restores the same adapter.

    - ``rank``, ``alpha``: PEFT's ``r`` and ``lora_alpha`` (scaling = alpha / rank);
    - ``targets``: module names, a non-empty subset of KNOWN_TARGETS in that order;
    - ``layers``: decoder layer indices, sorted and unique; ``()`` means all layers;
    - ``source``: ``"seed_chain"`` or ``"trained"``;
    - ``init_seed``: the seed of the initial weights (seed_chain only; a trained
      gene's initial weights are the stored adapter and this field is unused);
    - ``mutations``: the ``(seed, sigma)`` chain, applied in order on top of the
      initial (or trained) weights;
    - ``trained_hash``: content hash of the trained adapter in the run's adapter
      store ("" unless source is "trained");
    - ``max_chain``: the most mutations the chain may hold (1..MAX_CHAIN).
    """

    enabled: bool = False
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    layers: tuple[int, ...] = ()
    source: str = "seed_chain"
    init_seed: int = 0
    mutations: tuple[tuple[int, float], ...] = ()
    trained_hash: str = ""
    max_chain: int = MAX_CHAIN

    # ---- properties ------------------------------------------------------------------
    @property
    def is_active(self) -> bool:
        """Whether the model runs with this adapter (else: base weights)."""
        return self.enabled and (self.source == "seed_chain" or (self.source == "trained" and bool(self.trained_hash)))

    @property
    def has_weights(self) -> bool:
        """Whether the adapter can differ from zero. A seed chain without mutations
        materialises to B = 0, i.e. no change to the model: a backend may serve an
        active gene without weights with the base weights."""
        return self.source == "trained" or bool(self.mutations)

    @property
    def at_cap(self) -> bool:
        return len(self.mutations) >= self.max_chain

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    # ---- encoding --------------------------------------------------------------------
    def encode(self) -> dict[str, Any]:
        """Plain JSON data; every field, the chain packed by :func:`encode_chain`."""
        return {
            "enabled": self.enabled,
            "rank": self.rank,
            "alpha": self.alpha,
            "targets": list(self.targets),
            "layers": list(self.layers),
            "source": self.source,
            "init_seed": self.init_seed,
            "mutations": encode_chain(self.mutations),
            "trained_hash": self.trained_hash,
            "max_chain": self.max_chain,
        }

    @classmethod
    def decode(cls, data: Any, where: str = "lora") -> LoraGene:
        """Validate and build a gene. Missing fields keep their defaults. ``mutations``
        is the packed string that ``encode()`` writes, or a list of ``[seed, sigma]``
        pairs (easier to write by hand)."""
        data = as_mapping(data, where)
        reject_unknown(data, {f.name for f in fields(cls)}, where)
        values: dict[str, Any] = {}
        for name, kind in (("enabled", bool), ("rank", int), ("alpha", float), ("source", str),
                           ("init_seed", int), ("trained_hash", str), ("max_chain", int)):
            if name in data:
                values[name] = typed(data[name], kind, f"{where}.{name}")
        if "targets" in data:
            values["targets"] = str_tuple(data["targets"], f"{where}.targets")
        if "layers" in data:
            layers = data["layers"]
            if not isinstance(layers, (list, tuple)):
                raise InputError(f"{where}.layers: expected a list of layer indices")
            values["layers"] = tuple(typed(v, int, f"{where}.layers[{i}]") for i, v in enumerate(layers))
        if "mutations" in data:
            values["mutations"] = _decode_mutations(data["mutations"], f"{where}.mutations")
        return cls(**values).validate(where)

    def validate(self, where: str = "lora") -> LoraGene:
        """Check every field; return the gene itself, or raise InputError naming the
        field at fault."""

        def fail(name: str, why: str) -> None:
            raise InputError(f"{where}.{name}: {why}")

        for name, kind in (("enabled", bool), ("rank", int), ("alpha", float), ("source", str),
                           ("init_seed", int), ("trained_hash", str), ("max_chain", int)):
            value = getattr(self, name)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                fail(name, f"expected {kind.__name__}, got {value!r}")
        if not RANK_RANGE[0] <= self.rank <= RANK_RANGE[1]:
            fail("rank", f"must be in [{RANK_RANGE[0]}, {RANK_RANGE[1]}] (got {self.rank})")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            fail("alpha", f"must be finite and > 0 (got {self.alpha!r})")
        if not isinstance(self.targets, tuple) or not self.targets:
            fail("targets", "must be a non-empty list of module names")
        unknown = [t for t in self.targets if t not in KNOWN_TARGETS]
        if unknown:
            fail("targets", f"unknown module {unknown[0]!r} (known: {', '.join(KNOWN_TARGETS)})")
        if self.targets != _canonical_targets(self.targets):
            fail("targets", f"must be unique and in the order {', '.join(KNOWN_TARGETS)} (got {', '.join(self.targets)})")
        if not isinstance(self.layers, tuple):
            fail("layers", "must be a tuple of layer indices")
        for i, layer in enumerate(self.layers):
            if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= MAX_LAYER_INDEX:
                fail(f"layers[{i}]", f"must be an int in [0, {MAX_LAYER_INDEX}] (got {layer!r})")
        if list(self.layers) != sorted(set(self.layers)):
            fail("layers", "must be sorted and unique")
        if len(self.layers) > MAX_LAYERS:
            fail("layers", f"at most {MAX_LAYERS} layers can be listed (got {len(self.layers)}); [] means all layers")
        if self.source not in SOURCES:
            fail("source", f"must be one of {', '.join(SOURCES)} (got {self.source!r})")
        if not 0 <= self.init_seed < SEED_LIMIT:
            fail("init_seed", f"must be in [0, 2**32) (got {self.init_seed})")
        if not 1 <= self.max_chain <= MAX_CHAIN:
            fail("max_chain", f"must be in [1, {MAX_CHAIN}] (got {self.max_chain})")
        if not isinstance(self.mutations, tuple):
            fail("mutations", "must be a tuple of (seed, sigma) pairs")
        for i, pair in enumerate(self.mutations):
            if not isinstance(pair, tuple) or len(pair) != 2:
                fail(f"mutations[{i}]", f"expected a (seed, sigma) pair, got {pair!r}")
            _check_seed(pair[0], f"{where}.mutations[{i}].seed")
            _check_sigma(pair[1], f"{where}.mutations[{i}].sigma")
        if len(self.mutations) > self.max_chain:
            fail("mutations", f"the chain holds {len(self.mutations)} mutations, more than max_chain = {self.max_chain}")
        if self.source == "trained":
            lo, hi = HASH_LENGTHS
            h = self.trained_hash
            if not (lo <= len(h) <= hi and all(c in "0123456789abcdef" for c in h)):
                fail("trained_hash", f"must be {lo} to {hi} lowercase hex digits for a trained adapter (got {h!r})")
        elif self.trained_hash:
            fail("trained_hash", f"must be empty unless source is 'trained' (got {self.trained_hash!r})")
        return self

    def content_hash(self) -> str:
        """SHA-256 of the canonical JSON encoding (sorted keys, no spaces), 16 hex
        digits. Covers every field, ``enabled`` included."""
        return _hash(self.encode())

    def weights_hash(self) -> str:
        """Hash of what the materialised weights depend on, and of the contract
        version: equal for genes that materialise to the same adapter (whatever
        ``enabled`` and ``max_chain`` say). The key to cache an adapter under."""
        data: dict[str, Any] = {
            "contract": MATERIALISE_VERSION,
            "rank": self.rank,
            "alpha": self.alpha,
            "targets": list(self.targets),
            "layers": list(self.layers),
            "source": self.source,
            "mutations": encode_chain(self.mutations),
        }
        data["base"] = self.trained_hash if self.source == "trained" else self.init_seed
        return _hash(data)


def _decode_mutations(value: Any, where: str) -> tuple[tuple[int, float], ...]:
    if isinstance(value, str):
        return decode_chain(value, where)
    if not isinstance(value, (list, tuple)):
        raise InputError(f"{where}: expected a packed chain string or a list of [seed, sigma] pairs")
    out = []
    for i, pair in enumerate(value):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise InputError(f"{where}[{i}]: expected a [seed, sigma] pair, got {pair!r}")
        out.append((typed(pair[0], int, f"{where}[{i}].seed"), typed(pair[1], float, f"{where}[{i}].sigma")))
    return tuple(out)


def _check_seed(seed: Any, where: str) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise InputError(f"{where}: must be an int in [0, 2**32) (got {seed!r})")


def _check_sigma(sigma: Any, where: str) -> None:
    if not isinstance(sigma, float) or not math.isfinite(sigma) or sigma <= 0:
        raise InputError(f"{where}: must be a finite float > 0 (got {sigma!r})")
    if _sigma_code(sigma) is None:
        raise InputError(f"{where}: must have at most two significant digits and lie in "
                         f"[{SIGMA_MIN:g}, {SIGMA_MAX:g}] (got {sigma!r})")


def _canonical_targets(targets: Sequence[str]) -> tuple[str, ...]:
    return tuple(t for t in KNOWN_TARGETS if t in targets)


# ---- the Strategy slot (backward compatible) ----------------------------------------
def decode_slot(value: Any, where: str = "lora") -> LoraGene | dict[str, Any] | None:
    """Decode ``Strategy.lora``: None stays None (base weights); a mapping with an
    ``enabled`` key is a :class:`LoraGene` (``LoraGene.encode()`` always writes that
    key); any other mapping (``{"adapter_dir": ...}`` and older free-form dicts) is
    kept verbatim as a legacy slot, so existing files and hashes do not change."""
    if value is None or isinstance(value, LoraGene):
        return value
    if not isinstance(value, dict):
        raise InputError(f"{where}: expected a table/object or null")
    if "enabled" in value:
        return LoraGene.decode(value, where)
    return value


def encode_slot(value: LoraGene | dict[str, Any] | None) -> dict[str, Any] | None:
    """Encode ``Strategy.lora``: a gene as ``encode()``, a legacy dict as a copy."""
    if isinstance(value, LoraGene):
        return value.encode()
    return copy.deepcopy(value)


def gene_of_slot(value: LoraGene | dict[str, Any] | None) -> LoraGene | None:
    """The gene that LoRA mutation works on: a LoraGene itself, a disabled default
    gene for None (base weights), None for a legacy dict (not evolvable)."""
    if isinstance(value, LoraGene):
        return value
    if value is None:
        return LoraGene()
    return None


# ---- materialisation contract -------------------------------------------------------
@dataclass(frozen=True)
class ModuleRecipe:
    """The seeds for one adapted module: ``layer``, ``target`` (a KNOWN_TARGETS name),
    ``init_seed_a`` (the torch seed of A's initial values; None for a trained source,
    whose A and B come from the store) and ``noise``: one ``(seed_A, seed_B, sigma)``
    per mutation, in chain order."""

    layer: int
    target: str
    init_seed_a: int | None
    noise: tuple[tuple[int, int, float], ...]


@dataclass(frozen=True)
class TensorSpec:
    """Everything a materialiser needs besides the base model's module shapes."""

    source: str
    rank: int
    alpha: float
    scaling: float
    targets: tuple[str, ...]
    layers: tuple[int, ...]  # resolved: every adapted layer index
    layers_to_transform: tuple[int, ...] | None  # PEFT's value: None = all layers
    trained_hash: str
    weights_hash: str
    modules: tuple[ModuleRecipe, ...]


def tensor_spec(gene: LoraGene, n_layers: int | None = None, where: str = "lora") -> TensorSpec:
    """The recipe that turns an active gene into LoRA weights (pure data, no torch).

    ``n_layers`` is the base model's number of decoder layers; it is needed when
    ``gene.layers`` is ``()`` (all layers) and checks listed layers otherwise. An
    inactive gene raises ValueError; a listed layer the model lacks raises InputError.

    Materialisation contract (version MATERIALISE_VERSION), per ModuleRecipe
    ``(layer l, target t)``; ``in`` and ``out`` are the ``in_features`` and
    ``out_features`` of the base model's ``nn.Linear`` named ``t`` in decoder layer
    ``l`` (for grouped-query attention k_proj / v_proj have the smaller ``out``).
    Shapes follow PEFT: ``lora_A.weight`` is (rank, in), ``lora_B.weight`` is
    (out, rank); the update is ``W + scaling * B @ A`` with scaling = alpha / rank.
    Every tensor is made on the CPU in float32 and cast to the model's dtype and
    device only at the end.

    1. Initial weights.
       seed_chain:
         ``g = torch.Generator(device="cpu").manual_seed(init_seed_a)`` where
         ``init_seed_a = derive("init", gene.init_seed, l, t, "A")``;
         ``A = torch.randn((rank, in), generator=g, dtype=torch.float32) / math.sqrt(in)``;
         ``B = torch.zeros((out, rank), dtype=torch.float32)``.
         (B = 0: with an empty chain the adapter changes nothing.)
       trained:
         A and B are the stored adapter's ``lora_A`` / ``lora_B`` weights for
         (l, t), read as float32, from the adapter whose content hash is
         ``trained_hash`` in the run's adapter store. Its r, lora_alpha, target
         modules and layers must equal the gene's; refuse a mismatch.
    2. For each mutation ``(s, sigma)`` of the chain, in chain order, with
       ``seed_A = derive("noise", s, l, t, "A")`` and ``seed_B = derive("noise", s, l, t, "B")``:
         ``A += sigma * torch.randn((rank, in), generator=torch.Generator(device="cpu").manual_seed(seed_A), dtype=torch.float32)``
         ``B += sigma * torch.randn((out, rank), generator=torch.Generator(device="cpu").manual_seed(seed_B), dtype=torch.float32)``
       (a fresh generator per tensor and mutation; sigma is the Python float).
    3. PEFT config: ``LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets),
       layers_to_transform=list(layers_to_transform) or None, lora_dropout=0.0,
       bias="none")``; write ``adapter_model.safetensors`` and cache the directory
       under ``weights_hash``.

    Layer indices are those of the model's decoder layer list (``model.layers[l]``);
    ``()`` in the gene means every l in ``range(n_layers)``. Seeds depend on
    (seed, layer, target, "A"|"B") only, not on rank or shapes, and the order of
    ``modules`` does not matter.
    """
    if not gene.is_active:
        raise ValueError("tensor_spec: the gene is switched off or has no weight source")
    if n_layers is not None and (isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1):
        raise ValueError(f"tensor_spec: n_layers must be a positive int, got {n_layers!r}")
    if gene.layers:
        if n_layers is not None and gene.layers[-1] >= n_layers:
            raise InputError(f"{where}.layers: layer {gene.layers[-1]} does not exist in a model with {n_layers} layers")
        layers = gene.layers
    elif n_layers is None:
        raise ValueError("tensor_spec: a gene for all layers needs n_layers")
    else:
        layers = tuple(range(n_layers))
    modules = []
    for layer in layers:
        for target in gene.targets:
            init = derive("init", gene.init_seed, layer, target, "A") if gene.source == "seed_chain" else None
            noise = tuple((derive("noise", s, layer, target, "A"), derive("noise", s, layer, target, "B"), sigma)
                          for s, sigma in gene.mutations)
            modules.append(ModuleRecipe(layer, target, init, noise))
    return TensorSpec(
        source=gene.source,
        rank=gene.rank,
        alpha=gene.alpha,
        scaling=gene.scaling,
        targets=gene.targets,
        layers=layers,
        layers_to_transform=gene.layers or None,
        trained_hash=gene.trained_hash,
        weights_hash=gene.weights_hash(),
        modules=tuple(modules),
    )


# ---- operators ----------------------------------------------------------------------
def _new_seed(rng: random.Random, avoid: int | None = None) -> int:
    seed = rng.randrange(SEED_LIMIT)
    while seed == avoid:
        seed = rng.randrange(SEED_LIMIT)
    return seed


def _sigmas(sigmas: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(s) if isinstance(s, int) and not isinstance(s, bool) else s for s in sigmas)
    if not out or not all(sigma_is_valid(s) for s in out):
        raise ValueError(f"sigmas must be a non-empty list of floats with at most two significant digits "
                         f"in [{SIGMA_MIN:g}, {SIGMA_MAX:g}], got {tuple(sigmas)!r}")
    return out


def _shape_options(ranks: Sequence[int], target_sets: Sequence[Sequence[str]],
                   layer_choices: Sequence[Sequence[int]]) -> tuple[tuple[int, ...], tuple[tuple[str, ...], ...], tuple[tuple[int, ...], ...]]:
    """Validated, canonical (targets in KNOWN_TARGETS order, layers sorted) choices."""
    rs = tuple(ranks)
    if not rs or any(isinstance(r, bool) or not isinstance(r, int) or not RANK_RANGE[0] <= r <= RANK_RANGE[1] for r in rs):
        raise ValueError(f"ranks must be ints in [{RANK_RANGE[0]}, {RANK_RANGE[1]}], got {rs!r}")
    ts = []
    for targets in target_sets:
        if isinstance(targets, str) or not targets or any(t not in KNOWN_TARGETS for t in targets):
            raise ValueError(f"target_sets: {targets!r} is not a non-empty subset of {KNOWN_TARGETS}")
        ts.append(_canonical_targets(targets))
    if not ts:
        raise ValueError("target_sets must not be empty")
    ls = []
    for layers in layer_choices:
        canon = tuple(sorted(set(layers)))
        if len(canon) > MAX_LAYERS or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_LAYER_INDEX for v in canon):
            raise ValueError(f"layer_choices: {tuple(layers)!r} must list at most {MAX_LAYERS} ints in [0, {MAX_LAYER_INDEX}]")
        ls.append(canon)
    if not ls:
        raise ValueError("layer_choices must not be empty")
    return rs, tuple(ts), tuple(ls)


def layer_choices_for(n_layers: int) -> tuple[tuple[int, ...], ...]:
    """Layer subsets worth searching for a model with ``n_layers`` decoder layers:
    all layers, the first half, the second half and the last quarter (subsets
    longer than MAX_LAYERS or beyond MAX_LAYER_INDEX are left out)."""
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"layer_choices_for: n_layers must be a positive int, got {n_layers!r}")
    half, quarter = n_layers // 2, max(1, n_layers // 4)
    subsets = [tuple(range(half)), tuple(range(half, n_layers)), tuple(range(n_layers - quarter, n_layers))]
    out: list[tuple[int, ...]] = [()]
    for s in subsets:
        if s and len(s) <= MAX_LAYERS and s[-1] <= MAX_LAYER_INDEX and len(s) < n_layers and s not in out:
            out.append(s)
    return tuple(out)


def mut_lora_perturb(gene: LoraGene, rng: random.Random, sigmas: Sequence[float] = DEFAULT_SIGMAS) -> LoraGene:
    """Append one mutation ``(rng.randrange(2**32), rng.choice(sigmas))`` to the chain
    (on a trained source too: the noise goes on top of the trained weights).
    At the cap (``len(mutations) == max_chain``) the gene is returned unchanged and
    the rng is not used: a chain cannot be folded without the weights."""
    sigmas = _sigmas(sigmas)
    if gene.at_cap:
        return gene
    seed = rng.randrange(SEED_LIMIT)
    return replace(gene, mutations=gene.mutations + ((seed, rng.choice(sigmas)),))


def mut_lora_reshape(
    gene: LoraGene,
    rng: random.Random,
    ranks: Sequence[int] = RANKS,
    target_sets: Sequence[Sequence[str]] = TARGET_SETS,
    layer_choices: Sequence[Sequence[int]] = LAYER_CHOICES,
) -> LoraGene:
    """Change one of rank, targets or layers (to another of the given choices) and
    re-initialise: a new init_seed, an empty chain, source "seed_chain" (a trained
    adapter is dropped). ``enabled`` and ``alpha`` are kept. With an empty chain
    B = 0, so a reshaped gene starts as the zero adapter. When no choice differs
    from the gene, it is returned unchanged."""
    ranks, target_sets, layer_choices = _shape_options(ranks, target_sets, layer_choices)
    options = [
        (name, alternatives)
        for name, alternatives in (
            ("rank", [r for r in dict.fromkeys(ranks) if r != gene.rank]),
            ("targets", [t for t in dict.fromkeys(target_sets) if t != gene.targets]),
            ("layers", [v for v in dict.fromkeys(layer_choices) if v != gene.layers]),
        )
        if alternatives
    ]
    if not options:
        return gene
    name, alternatives = rng.choice(options)
    return replace(
        gene,
        **{name: rng.choice(alternatives)},
        source="seed_chain",
        trained_hash="",
        init_seed=_new_seed(rng, avoid=gene.init_seed),
        mutations=(),
    )


def mut_lora_switch(gene: LoraGene, rng: random.Random, sigmas: Sequence[float] = DEFAULT_SIGMAS) -> LoraGene:
    """Toggle ``enabled``. Switching off keeps every field, so switching back on
    restores the same adapter. Switching on a gene without weights (a seed chain
    with no mutations) starts a fresh seed chain: a new init_seed and one first
    perturbation, so that the switch changes the model's behaviour."""
    sigmas = _sigmas(sigmas)
    if gene.enabled:
        return replace(gene, enabled=False)
    if gene.has_weights:
        return replace(gene, enabled=True)
    fresh = replace(gene, enabled=True, source="seed_chain", trained_hash="", init_seed=_new_seed(rng, avoid=gene.init_seed))
    return mut_lora_perturb(fresh, rng, sigmas)


def cx_lora(a: LoraGene, b: LoraGene, rng: random.Random) -> tuple[LoraGene, LoraGene]:
    """Each child takes one parent's whole gene: ``(a, b)`` or ``(b, a)`` with
    probability 0.5 each (one ``rng.random()`` draw). Genes are frozen, so the
    children may share the parents' objects safely."""
    return (a, b) if rng.random() < 0.5 else (b, a)


def mut_lora(
    gene: LoraGene,
    rng: random.Random,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    ranks: Sequence[int] = RANKS,
    target_sets: Sequence[Sequence[str]] = TARGET_SETS,
    layer_choices: Sequence[Sequence[int]] = LAYER_CHOICES,
    op_weights: Mapping[str, float] = OP_WEIGHTS,
) -> tuple[LoraGene, str]:
    """One change, and the name of the operator used. A switched-off gene is
    switched on ("mut_lora_switch"). An enabled gene is perturbed, reshaped or
    switched off, picked with ``op_weights`` (perturb 0.7, reshape 0.2, switch 0.1)
    among the operators that change it: perturb is left out at the cap, reshape when
    no shape choice differs from the gene."""
    sigmas = _sigmas(sigmas)
    shape = _shape_options(ranks, target_sets, layer_choices)
    if not gene.enabled:
        return mut_lora_switch(gene, rng, sigmas), "mut_lora_switch"
    can_reshape = (any(r != gene.rank for r in shape[0]) or any(t != gene.targets for t in shape[1])
                   or any(v != gene.layers for v in shape[2]))
    applicable = {"perturb": not gene.at_cap, "reshape": can_reshape, "switch": True}
    names = [n for n in ("perturb", "reshape", "switch") if applicable[n] and op_weights.get(n, 0) > 0]
    if names:
        name = rng.choices(names, weights=[op_weights[n] for n in names])[0]
    else:  # every applicable operator has weight 0: switching off always changes the gene
        name = "switch"
    if name == "perturb":
        out = mut_lora_perturb(gene, rng, sigmas)
    elif name == "reshape":
        out = mut_lora_reshape(gene, rng, *shape)
    else:
        out = mut_lora_switch(gene, rng, sigmas)
    return out, f"mut_lora_{name}"


def random_lora(
    rng: random.Random,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    ranks: Sequence[int] = RANKS,
    target_sets: Sequence[Sequence[str]] = TARGET_SETS,
    layer_choices: Sequence[Sequence[int]] = LAYER_CHOICES,
) -> LoraGene:
    """A random enabled seed-chain gene: random rank, targets and layers from the
    choices, a random init_seed and one perturbation. Deterministic in the rng state."""
    sigmas = _sigmas(sigmas)
    ranks, target_sets, layer_choices = _shape_options(ranks, target_sets, layer_choices)
    gene = LoraGene(
        enabled=True,
        rank=rng.choice(ranks),
        targets=rng.choice(target_sets),
        layers=rng.choice(layer_choices),
        init_seed=rng.randrange(SEED_LIMIT),
    )
    return mut_lora_perturb(gene, rng, sigmas)
