"""Limits of the LoRA gene, the packed (seed, sigma) chain encoding and the seed
derivation that materialisers use (see :mod:`genomes.lora`)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from genomes.errors import InputError

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
