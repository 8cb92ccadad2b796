"""JSON that gives back the Python values it was given, types included.

Why: reasoning-gym items carry tuples, dicts with integer keys and numpy scalars in
their ``metadata``, which verifiers read; plain JSON turns them into lists, string
keys and floats (82 of 106 families' items came back different), and pickle may not
be read from anywhere (the project's rule for what crosses a process or the disk).
Here every such value becomes a tagged object: ``{"\\u0000type": "tuple", "items": [...]}``
and likewise for sets, frozensets, dicts whose keys are not all strings (or that hold
the tag key) and numpy scalars (by dtype). :func:`dumps` raises TypeError on any other
type, so nothing is silently changed on the way.
"""

from __future__ import annotations

import json
import sys
from typing import Any

TAG = "\u0000type"  # a key no generated dict holds; one that does is sent in the tagged dict form
_PLAIN = (str, int, float, bool, type(None))


def dumps(value: Any) -> str:
    """One line of JSON (no raw newline: strings escape theirs)."""
    return json.dumps(_encode(value), ensure_ascii=False)


def loads(text: str) -> Any:
    return _decode(json.loads(text))


def _encode(value: Any) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is list:
        return [_encode(v) for v in value]
    if kind is dict:
        if all(type(k) is str for k in value) and TAG not in value:
            return {k: _encode(v) for k, v in value.items()}
        return {TAG: "dict", "items": [[_encode(k), _encode(v)] for k, v in value.items()]}
    if kind in (tuple, set, frozenset):
        return {TAG: kind.__name__, "items": [_encode(v) for v in value]}
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.generic):
        return {TAG: "numpy", "dtype": value.dtype.str, "value": value.item()}
    raise TypeError(f"typed_json cannot carry a {kind.__module__}.{kind.__qualname__}")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    kind = value.get(TAG)
    if kind is None:
        return {k: _decode(v) for k, v in value.items()}
    if kind == "dict":
        return {_decode(k): _decode(v) for k, v in value["items"]}
    if kind == "numpy":
        import numpy

        return numpy.dtype(value["dtype"]).type(value["value"])
    items = [_decode(v) for v in value["items"]]
    return {"tuple": tuple, "set": set, "frozenset": frozenset}[kind](items)
