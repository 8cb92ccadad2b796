"""Number literals in model output and gold answers: the one parser that the
verifiers (is the answer this number?) and the loss (does a step mention it?) share.
Values are exact :class:`~fractions.Fraction` s; nothing here raises on model text."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

_SIGN = r"[-+]?"
_UNSIGNED_DECIMAL = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+"
_DECIMAL = re.compile(rf"({_SIGN})({_UNSIGNED_DECIMAL})(?:[eE]([-+]?\d{{1,3}}))?")
_FRACTION = re.compile(rf"({_SIGN})(\d+)/(\d+)")
# inside running text: not glued to a word or another number
_NUMBER_IN_TEXT = re.compile(r"(?<![\w.])([-+]?)((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)")
_FRACTION_IN_TEXT = re.compile(r"(?<![\w.])([-+]?)(\d+)/(\d+)(?![\d.])")
# Exponents beyond this make Fraction arithmetic slow and are never a real answer.
MAX_DECIMAL_EXPONENT = 100


def _signed(sign: str, value: Fraction) -> Fraction:
    return -value if sign == "-" else value


def parse_number(text: str, *, gold: bool = False) -> Fraction | None:
    """The exact value of ``text`` when it is one number literal, else None.

    Accepted: integers, decimals, thousands separators (``1,234``), ``1.5e3``, and a
    fraction ``p/q``. Unless ``gold``, a fraction must be in lowest terms with
    ``q > 1``, so that ``8/4`` (the question's own expression, for gold 2) is not an
    answer; a gold value may be any fraction with ``q != 0``.
    """
    text = text.strip().replace("\u2212", "-")  # the typographic minus sign
    match = _DECIMAL.fullmatch(text)
    if match:
        sign, digits, exponent = match.groups()
        if exponent is not None and abs(int(exponent)) > MAX_DECIMAL_EXPONENT:
            return None
        try:
            value = Fraction(Decimal(digits.replace(",", "") + (f"e{exponent}" if exponent else "")))
        except (InvalidOperation, ValueError):
            return None
        return _signed(sign, value)
    match = _FRACTION.fullmatch(text)
    if match:
        sign, num, den = match.groups()
        p, q = int(num), int(den)
        if q == 0 or (not gold and (q == 1 or math.gcd(p, q) != 1)):
            return None
        return _signed(sign, Fraction(p, q))
    return None


def numbers_in(text: str) -> set[Fraction]:
    """Every number literal (decimal or fraction) that stands on its own in ``text``."""
    text = text.replace("\u2212", "-")
    values = {_signed(m.group(1), Fraction(m.group(2).replace(",", ""))) for m in _NUMBER_IN_TEXT.finditer(text)}
    values |= {_signed(m.group(1), Fraction(int(m.group(2)), int(m.group(3))))
               for m in _FRACTION_IN_TEXT.finditer(text) if int(m.group(3)) != 0}
    return values
