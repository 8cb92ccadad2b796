"""The codebase stays navigable: small modules, short functions, imports one way
(genomes <- fitness <- evo), and docstrings that cite only what the repository holds."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("genomes", "fitness", "evo")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# what each package may import from the others
ALLOWED = {"genomes": set(), "fitness": {"genomes"}, "evo": {"genomes", "fitness"}}


def sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_there_is_code_to_check():
    assert len(sources()) > 50


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_and_function_sizes(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: over {MAX_MODULE_LINES} lines: split it by concept"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{path.name}:{node.lineno} {node.name} is {length} lines"


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_one_way(path):
    package = path.relative_to(ROOT).parts[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
        for name in names:
            top = name.split(".")[0]
            if top in PACKAGES and top != package:
                assert top in ALLOWED[package], f"{path.relative_to(ROOT)} imports {name}: {package} must not import {top}"


def test_docstrings_cite_only_files_in_the_repository():
    cited = set()
    for path in sources():
        cited |= set(re.findall(r"\b((?:docs|runs|tests)/[\w./-]+\.(?:md|py|toml))", path.read_text(encoding="utf-8")))
        assert not re.search(r"\bSPEC\b", path.read_text(encoding="utf-8")), f"{path.name} cites a SPEC outside the repo"
    missing = sorted(c for c in cited if not (ROOT / c).exists())
    assert not missing, f"docstrings cite files that do not exist: {missing}"
