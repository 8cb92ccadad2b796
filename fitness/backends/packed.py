"""Pre-packed bfloat16 weights for the CPU's matrix units (AMX, AVX512-BF16).

``torch.nn.functional.linear`` hands oneDNN a plain row-major weight, and oneDNN
re-lays it out into the blocked format its AMX kernels read on every call. A decode
step multiplies a few dozen rows by every weight of the model, so that re-layout
costs as much as the multiply: measured on this project's 2-core machine, a
576x1728 bf16 projection takes 73 us plain and 35 us pre-packed at 20 rows, the
49152-wide output head 2.0 ms against 1.3 ms (docs/benchmarks.md, "Throughput:
packed bf16 weights"). :func:`pack_linears` lays every ``nn.Linear`` weight out once, beside the
original (which stays the parameter: state dicts, PEFT and adapter building read it).

The packed copy follows the weight: a weight changed in place (its version counter
moves) or replaced is packed again before its next use. Anything that needs
gradients, a dtype other than bfloat16 or a device other than the CPU takes the
ordinary ``F.linear``, so a packed model still trains and still moves.

Numerics: the packed kernel computes the same products; like any oneDNN call, its
rounding can depend on the number of rows, which the decoder already lives with
(docs/backends.md, "Batch invariance").
"""

from __future__ import annotations

import functools

PACK_ROWS_HINT = 32  # oneDNN picks its blocking for this many rows; a decode step runs 1-64


@functools.cache
def packing_supported() -> bool:
    """True when this torch build has oneDNN's packed linear and the CPU multiplies bf16 natively."""
    import torch

    ops = torch.ops.mkldnn
    try:
        return bool(hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise")
                    and ops._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def packable(weight) -> bool:
    """True for a bf16 CPU weight on a machine where :func:`packing_supported`."""
    import torch

    return packing_supported() and weight.dtype == torch.bfloat16 and weight.device.type == "cpu"


def pack_linears(modules) -> int:
    """Give every bf16 CPU ``nn.Linear`` among ``modules`` (``model.modules()``, say) a
    packed weight; returns how many.

    Safe to call twice (already packed layers are skipped) and a no-op where
    :func:`packing_supported` is false."""
    import torch

    if not packing_supported():
        return 0
    packed_class = _packed_linear_class()
    count = 0
    for module in modules:
        if type(module) is torch.nn.Linear and packable(module.weight):
            module.__class__ = packed_class  # keeps parameters, hooks and isinstance(nn.Linear)
            module._packed = None
            count += 1
    return count


def pack_weight(weight):
    """``weight`` ([out, in], bf16, CPU) laid out for :func:`packed_matmul`."""
    import torch

    with torch.no_grad():
        return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), PACK_ROWS_HINT)


def packed_matmul(x, packed):
    """``x @ weight.T`` for a weight packed by :func:`pack_weight` (inference only: no gradient)."""
    import torch

    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")


@functools.cache
def _packed_linear_class():
    """``PackedLinear``, built on first use so that importing this module stays light."""
    import torch

    class PackedLinear(torch.nn.Linear):
        """An ``nn.Linear`` whose inference forward multiplies by a pre-packed weight."""

        def forward(self, x):
            weight = self.weight
            if (x.dtype != torch.bfloat16 or x.device.type != "cpu" or weight.dtype != torch.bfloat16
                    or weight.device.type != "cpu" or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))):
                return torch.nn.functional.linear(x, weight, self.bias)
            if self.bias is None:
                return packed_matmul(x, self._packed_weight())
            return torch.ops.mkldnn._linear_pointwise(x, self._packed_weight(), self.bias, "none", [], "")

        def _packed_weight(self):
            weight = self.weight
            key = (weight.data_ptr(), weight._version, tuple(weight.shape))
            packed = getattr(self, "_packed", None)
            if packed is None or packed[0] != key:
                packed = self._packed = (key, pack_weight(weight))
            return packed[1]

    return PackedLinear
