"""Checkpoints: one per generation, atomic, versioned, JSON + safetensors, never pickle.

Layout::

    RUN_DIR/checkpoints/gen-000003/state.json        everything but array RNG states
    RUN_DIR/checkpoints/gen-000003/rng.safetensors   numpy's and torch's RNG states
    RUN_DIR/checkpoints/gen-000003/manifest.json     SHA-256 of every other file, written last

A checkpoint directory is written under a temporary name, every file fsynced, then
renamed into place (and the parent directory fsynced), so a process killed at any
moment leaves either the complete new checkpoint or none of it (and a leftover
``.tmp-gen-*`` that :func:`remove_leftovers` clears on the next resume). Every file
is covered: ``manifest.json`` holds the SHA-256 of each, and ``state.json`` a SHA-256
of its own payload; the RNG states are also checked to be loadable. A truncated,
altered, missing or unloadable file is detected and :func:`load_latest` falls back to
the previous checkpoint with one warning naming the file. Version 1 checkpoints,
written before the manifest existed, are checked by the payload checksum alone.

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

from evo.rundir.rng_state import check_global_rngs
from genomes.errors import InputError

FORMAT = "evo-checkpoint"
VERSION = 2  # 2: a manifest.json covers every file (version 1 checkpoints have none)
KEEP = 3  # checkpoints kept on disk; older ones are deleted after a successful write
MANIFEST = "manifest.json"
LEFTOVER = ".tmp-gen-*"  # a staging directory whose write was interrupted
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    1: lambda payload: payload,  # the payload is unchanged; version 2 only added the manifest
}


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
    _write_manifest(staging)
    if before_rename:
        before_rename()  # fault-injection point for the crash tests
    if target.exists():  # a rerun of the same generation after a resume: replace it
        shutil.rmtree(target)
    os.rename(staging, target)
    _fsync_dir(root)
    for old in sorted(p for p in root.glob("gen-*") if p.is_dir())[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_manifest(staging: Path) -> None:
    files = {p.name: _sha256(p) for p in sorted(staging.iterdir()) if p.name != MANIFEST}
    with open(staging / MANIFEST, "w", encoding="utf-8") as f:
        json.dump({"format": FORMAT + "-manifest", "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def _check_manifest(path: Path) -> None:
    """Every file the manifest lists is there with its SHA-256."""
    manifest = path / MANIFEST
    if not manifest.exists():
        raise CheckpointError(f"{path.name}: {MANIFEST} missing")
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        listed = {str(name): str(digest) for name, digest in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise CheckpointError(f"{path.name}: {MANIFEST} is corrupt") from None
    for name, digest in sorted(listed.items()):
        if not (path / name).is_file():
            raise CheckpointError(f"{path.name}: {name} missing")
        if _sha256(path / name) != digest:
            raise CheckpointError(f"{path.name}: {name} does not match its checksum (damaged)")


def _read_state(path: Path) -> tuple[Any, str | None]:
    """state.json parsed, or (None, what is wrong with it)."""
    try:
        return json.loads((path / "state.json").read_text(encoding="utf-8")), None
    except FileNotFoundError:
        return None, f"{path.name}: state.json missing"
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return None, f"{path.name}: state.json is truncated or corrupt ({e})"


def read(path: Path) -> Checkpoint:
    """Load and verify one checkpoint directory; CheckpointError says what is wrong."""
    from safetensors.numpy import load_file

    document, problem = _read_state(path)
    if isinstance(document, dict) and isinstance(document.get("version"), int) and document["version"] > VERSION:
        problem = None  # a newer build wrote it: refuse below, whatever its checksums say
    elif isinstance(document, dict) and document.get("version") == 1:
        pass  # written before the manifest existed: the payload checksum below covers it
    else:
        _check_manifest(path)
    if problem:
        raise CheckpointError(problem)
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
        check_global_rngs(arrays, payload["global_rngs"])
    except Exception as e:  # safetensors, numpy and torch raise their own error types
        raise CheckpointError(f"{path.name}: rng.safetensors unreadable ({type(e).__name__})") from None
    return Checkpoint(payload["generation"], payload, arrays, path)


def has_checkpoint(run_dir: Path) -> bool:
    return any(p.is_dir() for p in checkpoint_dir(run_dir).glob("gen-*"))


def remove_leftovers(run_dir: Path) -> list[str]:
    """Delete the staging directories of interrupted checkpoint writes; their names."""
    removed = sorted(p.name for p in checkpoint_dir(run_dir).glob(LEFTOVER))
    for name in removed:
        shutil.rmtree(checkpoint_dir(run_dir) / name, ignore_errors=True)
    return removed


def load_latest(run_dir: Path, warn: Callable[[str], None] | None = None, none_usable_ok: bool = False) -> Checkpoint | None:
    """The newest checkpoint that verifies; older ones are tried when newer ones are
    corrupt (each skip is reported through ``warn``). An unknown version is not
    skipped: it means a newer build wrote this run, and guessing would be wrong. With
    ``none_usable_ok``, no checkpoint at all (or none usable) gives None instead of an
    InputError: the caller restarts the run from its config."""
    warn = warn or (lambda message: print(f"evo: warning: {message}", file=sys.stderr))
    candidates = sorted((p for p in checkpoint_dir(run_dir).glob("gen-*") if p.is_dir()), reverse=True)
    if not candidates:
        if none_usable_ok:
            return None
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
    if none_usable_ok:
        return None
    raise InputError(f"no usable checkpoint in {run_dir}: " + "; ".join(problems))
