"""Crash test: SIGKILL a run at random moments and damage its checkpoints; every
case must resume to the uninterrupted run's final state, or refuse with one line.

    python runs/crash_test.py                          # scripted backend, 20 kills + the damage cases (~1 min)
    python runs/crash_test.py --backend hf --kills 20  # the bundled model (quickstart cut down; ~1 h on 2 cores)
    python runs/crash_test.py --mode damage            # only the damage cases

Kill mode: one uninterrupted run gives the reference and the timings; then each of
``--kills`` runs is killed with SIGKILL at a moment drawn from a seeded uniform over
the run's duration (``--early`` of them before the first checkpoint is written), plus
one kill at each ``EVO_FAULT`` point of the first generations (inside a checkpoint
write, after an evaluation), and resumed with ``evo resume``. A case passes when the
final population, hall of fame, metrics (timings aside), lineage, best.json and
journal equal the reference, and the killed and resumed processes together journaled
no completion twice (``regenerated`` = 0: the completions committed to the journal,
counted in the same transaction, add up to the reference's; a batch generated but
not yet committed when the kill came is lost work, made again once, not a duplicate).

Damage mode: each file of the latest checkpoint is truncated, overwritten with random
bytes, has 16 bytes flipped, is deleted, and state.json gets an unknown version; then
the run is resumed. A case passes when the resume falls back to the previous
checkpoint with one warning naming the file and ends as the reference, or (unknown
version) refuses with one ``evo: error`` line; never a traceback, and the previous
checkpoint's files are unchanged.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMALL_RUN = {  # the quickstart recipe cut down
    "run": {"name": "crash", "generations": 4, "seed": 0},
    "population": {"size": 4, "offspring": 4},
    "tasks": {"families": ["chain_sum", "basic_arithmetic", "letter_counting"], "per_family": 2,
              "heldout_per_family": 2},
}
TIMING = ("wall_s", "backend_s")
DAMAGES = ("truncate", "random", "flip", "delete")


# ---- the child process: one run or resume, counting the completions it journals -----------
KEPT_TABLE = "crash_test_kept"


def child(argv: list[str]) -> None:
    command, target, backend_kind, delay = argv[0], argv[1], argv[2], float(argv[3])
    sys.path.insert(0, str(ROOT / "tests" / "evo"))
    from evo.config.sections import RunConfig
    from evo.engine.backend import build_backend
    from evo.engine.run import resume_evolution, run_evolution

    class Slowed:
        """Sleeps ``delay`` per request before generating, so kills land inside generations."""

        def __init__(self, inner):
            self.inner = inner

        def generate(self, requests, progress=None):
            time.sleep(delay * len(requests))
            return self.inner.generate(requests, progress)

        def count_tokens(self, text):
            return self.inner.count_tokens(text)

    _count_journaled_completions()
    from evo.rundir.files import RunDir
    from genomes.errors import InputError

    try:  # as the evo command does: a mistake or a refusal is one line and status 2
        if command == "run":
            config = RunConfig.from_dict(json.loads(Path(target).read_text()))
            inner = _scripted() if backend_kind == "scripted" else build_backend(config)
            run_evolution(config, backend=Slowed(inner), show_progress=False)
        else:
            config = RunDir(target).read_config()
            inner = _scripted() if backend_kind == "scripted" else build_backend(config)
            resume_evolution(target, backend=Slowed(inner), show_progress=True)
    except InputError as e:
        print(f"evo: error: {e}", file=sys.stderr)
        sys.exit(2)


def _count_journaled_completions() -> None:
    """Every journal commit also adds its completions (votes) to a side table, in the
    same SQLite transaction: a SIGKILL leaves both or neither, so the count is exact."""
    from fitness.journal import Journal

    original = Journal.put_many

    def put_many(self, rows, seed, strategies=None):
        self._db.execute(f"CREATE TABLE IF NOT EXISTS {KEPT_TABLE} (completions INTEGER)")
        self._db.execute(f"INSERT INTO {KEPT_TABLE} VALUES (?)", (sum(r.votes for _, r in rows),))  # opens the transaction
        original(self, rows, seed, strategies)  # ... that this one commits

    Journal.put_many = put_many


def _scripted():
    from fakes import ArithmeticOracle  # tests/evo/fakes.py: answers chain sums, deterministic

    return ArithmeticOracle()


def spawn(args, command: str, target: Path, fault: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("EVO_FAULT", None)
    if fault:
        env["EVO_FAULT"] = fault
    return subprocess.Popen([sys.executable, __file__, "--child", command, str(target), args.backend, str(args.delay)],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ---- what must be identical -----------------------------------------------------------------
def artifacts(run_dir: Path) -> dict:
    import sqlite3

    from evo.rundir import checkpoint

    state = checkpoint.load_latest(run_dir, warn=lambda m: None).state
    rows = [json.loads(line) for line in (run_dir / "lineage.jsonl").read_text().splitlines()]
    metrics = [{k: v for k, v in json.loads(line).items() if k not in TIMING}
               for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    db = sqlite3.connect(run_dir / "journal.sqlite")
    journal = sorted(db.execute("SELECT genome_hash, task_id, seed, score, result FROM results").fetchall())
    db.close()
    return {"population": [state["individuals"][i] for i in state["population"]],
            "hall": [state["individuals"][i] for i in state["hall"]], "lineage": rows, "metrics": metrics,
            "best": json.loads((run_dir / "best.json").read_text()), "journal": journal}


def completions_journaled(run_dir: Path) -> int:
    """Completions committed to the run's journal, by every process that ran it."""
    import sqlite3

    if not (run_dir / "journal.sqlite").exists():
        return 0
    db = sqlite3.connect(run_dir / "journal.sqlite")
    try:
        return db.execute(f"SELECT COALESCE(SUM(completions), 0) FROM {KEPT_TABLE}").fetchone()[0]
    except sqlite3.OperationalError:  # nothing committed yet
        return 0
    finally:
        db.close()


# ---- kill mode ------------------------------------------------------------------------------
def reference(args, work: Path) -> tuple[dict, int, float, tuple[float, float]]:
    """The uninterrupted run: its artifacts, completions journaled, duration, and when its run
    directory became a run (config.json) and when its first checkpoint appeared."""
    ref_dir = work / "reference"
    config = json.loads(json.dumps(SMALL_RUN))
    config["run"]["out_dir"] = str(ref_dir)
    (work / "reference.json").write_text(json.dumps(config))
    started = time.perf_counter()
    proc = spawn(args, "run", work / "reference.json")
    created = first_checkpoint = None
    while proc.poll() is None:
        if created is None and (ref_dir / "crash" / "config.json").exists():
            created = time.perf_counter() - started
        if first_checkpoint is None and list((ref_dir / "crash" / "checkpoints").glob("gen-*")):
            first_checkpoint = time.perf_counter() - started
        time.sleep(0.005)
    duration = time.perf_counter() - started
    if proc.returncode:
        sys.exit(f"crash_test: the reference run failed:\n{proc.stderr.read()}")
    first_checkpoint = first_checkpoint or duration / 5
    return (artifacts(ref_dir / "crash"), completions_journaled(ref_dir / "crash"), duration,
            (created or 0.0, first_checkpoint))


def kill_case(args, work: Path, name: str, expected: dict, expected_completions: int,
              at: float | None = None, fault: str | None = None) -> dict:
    case = work / name
    config = json.loads(json.dumps(SMALL_RUN))
    config["run"]["out_dir"] = str(case)
    (work / f"{name}.json").write_text(json.dumps(config))
    proc = spawn(args, "run", work / f"{name}.json", fault)
    if at is not None:
        try:
            proc.wait(timeout=at)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = proc.returncode == -signal.SIGKILL
    # killed before config.json: no run exists yet, and `evo run` starts it again
    started = (case / "crash" / "config.json").exists()
    checkpoints = sorted((case / "crash" / "checkpoints").glob("gen-*"))
    stage = ("no run yet" if not started else "before 1st checkpoint" if not checkpoints
             else f"after gen {int(checkpoints[-1].name[4:])}")
    resumed = spawn(args, "resume", case / "crash") if started else spawn(args, "run", work / f"{name}.json")
    _, err = resumed.communicate()
    ok = resumed.returncode == 0 and "Traceback" not in err
    identical = ok and artifacts(case / "crash") == expected
    moment = f"{at:.1f} s" if at is not None else fault
    return {"moment": f"{moment} ({stage if killed else 'finished'})", "killed": killed, "early": stage == "before 1st checkpoint",
            "resumed": ok, "identical": identical,
            "regenerated": completions_journaled(case / "crash") - expected_completions,
            "error": "" if ok else err.strip()[-300:]}


def kill_mode(args, work: Path) -> list[dict]:
    expected, expected_completions, duration, (created, first_checkpoint) = reference(args, work)
    print(f"reference run: {duration:.1f} s, a run directory after {created:.1f} s, first checkpoint after "
          f"{first_checkpoint:.1f} s, {expected_completions} completions journaled", flush=True)
    rng = random.Random(args.seed)
    moments = sorted([rng.uniform(created, first_checkpoint) for _ in range(args.early)]
                     + [rng.uniform(0.0, duration) for _ in range(args.kills - args.early)])
    faults = [f"{point}@{g}" for g in range(args.fault_generations) for point in ("after-evaluate", "checkpoint-write")]
    rows = []
    for i, at in enumerate(moments):
        rows.append(kill_case(args, work, f"kill-{i:02d}", expected, expected_completions, at=at))
        _print_row(rows[-1])
    for fault in faults:
        rows.append(kill_case(args, work, f"fault-{fault.replace('@', '-')}", expected, expected_completions, fault=fault))
        _print_row(rows[-1])
    return rows


# ---- damage mode ----------------------------------------------------------------------------
def damage(path: Path, how: str, rng: random.Random) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "random":
        keep = min(len(data), 8 + int.from_bytes(data[:8], "little")) if path.suffix == ".safetensors" else 0
        path.write_bytes(bytes(data[:keep]) + rng.randbytes(len(data) - keep))  # a safetensors header survives
    elif how == "flip":
        start = rng.randrange(max(1, len(data) - 16))
        for i in range(start, min(start + 16, len(data))):
            data[i] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "delete":
        path.unlink()
    elif how == "version":
        document = json.loads(data)
        document["version"] = 99
        path.write_text(json.dumps(document))


def damage_mode(args, work: Path) -> list[dict]:
    base = work / "damage-base"
    config = json.loads(json.dumps(SMALL_RUN))
    config["run"]["out_dir"] = str(base)
    config["run"]["generations"] = 2
    (work / "damage-base.json").write_text(json.dumps(config))
    proc = spawn(args, "run", work / "damage-base.json")
    proc.communicate()
    reference_dir = base / "crash"
    latest = sorted((reference_dir / "checkpoints").glob("gen-*"))[-1]
    cases = [(name, how) for name in sorted(p.name for p in latest.iterdir()) for how in DAMAGES]
    cases.append(("state.json", "version"))
    rng = random.Random(args.seed)
    expected = artifacts(reference_dir)
    rows = []
    for name, how in cases:
        case = work / f"damage-{name}-{how}"
        shutil.copytree(reference_dir, case)
        previous = sorted((case / "checkpoints").glob("gen-*"))[-2]
        before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in previous.iterdir()}
        damage(case / "checkpoints" / latest.name / name, how, rng)
        resumed = spawn(args, "resume", case)
        _, err = resumed.communicate()
        lines = [line for line in err.splitlines() if line.startswith("evo: ")]
        if how == "version":
            ok = resumed.returncode != 0 and "unknown checkpoint version 99" in err
        else:
            ok = (resumed.returncode == 0 and len([x for x in lines if "falling back" in x]) == 1
                  and name in lines[0] and artifacts(case) == expected)
        kept = all(hashlib.sha256((previous / n).read_bytes()).hexdigest() == h for n, h in before.items()
                   if (previous / n).exists())
        outcome = "refused" if resumed.returncode == 2 else resumed.returncode == 0
        rows.append({"moment": f"{name}: {how}", "killed": False, "early": False, "resumed": outcome,
                     "identical": ok and kept and "Traceback" not in err, "regenerated": 0,
                     "error": "" if ok else err.strip()[-300:]})
        _print_row(rows[-1])
    return rows


def _print_row(row: dict) -> None:
    print(f"{row['moment']:<44} {'yes' if row['killed'] else 'no':>6} {row['resumed'] if isinstance(row['resumed'], str) else 'yes' if row['resumed'] else 'NO':>8} "
          f"{'yes' if row['identical'] else 'NO':>10} {row['regenerated']:>12}", flush=True)
    if row["error"]:
        print("    " + row["error"].replace("\n", "\n    "), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("scripted", "hf"), default="scripted")
    parser.add_argument("--mode", choices=("all", "kill", "damage"), default="all")
    parser.add_argument("--kills", type=int, default=20, help="random kill moments")
    parser.add_argument("--early", type=int, default=3, help="of them, before the first checkpoint")
    parser.add_argument("--fault-generations", type=int, default=2,
                        help="kill at each EVO_FAULT point of this many first generations")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments and the damage")
    parser.add_argument("--delay", type=float, default=0.01,
                        help="seconds per request added to the scripted backend, so a run lasts long enough to kill")
    parser.add_argument("--out-dir", default="runs/out/crash_test")
    args = parser.parse_args(argv)
    work = Path(args.out_dir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print(f"{'moment':<44} {'killed':>6} {'resumed':>8} {'identical':>10} {'regenerated':>12}")
    rows = (kill_mode(args, work) if args.mode in ("all", "kill") else []) + \
           (damage_mode(args, work) if args.mode in ("all", "damage") else [])
    passed = sum(r["identical"] and r["regenerated"] == 0 for r in rows)
    print(f"\n{passed}/{len(rows)} cases passed ({args.backend} backend; kills: "
          f"{sum(r['killed'] for r in rows)} processes killed, {sum(r['early'] for r in rows)} before the first "
          f"checkpoint; completions journaled twice: "
          f"{sum(max(r['regenerated'], 0) for r in rows)})")
    return 0 if passed == len(rows) else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
    else:
        sys.exit(main())
