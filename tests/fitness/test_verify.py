"""Strict verifiers (fitness.verify) on real reasoning-gym tasks and hand-made ones.

Every value is hand-checked; the reasoning-gym entries come from the real generators
with fixed seeds (their questions and golds are quoted in the comments), and the
raw scores reasoning-gym itself gives are asserted too, so a change of behaviour
upstream shows up here rather than as silently inflated fitness.
"""

from __future__ import annotations

import functools
import json
import random
import signal
import threading
import time

import pytest

import fitness.verify as verify
from fitness.format import parse_completion
from fitness.tasks import Task, reasoning_gym_tasks
from fitness.verify import PARTIAL_CREDIT_FAMILIES, score_answer
from genomes.chat_format import BEGIN_ANSWER, END_ANSWER, format_completion

A, Z = BEGIN_ANSWER, END_ANSWER


@functools.lru_cache(maxsize=None)
def rg_task(family: str, seed: int, index: int = 0) -> Task:
    """A Task built from a real reasoning-gym entry, as fitness.tasks builds them."""
    from reasoning_gym import create_dataset

    entry = create_dataset(family, seed=seed, size=index + 1)[index]
    answer = entry["answer"]
    return Task(
        id=f"{family}/{seed}/{index}", family=family, question=entry["question"],
        answer=None if answer is None else str(answer), level=0, difficulty=0.0,
        entry=entry, verifier="reasoning_gym",
    )


def rg_raw(task: Task, answer: str) -> float:
    """reasoning-gym's own, lenient score (what strict mode improves on)."""
    from reasoning_gym.factory import get_score_answer_fn

    return get_score_answer_fn(task.family)(answer, task.entry)


def user_task(answer: str | None, verifier: str = "auto", question: str = "What is it?") -> Task:
    return Task(id="user", family="jsonl:t", question=question, answer=answer, level=0,
                difficulty=0.0, verifier=verifier)


def completion_score(completion: str | bytes, task: Task) -> float:
    return score_answer(parse_completion(completion).answer, task)


# basic_arithmetic seed 3: "Calculate ( 56 + -33 ) - 84." -> "-61"
ARITH = functools.partial(rg_task, "basic_arithmetic", 3)
# chain_sum seed 3: "State the final answer to the following arithmetic problem: 57 + 87 + 70 =" -> "214"
CHAIN = functools.partial(rg_task, "chain_sum", 3)


# ---- the real tasks used below -----------------------------------------------------
def test_fixture_tasks_are_the_expected_real_entries():
    assert ARITH().question == "Calculate ( 56 + -33 ) - 84."
    assert ARITH().answer == "-61"
    assert CHAIN().answer == "214"
    assert rg_task("letter_counting", 3).answer == "1"
    assert rg_task("spell_backward", 3).answer == "reyornac"
    assert rg_task("word_sorting", 3).answer == "strength, state, one, array, PUNITIVE, Again"
    assert rg_task("propositional_logic", 5, 5).answer is None
    assert rg_task("propositional_logic", 5, 5).entry["metadata"]["premises"] == ["(P → Q)", "(R → Q)"]


# ---- guards: no answer -------------------------------------------------------------
@pytest.mark.parametrize("answer", [None, "", "   ", "\n\t "])
def test_no_answer_scores_zero(answer):
    assert score_answer(answer, ARITH()) == 0.0
    assert score_answer(answer, user_task("7", "exact")) == 0.0


def test_empty_constrained_block_scores_zero():
    assert completion_score(f"<cot> 56 + -33 = 23 {A}  {Z}", ARITH()) == 0.0


def test_several_disagreeing_answers_score_zero():
    text = f"<cot> hmm {A} -61 {Z} {A} -62 {Z} {A} 61 {Z}"
    assert parse_completion(text).answer is None
    assert completion_score(text, ARITH()) == 0.0


def test_several_agreeing_answers_score_one():
    assert completion_score(f"{A} -61 {Z} {A} -61 {Z}", ARITH()) == 1.0


def test_answer_only_in_the_chain_scores_zero():
    text = "<cot> 56 + -33 = 23 <cot> 23 - 84 = -61 <cot> the answer is -61"
    assert completion_score(text, ARITH()) == 0.0


def test_two_answers_listed_in_one_block_score_zero():
    assert rg_raw(ARITH(), "-61, -62") == pytest.approx(3 / 8)  # reasoning-gym: partial credit
    assert score_answer("-61, -62", ARITH()) == 0.0
    assert completion_score(f"{A} -62 {A} -61 {Z}", ARITH()) == 0.0


# ---- guards: echo ------------------------------------------------------------------
def test_question_echoed_as_whole_completion_scores_zero():
    assert completion_score(ARITH().question, ARITH()) == 0.0


def test_question_echoed_inside_block_scores_zero():
    question = ARITH().question
    assert completion_score(f"<cot> copy {A} {question} {Z}", ARITH()) == 0.0
    # ...even with the right answer appended (reasoning-gym itself pays 3/32 for this)
    assert rg_raw(ARITH(), f"{question} -61") == pytest.approx(3 / 32)
    assert completion_score(f"{A} {question} -61 {Z}", ARITH()) == 0.0


def test_echo_guard_ignores_case_and_spacing():
    echoed = "  calculate (  56 + -33 )\n - 84.  "
    assert score_answer(echoed, ARITH()) == 0.0


def test_echoed_short_question_scores_zero_under_math():
    # without the echo guard math-verify accepts "2+2" for gold 4
    task = user_task("4", "math", question="2+2")
    assert score_answer("2+2", task) == 0.0
    assert score_answer("4", task) == 1.0


def test_question_shorter_than_gold_may_appear_in_the_answer():
    task = user_task("say hi twice: hi hi", "exact", question="say hi twice:")
    assert score_answer("Say hi twice: hi hi", task) == 1.0


def test_echo_for_answerless_family_scores_zero():
    task = rg_task("propositional_logic", 5, 5)
    assert score_answer(f"{task.question} (¬R ∨ Q)", task) == 0.0


# ---- guards: size ------------------------------------------------------------------
def test_size_guard_boundary():
    task = user_task("7", "numeric")  # limit max(200, 4 * 1) = 200 characters
    assert score_answer("0" * 199 + "7", task) == 1.0
    assert score_answer("0" * 200 + "7", task) == 0.0


def test_size_guard_scales_with_gold():
    gold = "a" * 100  # limit 400
    task = user_task(gold, "exact")
    assert score_answer(gold, task) == 1.0
    assert score_answer("b" * 401, task) == 0.0


def test_huge_output_scores_zero_quickly():
    start = time.perf_counter()
    # the block closes past the parser's cut: no answer at all
    assert completion_score(f"<cot> x {A} " + "-61 " * 1_500_000 + Z, ARITH()) == 0.0
    # a block closed within the cut: an answer of ~150k characters
    assert completion_score(f"{A} " + "-61 " * 37_000 + Z, ARITH()) == 0.0
    assert score_answer("-61" * 1_000_000, ARITH()) == 0.0
    assert score_answer("9" * 1_000_000, user_task("7", "numeric")) == 0.0
    assert score_answer("1" * 100_000, user_task("7", "math")) == 0.0
    assert time.perf_counter() - start < 2.0


# ---- guards: garbage ---------------------------------------------------------------
def test_binary_garbage_scores_zero():
    rng = random.Random(99)
    tasks = [ARITH(), rg_task("word_sorting", 3), rg_task("propositional_logic", 5, 5),
             user_task("7", "numeric"), user_task("x^2", "math"), user_task("blue", "exact")]
    for _ in range(30):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        for task in tasks:
            assert completion_score(blob, task) == 0.0
            assert completion_score(A.encode() + blob + Z.encode(), task) == 0.0
            assert score_answer(blob.decode("utf-8", errors="replace"), task) == 0.0


@pytest.mark.parametrize("answer", [b"-61", 61, -61.0, ["-61"], object(), "\x00", "\ud800", "-61\x00"])
def test_non_string_or_broken_answers_score_zero(answer):
    assert score_answer(answer, ARITH()) == 0.0


def test_fuzz_never_raises_and_stays_in_range():
    rng = random.Random(5)
    alphabet = list("0123456789-+*/^.,= ()[]{}\\$!xab") + ["\\frac", "\\sqrt", "junk", "\x00", "é", "−"]
    tasks = [ARITH(), CHAIN(), rg_task("spell_backward", 3), rg_task("propositional_logic", 5, 5),
             user_task("1/2", "auto"), user_task("x^2+1", "math"), user_task("7", "numeric"),
             user_task("blue", "exact")]
    for _ in range(150):
        answer = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 25)))
        for task in tasks:
            assert 0.0 <= score_answer(answer, task) <= 1.0


def test_broken_tasks_score_zero_not_raise():
    entryless = Task(id="t", family="basic_arithmetic", question="q?", answer="-61", level=0,
                     difficulty=0.0, entry=None, verifier="reasoning_gym")
    assert score_answer("-61", entryless) == 1.0  # the default scorer only needs the gold
    broken_entry = Task(id="t", family="propositional_logic", question="q?", answer=None, level=0,
                        difficulty=0.0, entry={"question": "q?"}, verifier="reasoning_gym")
    assert score_answer("P", broken_entry) == 0.0
    unknown_family = Task(id="t", family="no_such_family", question="q?", answer="1", level=0,
                          difficulty=0.0, entry={}, verifier="reasoning_gym")
    assert score_answer("1", unknown_family) == 0.0
    assert score_answer("7", user_task("7", "no_such_verifier")) == 0.0
    assert score_answer("7", user_task(None, "exact")) == 0.0  # no gold, no dataset scorer


# ---- reasoning-gym: strict full credit ---------------------------------------------
@pytest.mark.parametrize(("family", "seed", "gold"), [
    ("basic_arithmetic", 3, "-61"),
    ("chain_sum", 3, "214"),
    ("letter_counting", 3, "1"),
    ("spell_backward", 3, "reyornac"),
    ("word_sorting", 3, "strength, state, one, array, PUNITIVE, Again"),
])
def test_gold_scores_one(family, seed, gold):
    task = rg_task(family, seed)
    assert task.answer == gold
    assert score_answer(gold, task) == 1.0
    assert completion_score(format_completion(["work"], gold, "done"), task) == 1.0


def test_padded_gold_scores_zero_where_reasoning_gym_gives_partial_credit():
    # reasoning-gym's default scorer: len(gold) / len(answer) = 3 / 8
    assert rg_raw(ARITH(), "-61 junk") == pytest.approx(0.375)
    assert score_answer("-61 junk", ARITH()) == 0.0
    assert completion_score(f"{A} -61 junk {Z}", ARITH()) == 0.0
    assert rg_raw(CHAIN(), "214 junk") == pytest.approx(0.375)
    assert score_answer("214 junk", CHAIN()) == 0.0
    letters = rg_task("letter_counting", 3)
    assert rg_raw(letters, "1 junk") == pytest.approx(1 / 6)
    assert score_answer("1 junk", letters) == 0.0
    # spell_backward: all 8 leading letters match -> 1.0 - 0.2
    backward = rg_task("spell_backward", 3)
    assert rg_raw(backward, "reyornac junk") == pytest.approx(0.8)
    assert score_answer("reyornac junk", backward) == 0.0


def test_padded_gold_scores_zero_where_reasoning_gym_gives_full_credit():
    # word_sorting counts gold words in position and ignores extra ones: 6 / 6
    words = rg_task("word_sorting", 3)
    padded = words.answer + ", extra"
    assert rg_raw(words, padded) == 1.0
    assert score_answer(padded, words) == 0.0
    assert score_answer("junk, " + words.answer, words) == 0.0


def test_near_misses_score_zero():
    assert rg_raw(ARITH(), "-61.0") == pytest.approx(0.6)
    assert score_answer("-61.0", ARITH()) == 0.0
    assert score_answer("-62", ARITH()) == 0.0
    assert score_answer("61", ARITH()) == 0.0
    backward = rg_task("spell_backward", 3)
    assert rg_raw(backward, "reyornax") == pytest.approx(7 / 8)
    assert score_answer("reyornax", backward) == 0.0
    words = rg_task("word_sorting", 3)
    swapped = "strength, state, one, array, Again, PUNITIVE"
    assert rg_raw(words, swapped) == pytest.approx(4 / 6)
    assert score_answer(swapped, words) == 0.0
    letters = rg_task("letter_counting", 3)
    assert rg_raw(letters, "01") == pytest.approx(0.5)
    assert score_answer("01", letters) == 0.0


def test_variants_the_family_scorer_accepts_in_full_still_count():
    # word_sorting splits on ",\s*": spacing is not part of the answer
    words = rg_task("word_sorting", 3)
    assert score_answer("strength,state,one,array,PUNITIVE,Again", words) == 1.0
    # chain_sum compares numerically
    assert score_answer("214.0", CHAIN()) == 1.0
    # spell_backward ignores case
    assert score_answer("REYORNAC", rg_task("spell_backward", 3)) == 1.0


def test_arithmetic_expression_scores_zero_under_reasoning_gym():
    assert score_answer("( 56 + -33 ) - 84", ARITH()) == 0.0
    assert score_answer("57 + 87 + 70", CHAIN()) == 0.0


def test_reasoning_gym_tasks_from_fitness_tasks():
    tasks = reasoning_gym_tasks("chain_sum", 0, 3, "train", seed=0)
    assert [t.answer for t in tasks] == ["5", "10", "10"]
    assert [score_answer(t.answer, t) for t in tasks] == [1.0, 1.0, 1.0]
    assert [score_answer(f"{t.answer} junk", t) for t in tasks] == [0.0, 0.0, 0.0]
    assert [score_answer(str(int(t.answer) + 1), t) for t in tasks] == [0.0, 0.0, 0.0]


def test_partial_credit_families_is_empty_by_default():
    assert PARTIAL_CREDIT_FAMILIES == frozenset()


def test_partial_credit_family_keeps_fractional_scores(monkeypatch):
    backward = rg_task("spell_backward", 3)
    monkeypatch.setattr(verify, "PARTIAL_CREDIT_FAMILIES", frozenset({"spell_backward"}))
    assert score_answer("reyornax", backward) == pytest.approx(7 / 8)
    # the padding guard still applies
    assert score_answer("reyornac junk", backward) == 0.0


# ---- reasoning-gym: families without a gold answer -------------------------------
def test_answerless_family_is_scored_by_the_dataset_scorer():
    # propositional_logic seed 5 #5: premises (P → Q), (R → Q)
    task = rg_task("propositional_logic", 5, 5)
    assert score_answer("(¬R ∨ Q)", task) == 1.0  # follows, non-trivial
    assert completion_score(format_completion(["R → Q"], "(¬R ∨ Q)", "r"), task) == 1.0
    assert rg_raw(task, "¬P") == pytest.approx(0.05)  # does not follow
    assert score_answer("¬P", task) == 0.0
    assert rg_raw(task, "(P ∨ ¬P)") == pytest.approx(0.25)  # a tautology
    assert score_answer("(P ∨ ¬P)", task) == 0.0
    assert score_answer("(¬R ∨ Z)", task) == 0.0  # unknown variable
    assert score_answer("(¬R ∨ Q) junk", task) == 0.0


def test_answerless_family_from_fitness_tasks():
    tasks = reasoning_gym_tasks("propositional_logic", 0, 2, "train", seed=0)
    assert [t.answer for t in tasks] == [None, None]
    for task in tasks:
        example = task.entry["metadata"]["example_answer"]
        assert score_answer(example, task) == 1.0


def test_graph_colouring_is_scored_by_the_dataset_scorer():
    # graph_color seed 3: edges (2, 5), (2, 9), (5, 8); colours 1..3
    task = rg_task("graph_color", 3)
    assert task.answer is None
    colouring = {0: 1, 1: 1, 2: 1, 3: 1, 4: 1, 5: 2, 6: 1, 7: 1, 8: 1, 9: 2}
    assert score_answer(json.dumps(colouring), task) == 1.0
    clash = {**colouring, 5: 1}  # 2 and 5 share colour 1
    assert rg_raw(task, json.dumps(clash)) == pytest.approx(0.01)
    assert score_answer(json.dumps(clash), task) == 0.0


# ---- numeric -----------------------------------------------------------------------
@pytest.mark.parametrize(("gold", "answer", "expected"), [
    ("-61", "-61", 1.0),
    ("-61", " -61 ", 1.0),
    ("-61", "\u221261", 1.0),  # typographic minus
    ("5", "+5", 1.0),
    ("0", "-0", 1.0),
    ("1234", "1,234", 1.0),
    ("1,000", "1000", 1.0),
    ("1234567", "1,234,567", 1.0),
    ("1234", "1,23,4", 0.0),  # not a thousands grouping
    ("2", "2.0", 1.0),
    ("12.50", "12.5", 1.0),
    ("5", "5.", 1.0),
    ("5", ".5", 0.0),
    ("1000", "1e3", 1.0),
    ("2", "1e999", 0.0),  # exponent out of range
    ("0.75", "3/4", 1.0),
    ("3/4", "0.75", 1.0),
    ("-3/4", "-0.75", 1.0),
    ("0.75", "6/8", 0.0),  # not in lowest terms: an expression
    ("2", "4/2", 0.0),
    ("2", "2/1", 0.0),
    ("7", "7/0", 0.0),
    ("0.1", "0.10000000000000001", 0.0),  # equal as floats, not as numbers
    ("-4", "4 - 1 - 7", 0.0),  # evaluates to the gold, but is an expression
    ("-61", "( 56 + -33 ) - 84", 0.0),
    ("42", "6*7", 0.0),
    ("7", "7 7", 0.0),
    ("7", "--7", 0.0),
    ("7", "seven", 0.0),
    ("7", "nan", 0.0),
    ("7", "inf", 0.0),
    ("7", "7 apples", 0.0),
    ("abc", "ABC", 1.0),  # a non-numeric gold is compared as text
])
def test_numeric(gold, answer, expected):
    assert score_answer(answer, user_task(gold, "numeric")) == expected


# ---- math --------------------------------------------------------------------------
@pytest.mark.parametrize(("gold", "answer", "expected"), [
    ("0.5", "1/2", 1.0),
    ("0.5", "\\frac{1}{2}", 1.0),
    ("\\frac{1}{2}", "0.5", 1.0),
    ("\\frac{1}{2}", "$\\frac12$", 1.0),
    ("1/2", "\\dfrac{1}{2}", 1.0),
    ("7", "\\boxed{7}", 1.0),
    ("7", "$$7$$", 1.0),
    ("7", "x = 7", 1.0),
    ("x=3", "3", 1.0),
    ("\\sqrt{2}/2", "1/\\sqrt{2}", 1.0),
    ("\\frac{\\pi}{2}", "\\pi/2", 1.0),
    ("x^2+1", "1+x^2", 1.0),
    ("2^{10}", "1024", 1.0),
    ("(1,2)", "(1, 2)", 1.0),
    ("(1,2)", "(2, 1)", 0.0),
    ("0.5", "0.6", 0.0),
    ("0.5", "0.5 or 7", 0.0),  # several candidates
    ("7", "7 junk junk", 0.0),  # prose around the answer
    ("7", "the answer is 7", 0.0),
    ("7", "7 \\text{ apples}", 0.0),
    ("7", "$8$ $7$", 0.0),  # math-verify alone takes the last of these
    ("7", "8 \\\\ 7", 0.0),
    ("7", "8 = 7", 0.0),
    ("7", "\\boxed{8} \\boxed{7}", 0.0),
    ("7", "7;8", 0.0),
])
def test_math(gold, answer, expected):
    assert score_answer(answer, user_task(gold, "math")) == expected


@pytest.mark.parametrize("answer", ["2^{2^{99}}", "2**2**99", "10^{10^{10}}", "10000000!", "2^{1000000000}",
                                    "\\binom{10^9}{5}", "\\sum_{k=1}^{10} k"])
def test_math_rejects_costly_answers_fast(answer):
    start = time.perf_counter()
    assert score_answer(answer, user_task("7", "math")) == 0.0
    assert time.perf_counter() - start < 1.0


def test_math_in_a_thread():
    # math-verify's default timeouts use SIGALRM, which raises outside the main thread
    results = []
    worker = threading.Thread(target=lambda: results.append(
        (score_answer("1/2", user_task("0.5", "math")),
         score_answer("0.6", user_task("0.5", "math")),
         score_answer("2^{2^{99}}", user_task("7", "math")),
         verify._math_timeout())))
    worker.start()
    worker.join(timeout=30)
    assert results == [(1.0, 0.0, 0.0, None)]


def test_math_timeout_leaves_a_callers_alarm_alone():
    assert verify._math_timeout() == verify.MATH_TIMEOUT_S
    old = signal.signal(signal.SIGALRM, lambda *_: None)
    try:
        signal.setitimer(signal.ITIMER_REAL, 100.0)
        assert verify._math_timeout() is None
        assert score_answer("\\frac{1}{2}", user_task("0.5", "math")) == 1.0
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0  # still armed
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---- exact -------------------------------------------------------------------------
@pytest.mark.parametrize(("gold", "answer", "expected"), [
    ("Paris", "Paris", 1.0),
    ("Paris", "  paris ", 1.0),
    ("New York", "new   york", 1.0),
    ("New York", "NewYork", 0.0),
    ("Paris", "Paris.", 0.0),
    ("Paris", "Paris, Rome", 0.0),
    ("42", "42.0", 0.0),  # exact means exact
])
def test_exact(gold, answer, expected):
    assert score_answer(answer, user_task(gold, "exact")) == expected


# ---- auto --------------------------------------------------------------------------
@pytest.mark.parametrize(("gold", "answer", "expected"), [
    ("42", "42.0", 1.0),  # numeric
    ("42", "6*7", 0.0),  # numeric: an expression is not a number
    ("1/2", "0.5", 1.0),  # numeric: a fraction gold is a number
    ("1/2", "\\frac{1}{2}", 0.0),  # numeric wants a literal
    ("x^2+1", "1+x^2", 1.0),  # math
    ("2^{10}", "1024", 1.0),  # math
    ("\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2", 1.0),  # math
    ("x - y", "-y + x", 1.0),  # math
    ("Paris", "paris", 1.0),  # exact
    ("Paris", "Pari s", 0.0),  # exact
    ("blue-green", "blue-green", 1.0),  # exact (a hyphen in a word is not math)
])
def test_auto(gold, answer, expected):
    assert score_answer(answer, user_task(gold, "auto")) == expected


@pytest.mark.parametrize(("gold", "expected"), [
    ("42", "numeric"), ("-1,234.5", "numeric"), ("3/4", "numeric"),
    ("x^2+1", "math"), ("\\frac{1}{2}", "math"), ("sqrt 2", "math"), ("x - y", "math"), ("2 apples", "math"),
    ("Paris", "exact"), ("blue-green", "exact"), ("yes", "exact"),
])
def test_auto_picks_the_verifier(gold, expected):
    assert verify._auto_verifier(gold) == expected
