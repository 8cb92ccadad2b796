"""Attention over ragged rows in one call per layer: small C kernels for decode steps
and for prefills of several rows.

Why: on a CPU a decode step's attention is many small calls. Rows sit in the parts
of a :class:`fitness.backends.kv_rows.PartsCache` at different column offsets, start
their own columns far apart, and share prompt prefixes; torch's flash kernel needs
one dense block per call, so the lean forward made ~9 calls a layer (runs of rows,
one per shared prefix) and merged them by log-sum-exp. Measured on the real workload
(2-core EPYC, bf16, 68 rows): those calls ran at 6-12 GB/s, about half of every
decode step. This kernel reads each row's columns where they lie, skips padding,
reads a shared prefix from one row's copy (hot in the core's cache for every row that
shares it), and computes one softmax over both: one call a layer, no merge.

A batched prefill (left-padded rows over their prefix) spent a third of its time in
the flash kernel at ~120 GFLOP/s; :func:`prefill_attend` packs each row's real
columns for the CPU's bf16 dot-product instruction and runs register tiles (~5x at
the workload's shapes; see ``ragged_prefill.c``).

The source is ``ragged_attention.c`` beside this file, compiled on first use with
the system C compiler (``cc``/``gcc``; ``-O3 -march=native``), with the prefill
kernel of ``ragged_prefill.c`` (:func:`prefill_attend`) into one library in ``kernels/`` of
the model cache (``$EVO_CACHE_DIR``, else ``~/.cache/evo``), keyed by the source, the
flags and the CPU. Where there is no compiler or the build fails,
:func:`kernel` returns None (one line on stderr says why) and the lean forward
attends as before, with torch's kernels. ``EVO_RAGGED_ATTENTION=0`` turns both off,
``EVO_RAGGED_PREFILL=0`` the prefill kernel alone.

Numerics: scores, softmax and sums in float32 from bf16 (or float32) keys, values
and queries; the output rounded to the cache's dtype once. It differs from the flash
path by rounding only (tests/fitness/backends/test_ragged_attention.py).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("ragged_attention.c")
PREFILL_SOURCE = Path(__file__).with_name("ragged_prefill.c")  # built into the same library
FLAGS = ("-O3", "-march=native", "-ffast-math", "-fPIC", "-shared", "-fopenmp", "-pthread")
TABLE_FIELDS = 7  # own_source, own_row, own_first, own_offset, prefix_source, prefix_row, prefix_start


def enabled(variable: str = "EVO_RAGGED_ATTENTION") -> bool:
    return os.environ.get(variable, "1").strip().lower() not in ("0", "false", "no", "off")


@functools.cache
def _library():
    if not enabled():
        return None
    try:
        return ctypes.CDLL(str(_built_library()))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        print(f"evo: ragged attention kernels unavailable ({error}); using torch's attention", file=sys.stderr)
        return None


@functools.cache
def kernel():
    """The loaded decode kernel (a ctypes function), or None where it cannot be built (see the module docstring)."""
    library = _library()
    if library is None:
        return None
    function = library.ragged_decode_attention
    pointer, int64 = ctypes.c_void_p, ctypes.c_int64
    function.argtypes = [pointer] * 9 + [int64] * 5 + [ctypes.c_float, ctypes.c_int, ctypes.c_int]
    function.restype = ctypes.c_int
    return function


def reset() -> None:
    """Forget the loaded library and kernels: the next call builds or loads them again,
    reading the environment anew (tests; a changed ``SOURCE`` or cache directory)."""
    for cached in (_library, kernel, prefill_kernel):
        cached.cache_clear()


def _built_library() -> Path:
    compiler = next((c for c in (os.environ.get("CC"), "cc", "gcc", "clang") if c and shutil.which(c)), None)
    if compiler is None:
        raise RuntimeError("no C compiler found")
    source = SOURCE.read_bytes() + PREFILL_SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join((compiler, *FLAGS)).encode() + _cpu_signature().encode()).hexdigest()[:16]
    from fitness.backends.model_store import default_cache_dir

    root = default_cache_dir() / "kernels"
    target = root / f"ragged_attention-{key}.so"
    if target.exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as scratch:  # built aside, renamed: concurrent builds are safe
        built = Path(scratch) / target.name
        result = subprocess.run([compiler, *FLAGS, str(SOURCE), str(PREFILL_SOURCE), "-o", str(built), "-lm"],
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {result.stderr.strip()[:300]}")
        os.replace(built, target)
    return target


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: the CPU's model and flags (a shared home may see several machines)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    lines = [line for line in text.splitlines() if line.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(lines)))


def attend(q, sources, mask, table, prefix_end, threads: int):
    """One layer's decode attention (see ``ragged_attention.c`` for the layouts).

    ``q``: ``[rows, kv_heads, group, dim]`` contiguous, bf16 or float32; ``sources``:
    (keys, values) per cache, ``[rows, kv_heads, columns, dim]`` with contiguous columns;
    ``mask``: the step's int64 mask ``[rows, width]`` (contiguous); ``table``: int64
    ``[rows, 7]``, ``prefix_end``: int64 ``[rows]`` (built once per step). Returns the
    output in ``q``'s layout and dtype. Raises RuntimeError when the kernel fails."""
    import torch

    function = kernel()
    rows, kv_heads, group, dim = q.shape
    out = torch.empty_like(q)
    k_ptrs = (ctypes.c_int64 * len(sources))(*(k.data_ptr() for k, _ in sources))
    v_ptrs = (ctypes.c_int64 * len(sources))(*(v.data_ptr() for _, v in sources))
    row_strides = (ctypes.c_int64 * len(sources))(*(k.stride(0) for k, _ in sources))
    head_strides = (ctypes.c_int64 * len(sources))(*(k.stride(1) for k, _ in sources))
    status = function(q.data_ptr(), out.data_ptr(), k_ptrs, v_ptrs, row_strides, head_strides, mask.data_ptr(),
                      table.data_ptr(), prefix_end.data_ptr(), rows, kv_heads, group, dim, mask.shape[1],
                      dim ** -0.5, int(q.dtype == torch.bfloat16), threads)
    if status != 0:
        raise RuntimeError(f"ragged decode attention failed ({status})")
    return out


@functools.cache
def prefill_kernel():
    """The loaded prefill kernel (``ragged_prefill.c``), or None where the library cannot
    be built, was built without the CPU's bf16 dot-product units, or
    ``EVO_RAGGED_PREFILL=0`` turns it off (``EVO_RAGGED_ATTENTION=0`` turns off both)."""
    library = _library()
    if library is None or not library.ragged_prefill_available() or not enabled("EVO_RAGGED_PREFILL"):
        return None
    function = library.ragged_prefill_attention
    pointer, int64 = ctypes.c_void_p, ctypes.c_int64
    function.argtypes = [pointer] * 5 + [int64] * 11 + [ctypes.c_float, ctypes.c_int]
    function.restype = ctypes.c_int
    return function


def prefill_usable(q, keys, values) -> bool:
    """True when :func:`prefill_attend` serves these tensors: bf16 on the CPU, head dim
    64, at most 12 query heads a key head, ``q`` with contiguous head vectors, keys and
    values with contiguous columns and the same strides, and the kernel built."""
    import torch

    rows, heads, _, dim = q.shape
    kv_heads = keys.shape[1]
    if dim != 64 or heads % kv_heads or heads // kv_heads > 12 or q.stride(-1) != 1:
        return False
    for tensor in (q, keys, values):
        if tensor.dtype != torch.bfloat16 or tensor.device.type != "cpu":
            return False
    if keys.shape != values.shape or keys.shape[-1] != dim or keys.shape[0] != rows:
        return False
    if keys.stride() != values.stride() or keys.stride(-1) != 1 or keys.stride(-2) != dim:
        return False
    return prefill_kernel() is not None


def prefill_attend(q, keys, values, mask):
    """A prefill's attention for every row at once (see ``ragged_prefill.c``).

    ``q`` ``[rows, heads, new, dim]`` (any strides with contiguous head vectors);
    ``keys``/``values`` ``[rows, kv_heads, width, dim]`` after the step's update (the
    new tokens are the last ``new`` columns); ``mask`` ``[rows, width]``, 1 for real
    tokens. Returns ``[rows, heads, new, dim]`` (a transposed view of a contiguous
    ``[rows, new, heads, dim]``, ready for the output projection). Raises RuntimeError
    when the kernel fails (no memory)."""
    import torch

    rows, heads, new, dim = q.shape
    mask = mask.to(dtype=torch.long).contiguous()
    out = torch.empty((rows, new, heads, dim), dtype=q.dtype)
    status = prefill_kernel()(q.data_ptr(), out.data_ptr(), keys.data_ptr(), values.data_ptr(), mask.data_ptr(),
                              rows, heads, keys.shape[1], new, mask.shape[1], dim, *q.stride()[:3],
                              keys.stride(0), keys.stride(1), dim ** -0.5, torch.get_num_threads())
    if status != 0:
        raise RuntimeError(f"ragged prefill attention failed ({status})")
    return out.transpose(1, 2)


def compatible(q, sources) -> bool:
    """True when the kernel can read these tensors as they are: one dtype (bf16 or
    float32), CPU, contiguous columns of ``dim`` values, equal strides of keys and values."""
    import torch

    if q.dtype not in (torch.bfloat16, torch.float32) or q.device.type != "cpu" or not q.is_contiguous():
        return False
    dim = q.shape[-1]
    for keys, values in sources:
        for tensor in (keys, values):
            if tensor.dtype != q.dtype or tensor.device.type != "cpu" or tensor.stride(-1) != 1 \
                    or tensor.stride(-2) != dim:
                return False
        if keys.stride() != values.stride():
            return False
    return True


def usable(tensor) -> bool:
    """True when the kernel is built and serves ``tensor``'s dtype (bf16 or float32) and device (the CPU)."""
    import torch

    return tensor.dtype in (torch.bfloat16, torch.float32) and tensor.device.type == "cpu" and kernel() is not None


class RaggedPlan:
    """One decode step's row table for :func:`attend`, built once and used by every layer.

    From a :class:`fitness.backends.kv_rows.SharedPrefixes`, the step's mask (its last
    column the new token) and, for a ``PartsCache``, each part's ``(first row, last
    row + 1, width after the step)`` (parts are right-aligned to the mask). Each row
    reads its own columns from its ``own_start`` on in its part, and its group's
    prefix from the group's first row's copy (the same columns the flash path reads)."""

    def __init__(self, mask, table, prefix_end) -> None:
        self.mask, self.table, self.prefix_end = mask, table, prefix_end

    @classmethod
    def plan(cls, shared, mask, parts=None) -> RaggedPlan:
        import torch

        rows, width = mask.shape
        if parts is None:
            homes = [(0, row, 0) for row in range(rows)]  # (source, row there, the source's first mask column)
        else:
            homes = [(source, row - first, width - part_width)
                     for source, (first, last, part_width) in enumerate(parts) for row in range(first, last)]
        table = [[source, local, max(start, offset), offset, -1, 0, 0]
                 for (source, local, offset), start in zip(homes, shared.own_start, strict=True)]
        prefix_end = [0] * rows
        for group_rows, starts, length in shared.groups:
            source, local, offset = homes[group_rows[0]]  # the first row's copy serves them all
            for row in group_rows:
                table[row][4:7] = [source, local, starts[0] - offset]
                prefix_end[row] = starts[0] - offset + length
        return cls(mask.to(device="cpu", dtype=torch.long).contiguous(), torch.tensor(table, dtype=torch.long),
                   torch.tensor(prefix_end, dtype=torch.long))

    def attend(self, q, sources, kv_heads: int):
        """``q`` ``[rows, heads, 1, dim]``; ``sources``: (keys, values) per part after the
        step's update. Returns ``[rows, heads, 1, dim]``."""
        import torch

        rows, heads, _, dim = q.shape
        grouped = q.reshape(rows, kv_heads, heads // kv_heads, dim).contiguous()
        if not compatible(grouped, sources):  # not expected from the decoder's caches: read copies
            sources = [(k.to(q.dtype).contiguous(), v.to(q.dtype).contiguous()) for k, v in sources]
        return attend(grouped, sources, self.mask, self.table, self.prefix_end,
                      torch.get_num_threads()).reshape(rows, heads, 1, dim)
