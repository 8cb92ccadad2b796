"""Tasks are the same in every process, whatever its hash seed (fitness.canonical_draws)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# ransom_note draws letters from a set of strings: under raw reasoning-gym its
# questions follow the hash seed (runs/check_task_determinism.py lists the others)
DRAW = ("import json; from fitness.tasks import TaskSpec, load_tasks; "
        "tasks = load_tasks([TaskSpec.parse('ransom_note'), TaskSpec.parse('isomorphic_strings')], n=5, split='test', seed=3); "
        "print(json.dumps([[t.id, t.question, t.answer] for t in tasks]))")
RAW = ("import json; from fitness.canonical_draws import generate_items; "
       "print(json.dumps([i['question'] for i in generate_items('ransom_note', 0, 7, 6)]))")


def _run(code: str, hash_seed: str) -> list:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_tasks_are_the_same_under_every_hash_seed_and_match_the_canonical_draw():
    raw = [_run(RAW, seed) for seed in ("1", "2")]
    assert raw[0] != raw[1]  # the generator itself follows the hash seed (else this test proves nothing)
    draws = [_run(DRAW, seed) for seed in ("0", "1", "2")]
    assert draws[0] == draws[1] == draws[2]
    assert len(draws[0]) == 10


def test_draws_in_this_process_equal_the_canonical_ones_and_are_copies():
    from fitness import canonical_draws

    ours = canonical_draws.draw_items("ransom_note", 0, 7, 6)
    assert [item["question"] for item in ours] == _run(RAW, "0")
    ours[0]["question"] = "changed"
    assert canonical_draws.draw_items("ransom_note", 0, 7, 6)[0]["question"] != "changed"


def test_a_generator_error_is_raised_in_the_asking_process(monkeypatch):
    from fitness import canonical_draws

    monkeypatch.setattr(canonical_draws, "hash_seed_is_canonical", lambda: False)
    with pytest.raises(Exception) as raised:
        canonical_draws.draw_items("no_such_family_xyz", 0, 1, 2)
    assert "no_such_family_xyz" in str(raised.value)
    # the helper still serves after an error
    assert len(canonical_draws.draw_items("ransom_note", 0, 11, 3)) == 3


def test_without_a_helper_the_draw_is_made_here_with_a_warning(monkeypatch):
    from fitness import canonical_draws

    canonical_draws._stop_helper()
    monkeypatch.setattr(canonical_draws, "hash_seed_is_canonical", lambda: False)
    monkeypatch.setattr(canonical_draws, "_helper_failed", False)
    monkeypatch.setattr(canonical_draws.sys, "executable", "/nonexistent/python")
    with pytest.warns(RuntimeWarning, match="helper process failed"):
        items = canonical_draws.draw_items("basic_arithmetic", 0, 5, 3)
    assert len(items) == 3
    assert items == canonical_draws.generate_items("basic_arithmetic", 0, 5, 3)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_its_own_helper(monkeypatch):
    from fitness import canonical_draws

    monkeypatch.setattr(canonical_draws, "hash_seed_is_canonical", lambda: False)
    parent = canonical_draws.draw_items("ransom_note", 0, 21, 3)  # the parent's helper is running now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a draw the parent has not made, through a helper of its own
        try:
            items = canonical_draws.draw_items("ransom_note", 0, 22, 3)
            os.write(write, json.dumps([i["question"] for i in items]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert child == [i["question"] for i in canonical_draws.draw_items("ransom_note", 0, 22, 3)]
    assert canonical_draws.draw_items("ransom_note", 0, 21, 3) == parent


def test_the_helper_sends_items_with_their_types(monkeypatch):
    """Items reach the asking process as the helper made them: tuples, integer keys
    and numpy scalars in metadata are what verifiers read."""
    from fitness import canonical_draws

    monkeypatch.setattr(canonical_draws, "hash_seed_is_canonical", lambda: False)
    monkeypatch.setattr(canonical_draws, "_helper_failed", False)
    asked = []
    monkeypatch.setattr(canonical_draws, "_request", lambda key, ask=canonical_draws._request: asked.append(key) or ask(key))
    for family in ("basic_arithmetic", "letter_counting", "rotate_matrix"):
        assert repr(canonical_draws.draw_items(family, 0, 31, 3)) == repr(canonical_draws.generate_items(family, 0, 31, 3))
    assert len(asked) == 3  # each came through the helper
