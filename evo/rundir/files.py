"""The run directory: resolved config, per-generation metrics, lineage, journal, best.

    RUN_DIR/config.json     the resolved config (every default filled in)
    RUN_DIR/metrics.jsonl   one line per generation
    RUN_DIR/lineage.jsonl   one line per evaluated individual: parents, operator, fitness
    RUN_DIR/journal.sqlite  every completion, keyed by (genome hash, task id, seed)
    RUN_DIR/best.json       the hall of fame at the end of the run
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from genomes.errors import InputError


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # rows appended to each log by this process since create() / truncate_jsonl():
        # what a checkpoint records, without re-reading the growing files
        self.lines: dict[str, int] = {}

    @property
    def journal_path(self) -> Path:
        return self.path / "journal.sqlite"

    def holds_a_run(self) -> bool:
        return (self.path / "config.json").exists()

    def check_free(self, overwrite: bool = False) -> None:
        """Raise unless a new run may start here (empty, or ``overwrite``)."""
        if self.holds_a_run() and not overwrite:
            raise InputError(f"run directory already holds a run: {self.path} (continue it with `evo resume "
                             f"{self.path}`, choose another run.name / --name, or --force to replace it)")

    def remove_leftovers(self) -> list[str]:
        """Delete what interrupted writes of this run's files left behind (checkpoint
        staging directories, ``*.tmp`` beside the logs); their paths, relative to the
        run directory. (An adapter store's staging folders may belong to an
        ``evo distill --train`` running beside the run, so they are left alone.)"""
        from evo.rundir import checkpoint

        removed = [f"checkpoints/{name}" for name in checkpoint.remove_leftovers(self.path)]
        for path in sorted(self.path.glob("*.tmp")):
            path.unlink(missing_ok=True)
            removed.append(path.name)
        return removed

    def create(self, config: dict[str, Any], overwrite: bool = False) -> None:
        self.check_free(overwrite)
        if self.holds_a_run():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.jsonl", "lineage.jsonl"):
            (self.path / name).write_text("")
            self.lines[name] = 0
        self.write_json("config.json", config)

    def read_config(self):
        """The run's resolved config (config.json), validated; InputError if it is
        missing or unreadable (then this is no run directory to resume)."""
        from evo.config.sections import RunConfig

        path = self.path / "config.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"no checkpoint and no config.json in {self.path} (is it a run directory?)") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise InputError(f"{path}: unreadable ({e}); the run cannot be restarted from it") from None
        return RunConfig.from_saved(data, where="config.json")

    def append(self, name: str, record: dict[str, Any]) -> None:
        with open(self.path / name, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.lines[name] = self.lines.get(name, 0) + 1

    def write_json(self, name: str, data: Any) -> None:
        """Atomic: readers see the old file or the new one, never half of one."""
        target = self.path / name
        tmp = target.with_suffix(target.suffix + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)

    def truncate_jsonl(self, name: str, lines: int) -> None:
        """Keep the first ``lines`` complete lines (a crash may have left more, or a
        torn last line)."""
        path = self.path / name
        kept = path.read_text(encoding="utf-8").splitlines(keepends=True)[:lines] if path.exists() else []
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, path)
        self.lines[name] = len(kept)

    def read_jsonl(self, name: str) -> list[dict[str, Any]]:
        return read_log(self.path / name)


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of one of a run's JSONL logs, one per line. A line that does
    not parse (a torn last line from a crash, a stray fragment) or is not an object is
    skipped; a missing file has no rows. (User task and pair files, where a bad line is
    an error naming its number, go through ``genomes.validation.read_jsonl_objects``.)"""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
