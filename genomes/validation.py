"""Validation of user-written structured data (strategy files, run configs).

Every failure raises :class:`~genomes.errors.InputError` whose message starts with
the dotted path of the offending field (``decoding.temperature: must be >= 0``), so a
user can find the line to fix. Unknown fields are errors too: a typo must not pass
silently as a default.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from genomes.errors import InputError

_SCALARS = {"str": str, "int": int, "float": float, "bool": bool}
_STRING_LISTS = ("tuple[str, ...]", "list[str]")


def read_structured(path: Path) -> Any:
    """Read JSON, TOML or YAML by extension; malformed files raise InputError."""
    text = path.read_text(encoding="utf-8", errors="replace")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            return tomllib.loads(text)
        if suffix in (".yaml", ".yml"):
            import yaml  # lazy: only YAML users pay for it

            return yaml.safe_load(text)
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: malformed TOML: {e}") from None
    except Exception as e:  # yaml.YAMLError without importing yaml eagerly
        if type(e).__module__.startswith("yaml"):
            raise InputError(f"{path}: malformed YAML: {str(e).splitlines()[0]}") from None
        raise


def as_mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InputError(f"{where}: expected a table/object, got {type(value).__name__}")
    return value


def reject_unknown(data: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InputError(f"{where}.{unknown[0]}: unknown field (allowed: {', '.join(sorted(allowed))})")


def typed(value: Any, expected: type, where: str) -> Any:
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is tuple:
        return str_tuple(value, where)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise InputError(f"{where}: expected {expected.__name__}, got {value!r}")
    return value


def str_tuple(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{where}: expected a list of strings")
    return tuple(value)


def float_tuple(value: Any, where: str) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise InputError(f"{where}: expected a list of numbers")
    return tuple(float(v) for v in value)


def build_dataclass(cls: type, data: dict[str, Any], where: str) -> Any:
    """Instantiate dataclass ``cls`` from ``data``, checking names and scalar types;
    fields missing from ``data`` keep their defaults."""
    reject_unknown(data, {f.name for f in fields(cls)}, where)
    values = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        value, path = data[f.name], f"{where}.{f.name}"
        if str(f.type) in _STRING_LISTS:
            values[f.name] = str_tuple(value, path)
        elif str(f.type) == "tuple[float, ...]":
            values[f.name] = float_tuple(value, path)
        elif str(f.type) in _SCALARS:
            values[f.name] = typed(value, _SCALARS[str(f.type)], path)
        else:
            values[f.name] = value  # nested or composite: the caller validates it
    return cls(**values)


def read_jsonl_objects(path: str | Path, what: str = "file") -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSONL file, strictly: a
    missing file, a line that is not JSON or not an object is an InputError naming
    the file and line (``what`` names the file's role: "task file", "pairs file")."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{lineno}: malformed JSON: {e.msg}") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{lineno}: expected a JSON object per line")
        rows.append((lineno, row))
    return rows
