"""Tasks (fitness.tasks) against the real reasoning-gym generators and user JSONL files.

Covers the contract of the module docstring: ids stable across processes and
deterministic in the seed, train / held-out disjoint by construction, levels that
change what is generated, and InputError (naming the problem) for every bad spec.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fitness.tasks as tasks_mod
from fitness.tasks import (
    DEFAULT_HELDOUT_FRACTION,
    HELDOUT,
    TEST,
    VALIDATION,
    JSONL_PREFIX,
    MAX_LEVELS,
    TRAIN,
    TaskSpec,
    family_levels,
    jsonl_tasks,
    load_jsonl,
    load_tasks,
    make_task_id,
    parse_task_specs,
    reasoning_gym_families,
    reasoning_gym_tasks,
    in_split,
    split_of,
)
from genomes.errors import InputError

REPO = Path(__file__).resolve().parents[2]

# Families the curriculum is expected to use, with the lowest level that has enough
# distinct questions for a small draw (propositional_logic level 0 has only 4).
FAMILIES = {
    "basic_arithmetic": 0,
    "chain_sum": 0,
    "letter_counting": 0,
    "knights_knaves": 0,
    "propositional_logic": 1,
    "spell_backward": 0,
    "word_sorting": 0,
    "count_bits": 0,
    "leg_counting": 0,
}
ID_RE = re.compile(r"^(?P<family>[^/]+)/L(?P<level>\d+)/(?P<hash>[0-9a-f]{12})$")


def questions(ts):
    return [t.question for t in ts]


def ids(ts):
    return [t.id for t in ts]


# ---- reasoning-gym families at every level --------------------------------------
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_draws_at_every_level(family):
    n_levels = family_levels(family)
    assert 2 <= n_levels <= MAX_LEVELS
    for level in range(FAMILIES[family], n_levels):
        ts = reasoning_gym_tasks(family, level, 4, TRAIN, seed=7)
        assert len(ts) == 4
        assert len(set(ids(ts))) == 4, "ids must be distinct"
        assert len(set(questions(ts))) == 4, "questions must be distinct"
        for t in ts:
            assert t.family == family
            assert t.level == level
            assert 0.0 <= t.difficulty <= 1.0
            assert t.difficulty == pytest.approx(level / (n_levels - 1))
            assert t.question.strip()
            assert t.verifier == "reasoning_gym"
            assert t.entry is not None and t.entry["question"] == t.question
            assert t.id == make_task_id(family, level, t.question)
            m = ID_RE.match(t.id)
            assert m and m["family"] == family and int(m["level"]) == level
            assert split_of(family, t.question, 0, DEFAULT_HELDOUT_FRACTION) == TRAIN


def test_answers_are_strings_where_the_family_has_a_gold():
    for family in ("basic_arithmetic", "chain_sum", "count_bits", "leg_counting", "spell_backward"):
        for t in reasoning_gym_tasks(family, 1, 3, TRAIN, seed=0):
            assert isinstance(t.answer, str) and t.answer.strip()
    # chain_sum golds are the sums of the questions
    for t in reasoning_gym_tasks("chain_sum", 2, 5, TRAIN, seed=3):
        expr = t.question.split(":")[-1].rstrip("= ").strip()
        assert re.fullmatch(r"[\d +-]+", expr), t.question
        assert int(t.answer) == eval(expr)  # noqa: S307 - digits, + and - only, checked above
    # propositional_logic has no single gold: its own scorer judges the entry
    for t in reasoning_gym_tasks("propositional_logic", 2, 2, TRAIN, seed=0):
        assert t.answer is None and t.entry is not None


def test_the_top_level_is_not_a_copy_of_the_one_below():
    # Several reasoning-gym curricula reach their last value one global level early;
    # such a repeated level would give the same questions a new id and difficulty.
    for family in FAMILIES:
        n_levels = family_levels(family)
        for level in range(max(1, FAMILIES[family] + 1), n_levels):
            # 30 questions: a step of basic_arithmetic from 5 to 6 terms at most changes
            # only the draws where randint(2, 6) comes out 6, about one in eight
            below = questions(reasoning_gym_tasks(family, level - 1, 30, TRAIN, seed=11))
            here = questions(reasoning_gym_tasks(family, level, 30, TRAIN, seed=11))
            assert below != here, f"{family}: level {level} draws the same questions as level {level - 1}"


def test_family_levels():
    assert family_levels("chain_sum") == MAX_LEVELS  # 11 curriculum levels, capped
    assert family_levels("gsm_symbolic") == 1  # no curriculum: one level
    assert "chain_sum" in reasoning_gym_families()
    assert reasoning_gym_families() == sorted(reasoning_gym_families())


def test_too_few_distinct_questions_raises():
    # propositional_logic level 0 has four distinct questions in all
    with pytest.raises(InputError, match=r"propositional_logic level 0: only \d+ distinct train questions, asked for 10"):
        reasoning_gym_tasks("propositional_logic", 0, 10, TRAIN, seed=0)


def test_fewer_ok_gives_the_whole_small_split():
    # chain_sum level 0 has 200 distinct questions, 39 of them in the held-out split
    with pytest.raises(InputError, match=r"chain_sum level 0: only 39 distinct heldout questions, asked for 100"):
        reasoning_gym_tasks("chain_sum", 0, 100, HELDOUT, seed=0)
    tasks = reasoning_gym_tasks("chain_sum", 0, 100, HELDOUT, seed=0, fewer_ok=True)
    assert len(tasks) == len({t.question for t in tasks}) == 39
    assert all(split_of("chain_sum", t.question, 0, DEFAULT_HELDOUT_FRACTION) != TRAIN for t in tasks)
    # where there are enough, fewer_ok changes nothing
    assert [t.id for t in reasoning_gym_tasks("chain_sum", 0, 20, HELDOUT, seed=0, fewer_ok=True)] == \
        [t.id for t in reasoning_gym_tasks("chain_sum", 0, 20, HELDOUT, seed=0)]


# ---- stable ids --------------------------------------------------------------------
def test_make_task_id_is_pinned():
    assert make_task_id("chain_sum", 2, "What is 1 + 1?") == "chain_sum/L2/3f3a043e7365"
    assert make_task_id("chain_sum", 3, "What is 1 + 1?") == "chain_sum/L3/3f3a043e7365"
    assert make_task_id("chain_sum", 2, "What is 1 + 2?") != "chain_sum/L2/3f3a043e7365"


def test_ids_are_the_same_in_another_process():
    calls = [("chain_sum", 2, 5, TRAIN, 5), ("letter_counting", 1, 3, HELDOUT, 9), ("word_sorting", 1, 3, TRAIN, 2)]
    code = textwrap.dedent(f"""
        import json
        from fitness.tasks import reasoning_gym_tasks
        print(json.dumps([[t.id for t in reasoning_gym_tasks(*c)] for c in {calls!r}]))
    """)
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # a different str hash than this process
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    here = [ids(reasoning_gym_tasks(*c)) for c in calls]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == here


def test_draws_are_deterministic_in_the_seed():
    a = reasoning_gym_tasks("chain_sum", 3, 6, TRAIN, seed=1)
    b = reasoning_gym_tasks("chain_sum", 3, 6, TRAIN, seed=1)
    c = reasoning_gym_tasks("chain_sum", 3, 6, TRAIN, seed=2)
    assert ids(a) == ids(b)
    assert [t.answer for t in a] == [t.answer for t in b]
    assert set(ids(a)) != set(ids(c))
    assert len(set(ids(a)) & set(ids(c))) < 6
    # a prefix of a larger draw is not promised, but the same n is: also for heldout
    assert ids(reasoning_gym_tasks("count_bits", 1, 4, HELDOUT, seed=4)) == ids(
        reasoning_gym_tasks("count_bits", 1, 4, HELDOUT, seed=4)
    )


# ---- train / held-out --------------------------------------------------------------
SPLIT_CASES = [("chain_sum", 2), ("basic_arithmetic", 1), ("letter_counting", 0), ("spell_backward", 1), ("count_bits", 1)]


@pytest.mark.parametrize("family,level", SPLIT_CASES)
def test_train_and_heldout_never_overlap(family, level):
    train_q, held_q, train_ids, held_ids = set(), set(), set(), set()
    for seed in range(3):
        train = reasoning_gym_tasks(family, level, 8, TRAIN, seed=seed)
        held = reasoning_gym_tasks(family, level, 4, HELDOUT, seed=seed)
        assert all(split_of(family, t.question, 0, DEFAULT_HELDOUT_FRACTION) == TRAIN for t in train)
        assert all(split_of(family, t.question, 0, DEFAULT_HELDOUT_FRACTION) != TRAIN for t in held)
        train_q |= set(questions(train))
        held_q |= set(questions(held))
        train_ids |= set(ids(train))
        held_ids |= set(ids(held))
    assert len(held_q) >= 4 and len(train_q) >= 8
    assert not train_q & held_q
    assert not train_ids & held_ids


def test_split_seed_and_fraction_are_honoured_by_draws():
    for t in reasoning_gym_tasks("chain_sum", 2, 6, HELDOUT, seed=0, split_seed=3, heldout_fraction=0.5):
        assert split_of("chain_sum", t.question, 3, 0.5) != TRAIN
    for t in reasoning_gym_tasks("chain_sum", 2, 6, TRAIN, seed=0, split_seed=3, heldout_fraction=0.5):
        assert split_of("chain_sum", t.question, 3, 0.5) == TRAIN


def test_split_of_is_pure():
    qs = [f"What is {i} + {i * 7 % 13}?" for i in range(300)]
    first = [split_of("chain_sum", q, 0, 0.2) for q in qs]
    assert [split_of("chain_sum", q, 0, 0.2) for q in qs] == first
    assert set(first) == {TRAIN, VALIDATION, TEST}
    assert all(split_of("chain_sum", q, 0, 0.0) == TRAIN for q in qs)
    assert all(split_of("chain_sum", q, 0, 1.0) != TRAIN for q in qs)
    # the family is part of the key
    assert [split_of("basic_arithmetic", q, 0, 0.2) for q in qs] != first


def test_split_seed_changes_the_partition():
    qs = [f"question number {i}" for i in range(500)]
    a = [split_of("f", q, 0, 0.2) for q in qs]
    b = [split_of("f", q, 1, 0.2) for q in qs]
    changed = sum(x != y for x, y in zip(a, b))
    assert changed > 50  # about 2 * 0.2 * 0.8 * 500 = 160 expected


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5])
def test_heldout_fraction_is_roughly_respected(fraction):
    qs = [f"q{i}" for i in range(5000)]
    share = sum(split_of("f", q, 0, fraction) != TRAIN for q in qs) / len(qs)
    assert abs(share - fraction) < 0.03


def test_growing_the_fraction_only_moves_questions_to_heldout():
    qs = [f"q{i}" for i in range(1000)]
    small = {q for q in qs if split_of("f", q, 0, 0.1) != TRAIN}
    large = {q for q in qs if split_of("f", q, 0, 0.3) != TRAIN}
    assert small < large


# ---- levels --------------------------------------------------------------------------
def test_level_out_of_range_raises_naming_the_range():
    top = family_levels("chain_sum") - 1
    for bad in (top + 1, -1):
        with pytest.raises(InputError, match=rf"chain_sum: level {bad} out of range \(levels 0\.\.{top}\)"):
            reasoning_gym_tasks("chain_sum", bad, 2, TRAIN, seed=0)
    with pytest.raises(InputError, match=r"levels 0\.\.0"):
        reasoning_gym_tasks("gsm_symbolic", 1, 2, TRAIN, seed=0)


def _chain_sum_shape(level: int) -> tuple[float, float]:
    """Mean number of terms and mean operand length of a chain_sum draw."""
    terms, digits = [], []
    for t in reasoning_gym_tasks("chain_sum", level, 20, TRAIN, seed=0):
        numbers = re.findall(r"\d+", t.question.split(":")[-1])
        terms.append(len(numbers))
        digits += [len(x) for x in numbers]
    return statistics.mean(terms), statistics.mean(digits)


def test_higher_chain_sum_levels_are_harder():
    t0, d0 = _chain_sum_shape(0)
    t3, d3 = _chain_sum_shape(3)
    t7, d7 = _chain_sum_shape(7)
    assert (t0, d0) == (2, 1)  # level 0: two one-digit numbers
    assert d0 < d3 < d7
    assert t0 < t3 and t0 < t7


# ---- errors and specs ----------------------------------------------------------------
def test_unknown_family_raises_naming_it():
    for call in (
        lambda: reasoning_gym_tasks("chain_summ", 0, 2, TRAIN, seed=0),
        lambda: family_levels("chain_summ"),
        lambda: load_tasks([TaskSpec("chain_summ")], 2),
    ):
        with pytest.raises(InputError, match="'chain_summ'") as err:
            call()
        assert "chain_sum" in str(err.value).split("did you mean")[-1]


def test_task_spec_parse():
    assert TaskSpec.parse("chain_sum@2") == TaskSpec("chain_sum", 2)
    assert TaskSpec.parse(" basic_arithmetic ") == TaskSpec("basic_arithmetic", None)
    spec = TaskSpec.parse("data/file.jsonl")
    assert spec.is_file and spec.source == "data/file.jsonl" and spec.level is None
    assert not TaskSpec.parse("chain_sum@2").is_file
    assert parse_task_specs("chain_sum@2,basic_arithmetic,file.jsonl") == [
        TaskSpec("chain_sum", 2), TaskSpec("basic_arithmetic"), TaskSpec("file.jsonl"),
    ]
    assert parse_task_specs("chain_sum, ,count_bits@0,") == [TaskSpec("chain_sum"), TaskSpec("count_bits", 0)]


@pytest.mark.parametrize("text", ["chain_sum@x", "chain_sum@-1", "chain_sum@1.5", "chain_sum@", "chain_sum@²", "chain_sum@١", ""])
def test_bad_task_spec_raises(text):
    with pytest.raises(InputError):
        TaskSpec.parse(text)
    if text:
        with pytest.raises(InputError, match="level must be a non-negative integer"):
            parse_task_specs(f"count_bits,{text}")


@pytest.fixture
def no_generation(monkeypatch):
    """Fail the test if anything is generated."""
    def boom(*args, **kwargs):
        raise AssertionError(f"generated before validating all specs: {args}")
    monkeypatch.setattr(tasks_mod, "_reasoning_gym_items", boom)


def test_load_tasks_validates_every_spec_before_generating(no_generation, tmp_path):
    with pytest.raises(InputError, match="'not_a_family'"):
        load_tasks(parse_task_specs("chain_sum@1,not_a_family"), 2)
    with pytest.raises(InputError, match=r"chain_sum: level 99 out of range"):
        load_tasks(parse_task_specs("count_bits@1,chain_sum@99"), 2)
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(InputError, match="missing.jsonl"):
        load_tasks([TaskSpec("chain_sum", 1), TaskSpec(str(missing))], 2)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(InputError, match="bad.jsonl:1"):
        load_tasks([TaskSpec("chain_sum", 1), TaskSpec(str(bad))], 2)


def test_load_tasks_argument_errors(no_generation):
    specs = [TaskSpec("chain_sum", 1)]
    for n in (0, -3):
        with pytest.raises(InputError, match=rf"n must be >= 1, got {n}"):
            load_tasks(specs, n)
    with pytest.raises(InputError, match="split must be one of train, validation, test, heldout; got 'dev'"):
        load_tasks(specs, 2, split="dev")


def test_load_tasks_mixes_families_and_files(tmp_path):
    path = tmp_path / "mine.jsonl"
    write_rows(path, [{"question": f"What is {i} squared?", "answer": str(i * i)} for i in range(40)])
    got = load_tasks(parse_task_specs(f"chain_sum@1,count_bits,{path}"), 3, split=TRAIN, seed=4)
    assert [t.family for t in got] == ["chain_sum"] * 3 + ["count_bits"] * 3 + ["jsonl:mine"] * 3
    assert [t.level for t in got[:6]] == [1, 1, 1, 0, 0, 0]  # no level given: level 0
    assert ids(got[:3]) == ids(reasoning_gym_tasks("chain_sum", 1, 3, TRAIN, seed=4))
    assert ids(load_tasks(parse_task_specs(f"chain_sum@1,count_bits,{path}"), 3, split=TRAIN, seed=4)) == ids(got)
    held = load_tasks(parse_task_specs(f"chain_sum@1,{path}"), 3)  # default split: test
    assert all(split_of(t.family, t.question, 0, DEFAULT_HELDOUT_FRACTION) == TEST for t in held)


# ---- JSONL ---------------------------------------------------------------------------
def write_rows(path: Path, rows: list, extra_lines: list[str] = ()) -> Path:
    lines = [json.dumps(r) for r in rows] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_fields_are_honoured(tmp_path):
    path = write_rows(tmp_path / "arith.jsonl", [
        {"question": "What is 2 + 3?", "answer": "5", "difficulty": 0.25, "steps": ["2 + 3 = 5"]},
        {"question": "What is 7 * 6?", "answer": 42, "verifier": "numeric"},
    ])
    everything = jsonl_tasks(path, None, TRAIN, 0, heldout_fraction=0.0)
    by_q = {t.question: t for t in everything}
    assert set(by_q) == {"What is 2 + 3?", "What is 7 * 6?"}
    a, b = by_q["What is 2 + 3?"], by_q["What is 7 * 6?"]
    assert a.family == b.family == JSONL_PREFIX + "arith" == "jsonl:arith"
    assert (a.answer, a.difficulty, a.steps, a.level, a.verifier) == ("5", 0.25, ("2 + 3 = 5",), 0, "auto")
    assert (b.answer, b.difficulty, b.steps, b.verifier) == ("42", 0.0, None, "numeric")
    assert a.id == make_task_id("jsonl:arith", 0, "What is 2 + 3?")
    assert a.id.startswith("jsonl:arith/L0/")


def test_jsonl_ids_are_content_derived(tmp_path):
    rows = [{"question": f"Q{i}", "answer": str(i)} for i in range(30)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = write_rows(tmp_path / "a" / "set.jsonl", rows)
    two = write_rows(tmp_path / "b" / "set.jsonl", rows[::-1])
    ids_one = {t.question: t.id for t in jsonl_tasks(one, None, TRAIN, 0, heldout_fraction=0)}
    ids_two = {t.question: t.id for t in jsonl_tasks(two, None, TRAIN, 0, heldout_fraction=0)}
    assert ids_one == ids_two  # same stem, same questions: same ids whatever the row order
    assert len(set(ids_one.values())) == 30


def test_jsonl_train_and_heldout_partition_the_rows(tmp_path):
    rows = [{"question": f"How many letters are in word {i}?", "answer": str(i)} for i in range(80)]
    path = write_rows(tmp_path / "words.jsonl", rows)
    train = jsonl_tasks(path, None, TRAIN, seed=0)
    held = jsonl_tasks(path, None, HELDOUT, seed=0)
    assert train and held
    assert not set(ids(train)) & set(ids(held))
    assert set(questions(train)) | set(questions(held)) == {r["question"] for r in rows}
    assert len(train) + len(held) == 80
    # a different split seed gives a different partition of the same rows
    held3 = jsonl_tasks(path, None, HELDOUT, seed=0, split_seed=3)
    assert set(ids(held3)) != set(ids(held))


def test_jsonl_n_samples_deterministically(tmp_path):
    path = write_rows(tmp_path / "many.jsonl", [{"question": f"q{i}", "answer": "a"} for i in range(100)])
    train = set(ids(jsonl_tasks(path, None, TRAIN, 0)))
    a = jsonl_tasks(path, 5, TRAIN, seed=1)
    assert len(a) == 5 and len(set(ids(a))) == 5
    assert set(ids(a)) <= train
    assert ids(jsonl_tasks(path, 5, TRAIN, seed=1)) == ids(a)
    assert set(ids(jsonl_tasks(path, 5, TRAIN, seed=2))) != set(ids(a))
    assert set(ids(jsonl_tasks(path, 1000, TRAIN, seed=1))) == train  # n beyond the split: all of it


def test_jsonl_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_text('\n{"question": "a", "answer": "1"}\n\n   \n{"question": "b", "answer": "2"}\n')
    assert [r["question"] for r in load_jsonl(path)] == ["a", "b"]


@pytest.mark.parametrize("bad_row,problem", [
    ({"question": "q3"}, "row has no 'answer'"),
    ({"question": "q3", "answer": None}, "row has no 'answer'"),
    ({"question": "q3", "answer": "  "}, "row has no 'answer'"),
    ({"answer": "3"}, "row has no 'question'"),
    ({"question": "q3", "answer": "3", "difficulty": 1.5}, "'difficulty' must be a number in \\[0, 1\\]"),
    ({"question": "q3", "answer": "3", "difficulty": -0.1}, "'difficulty' must be a number in \\[0, 1\\]"),
    ({"question": "q3", "answer": "3", "difficulty": "hard"}, "'difficulty' must be a number"),
    ({"question": "q3", "answer": "3", "difficulty": True}, "'difficulty' must be a number"),
    ({"question": "q3", "answer": "3", "verifier": "fuzzy"}, "unknown verifier 'fuzzy'"),
    ({"question": "q3", "answer": "3", "steps": "one step"}, "'steps' must be a list"),
    (["q3", "3"], "expected a JSON object per line"),
])
def test_jsonl_bad_row_names_file_and_line(tmp_path, bad_row, problem):
    # line 3 is the bad row, after a good row and a blank line
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps({"question": "q1", "answer": "1"}) + "\n\n" + json.dumps(bad_row) + "\n")
    with pytest.raises(InputError, match=rf"tasks\.jsonl:3: {problem}"):
        load_jsonl(path)
    with pytest.raises(InputError, match=r"tasks\.jsonl:3"):
        jsonl_tasks(path, None, TRAIN, 0)


def test_jsonl_malformed_json_names_the_line(tmp_path):
    path = write_rows(tmp_path / "broken.jsonl", [{"question": "q", "answer": "1"}], ['{"question": "q2", "answer": '])
    with pytest.raises(InputError, match=r"broken\.jsonl:2: malformed JSON"):
        load_jsonl(path)


def test_jsonl_missing_and_empty_files(tmp_path):
    with pytest.raises(InputError, match=r"task file not found: .*nothing\.jsonl"):
        load_jsonl(tmp_path / "nothing.jsonl")
    with pytest.raises(InputError, match="task file not found"):
        jsonl_tasks(tmp_path / "nothing.jsonl", 3, TRAIN, 0)
    with pytest.raises(InputError, match="task file not found"):
        load_jsonl(tmp_path)  # a directory is not a task file
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(InputError, match=r"empty\.jsonl: no tasks in file"):
        load_jsonl(empty)


def test_three_disjoint_splits_keep_the_training_split():
    """train / validation / test partition every source; the training split does not
    depend on test_share, and test_share = 0 makes validation the old held-out split."""
    questions = [f"question {i}" for i in range(4000)]
    splits = [split_of("f", q, 3, 0.2) for q in questions]
    share = {s: splits.count(s) / len(splits) for s in (TRAIN, VALIDATION, TEST)}
    assert abs(share[TRAIN] - 0.8) < 0.03 and abs(share[VALIDATION] - 0.1) < 0.02 and abs(share[TEST] - 0.1) < 0.02
    for q, s in zip(questions, splits):
        assert (split_of("f", q, 3, 0.2, test_share=0.3) == TRAIN) == (s == TRAIN)
        assert split_of("f", q, 3, 0.2, test_share=0.0) in ((TRAIN,) if s == TRAIN else (VALIDATION,))
    assert in_split(VALIDATION, HELDOUT) and in_split(TEST, HELDOUT) and not in_split(TRAIN, HELDOUT)
    assert in_split(TEST, TEST) and not in_split(VALIDATION, TEST)


def test_validation_and_test_draws_never_meet(tmp_path):
    path = tmp_path / "mine.jsonl"
    write_rows(path, [{"question": f"What is {i} squared?", "answer": str(i * i)} for i in range(300)])
    for spec in (f"{path}", "chain_sum@1"):
        drawn = {split: {t.question for t in load_tasks(parse_task_specs(spec), 20, split=split, seed=1)}
                 for split in (TRAIN, VALIDATION, TEST)}
        assert all(len(v) == 20 for v in drawn.values())
        assert not drawn[TRAIN] & drawn[VALIDATION] and not drawn[TRAIN] & drawn[TEST]
        assert not drawn[VALIDATION] & drawn[TEST]
