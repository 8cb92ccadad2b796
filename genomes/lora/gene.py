"""The :class:`LoraGene` dataclass, its JSON encoding and validation, and the
``lora`` slot of a strategy (a gene, a fixed adapter directory, or none)."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from genomes.errors import InputError
from genomes.lora.codec import (
    HASH_LENGTHS,
    KNOWN_TARGETS,
    MATERIALISE_VERSION,
    MAX_CHAIN,
    MAX_LAYER_INDEX,
    MAX_LAYERS,
    RANK_RANGE,
    SEED_LIMIT,
    SIGMA_MAX,
    SIGMA_MIN,
    SOURCES,
    _hash,
    _sigma_code,
    decode_chain,
    encode_chain,
)
from genomes.validation import as_mapping, reject_unknown, str_tuple, typed


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
    - ``max_chain``: the most mutations the chain may hold (1..MAX_CHAIN);
    - ``base``: the model it was made for, as ``decoding.model`` names it ("" = the
      run's primary model). An adapter fits only its base model: operators that
      move a strategy to another model drop the gene (``genomes.operators.strategy``).
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
    base: str = ""

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
        """Plain JSON data; every field, the chain packed by :func:`encode_chain`;
        ``base`` only when set, so genes written before it existed keep their hash."""
        data = {
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
        if self.base:
            data["base"] = self.base
        return data

    @classmethod
    def decode(cls, data: Any, where: str = "lora") -> LoraGene:
        """Validate and build a gene. Missing fields keep their defaults. ``mutations``
        is the packed string that ``encode()`` writes, or a list of ``[seed, sigma]``
        pairs (easier to write by hand)."""
        data = as_mapping(data, where)
        reject_unknown(data, {f.name for f in fields(cls)}, where)
        values: dict[str, Any] = {}
        for name, kind in (("enabled", bool), ("rank", int), ("alpha", float), ("source", str),
                           ("init_seed", int), ("trained_hash", str), ("max_chain", int), ("base", str)):
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
                           ("init_seed", int), ("trained_hash", str), ("max_chain", int), ("base", str)):
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
