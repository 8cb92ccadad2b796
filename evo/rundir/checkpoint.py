"""Checkpoints: one per generation, atomic, versioned, JSON + safetensors, never pickle.

Layout::

    RUN_DIR/checkpoints/gen-000003/state.json        everything but array RNG states
    RUN_DIR/checkpoints/gen-000003/rng.safetensors   numpy's and torch's RNG states

A checkpoint directory is written under a temporary name, every file fsynced, then
renamed into place (and the parent directory fsynced), so a process killed at any
moment leaves either the complete new checkpoint or none of it. ``state.json``
carries a SHA-256 of its own payload: a truncated or altered file is detected and
:func:`load_latest` falls back to the previous checkpoint with a warning.

Schema: ``format`` names the file type and ``version`` its layout. Older versions are
upgraded by the functions in :data:`MIGRATIONS` (version -> upgrade to version + 1);
an unknown, newer version is a clear error, never a guess.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from genomes.errors import InputError

FORMAT = "evo-checkpoint"
VERSION = 1
KEEP = 3  # checkpoints kept on disk; older ones are deleted after a successful write
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


class CheckpointError(InputError):
    """A checkpoint that cannot be used (corrupt, truncated, unknown version)."""


@dataclass
class Checkpoint:
    generation: int
    state: dict[str, Any]
    arrays: dict[str, Any]  # name -> numpy array (RNG states)
    path: Path


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def _payload_digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write(run_dir: Path, generation: int, state: dict[str, Any], arrays: dict[str, Any],
          before_rename: Callable[[], None] | None = None) -> Path:
    """Write the checkpoint of ``generation`` atomically; returns its directory."""
    from safetensors.numpy import save_file

    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"gen-{generation:06d}"
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-gen-{generation:06d}-", dir=root))
    payload = {"generation": generation, **state}
    document = {"format": FORMAT, "version": VERSION, "sha256": _payload_digest(payload), "payload": payload}
    with open(staging / "state.json", "w", encoding="utf-8") as f:
        json.dump(document, f, indent=1, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    save_file(dict(arrays), str(staging / "rng.safetensors"))
    with open(staging / "rng.safetensors", "rb") as f:
        os.fsync(f.fileno())
    if before_rename:
        before_rename()  # fault-injection point for the crash tests
    if target.exists():  # a rerun of the same generation after a resume: replace it
        shutil.rmtree(target)
    os.rename(staging, target)
    _fsync_dir(root)
    for old in sorted(p for p in root.glob("gen-*") if p.is_dir())[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def read(path: Path) -> Checkpoint:
    """Load and verify one checkpoint directory; CheckpointError says what is wrong."""
    from safetensors.numpy import load_file

    state_file = path / "state.json"
    try:
        document = json.loads(state_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path.name}: state.json missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path.name}: state.json is truncated or corrupt ({e})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f"{path.name}: not an evo checkpoint")
    version = document.get("version")
    if not isinstance(version, int) or version > VERSION or version < 1:
        raise CheckpointError(f"{path.name}: unknown checkpoint version {version!r}; this build reads versions 1..{VERSION}")
    payload = document.get("payload")
    if not isinstance(payload, dict) or _payload_digest(payload) != document.get("sha256"):
        raise CheckpointError(f"{path.name}: checksum mismatch, the checkpoint is corrupt")
    while version < VERSION:
        payload = MIGRATIONS[version](payload)
        version += 1
    try:
        arrays = load_file(str(path / "rng.safetensors"))
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise CheckpointError(f"{path.name}: rng.safetensors unreadable ({type(e).__name__})") from None
    return Checkpoint(payload["generation"], payload, arrays, path)


def load_latest(run_dir: Path, warn: Callable[[str], None] | None = None) -> Checkpoint:
    """The newest checkpoint that verifies; older ones are tried when newer ones are
    corrupt (each skip is reported through ``warn``). An unknown version is not
    skipped: it means a newer build wrote this run, and guessing would be wrong."""
    warn = warn or (lambda message: print(f"evo: warning: {message}", file=sys.stderr))
    candidates = sorted((p for p in checkpoint_dir(run_dir).glob("gen-*") if p.is_dir()), reverse=True)
    if not candidates:
        raise InputError(f"no checkpoint in {run_dir} (is it a run directory?)")
    problems = []
    for path in candidates:
        try:
            checkpoint = read(path)
        except CheckpointError as e:
            if "unknown checkpoint version" in str(e):
                raise
            problems.append(str(e))
            warn(f"{e}; falling back to the previous checkpoint")
            continue
        return checkpoint
    raise InputError(f"no usable checkpoint in {run_dir}: " + "; ".join(problems))
