"""Answer patterns inferred from training answers (fitness.answer_patterns, fitness.tasks)."""

from __future__ import annotations

import pytest

from fitness.answer_patterns import check_pattern, choices, fits, infer_answer_pattern
from fitness.tasks import HELDOUT, TRAIN, answer_pattern_of, jsonl_tasks, load_tasks, parse_task_specs


@pytest.mark.parametrize("answers, pattern", [
    (["3", "-12", "40"], "integer"),
    (["3", "-1.5", "40"], "decimal"),
    (["3/4", "2", "-1.5"], "fraction"),
    (["cat", "Dog"], "word"),
    (["cat dog", "a, b, c", "x"], "words"),
    (["1, 2, 3", "4 5"], "numbers"),
    (["3", "cat"], ""),  # no single shape
    (["x = 3", "y = 4"], ""),
    ([], ""),
    ([None, None], ""),  # scorer-only families
])
def test_inference_takes_the_most_specific_pattern_every_answer_fits(answers, pattern):
    assert infer_answer_pattern(answers) == pattern


def test_a_closed_set_of_labels_needs_enough_evidence():
    labels = ["True", "False"] * 6
    assert choices(infer_answer_pattern(labels)) == ["False", "True"]
    assert infer_answer_pattern(labels[:6]) == "word"  # too few answers to call the set closed
    assert infer_answer_pattern(labels + ["Maybe"]) == "word"  # a label seen once: the set may be open
    assert choices(infer_answer_pattern(["1", "2"] * 6)) == ["1", "2"]


def test_fits_and_check():
    assert fits("integer", " -7 ") and not fits("integer", "7.5")
    assert fits('choice:["no", "yes"]', "yes") and not fits('choice:["no", "yes"]', "maybe")
    assert fits("", "anything at all")
    check_pattern("")
    with pytest.raises(ValueError, match="unknown answer pattern"):
        check_pattern("roman")


def test_patterns_come_from_the_training_split_only(tmp_path):
    # training answers are integers, the held-out ones words: the pattern says integer
    from fitness.tasks import split_of

    path = tmp_path / "mixed.jsonl"
    rows = []
    for i in range(400):
        question = f"question {i}?"
        heldout = split_of("jsonl:mixed", question, 0, 0.2) != TRAIN
        rows.append(f'{{"question": "{question}", "answer": "{"word" if heldout else i}"}}')
    path.write_text("\n".join(rows) + "\n")
    assert {t.answer for t in jsonl_tasks(path, None, HELDOUT, 0)} == {"word"}
    assert answer_pattern_of(str(path)) == "integer"
    tasks = load_tasks(parse_task_specs(str(path)), n=4, split=HELDOUT)
    assert {t.answer_pattern for t in tasks} == {"integer"}
    assert all(t.answer_pattern == "integer" for t in load_tasks(parse_task_specs(str(path)), n=4, split=TRAIN))


def test_too_small_a_training_split_gives_no_pattern(tmp_path):
    path = tmp_path / "tiny.jsonl"
    path.write_text('{"question": "a?", "answer": "1"}\n{"question": "b?", "answer": "2"}\n')
    assert answer_pattern_of(str(path)) == ""


def test_reasoning_gym_families():
    assert answer_pattern_of("basic_arithmetic") == "integer"
    assert choices(answer_pattern_of("ransom_note")) == ["False", "True"]
