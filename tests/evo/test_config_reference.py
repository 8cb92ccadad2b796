"""The config reference has one source, the field metadata of evo.config.sections:
`evo config` prints it and the README's table is it, character for character."""

from __future__ import annotations

import dataclasses
from pathlib import Path


from evo.config import reference
from evo.config.sections import MODELS_SECTION, ModelEntry, RunConfig, RunSection
from evo.cli.main import main

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_field_has_help():
    for section in dataclasses.fields(RunConfig):
        values = ModelEntry() if section.name == MODELS_SECTION else section.default_factory()
        for f in dataclasses.fields(values):
            assert f.metadata.get("help"), f"{section.name}.{f.name} has no help text"


def test_readme_table_is_the_generated_reference():
    block = reference.readme_block(README.read_text(encoding="utf-8"))
    assert block is not None, "README.md lacks the config-reference markers"
    assert block == reference.config_reference(markdown=True), (
        "README config table is stale: run `python -m evo.config.reference README.md`")


def test_changing_a_help_text_makes_the_readme_stale(monkeypatch):
    """The check above can fail: a field whose help changes no longer matches the README."""
    field = next(f for f in dataclasses.fields(RunSection) if f.name == "generations")
    monkeypatch.setattr(field, "metadata", {**field.metadata, "help": "a changed help text"})
    assert reference.readme_block(README.read_text(encoding="utf-8")) != reference.config_reference(markdown=True)


def test_update_readme_rewrites_only_the_table(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(f"# title\n\n{reference.START}\nold table\n{reference.END}\n\nafter\n", encoding="utf-8")
    assert reference.update_readme(path) is True
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# title\n") and text.endswith("\nafter\n")
    assert reference.readme_block(text) == reference.config_reference(markdown=True)
    assert reference.update_readme(path) is False


def test_allowed_values_come_from_the_metadata():
    rows = {name: allowed for name, _, allowed, _ in reference.rows()}
    assert rows["population.size"] == ">= 1"
    assert rows["population.mode"] == "one of scalar, multi"
    assert rows["tasks.heldout_fraction"] == "in (0, 1]"


def test_evo_config_prints_a_section(capsys):
    assert main(["config", "loss"]) == 0
    out = capsys.readouterr().out
    assert "loss.alpha" in out and "population.size" not in out


def test_evo_config_unknown_section_is_one_line(capsys):
    assert main(["config", "nope"]) == 2
    assert "no config section 'nope'" in capsys.readouterr().err

