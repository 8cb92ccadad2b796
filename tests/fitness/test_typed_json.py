"""typed_json (the task-draw helper's wire format): values come back with their types."""

from __future__ import annotations

import numpy as np
import pytest

from fitness import typed_json


def test_values_come_back_equal_and_of_the_same_types():
    value = {"metadata": {"pairs": [(1, "a"), (2, "b")], 3: {"x": None}, "flag": True, "f": 0.5},
             "set": {1, 2}, "frozen": frozenset({"a"}), typed_json.TAG: "a real key named like the tag",
             "np": [np.str_("abc"), np.float64(1.5), np.int64(-7)], "text": "two\nlines"}
    line = typed_json.dumps(value)
    assert "\n" not in line
    back = typed_json.loads(line)
    assert back == value
    assert repr(back) == repr(value)  # tuples stay tuples, int keys ints, numpy scalars numpy


def test_a_type_it_cannot_carry_is_an_error_not_a_change():
    with pytest.raises(TypeError, match="cannot carry"):
        typed_json.dumps({"x": object()})
