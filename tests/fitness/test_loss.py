"""The unified loss (fitness.loss): every term against hand-computed values.

Each expected value has its arithmetic in a comment. Results and tasks are built
directly, so these tests pin the formulas, not the parser or the verifiers.
"""

from __future__ import annotations

import itertools
import json
import math

import pytest

from fitness.evaluate import ExampleResult
from fitness.loss import (
    DEFAULT_REFERENCE_TOKENS,
    LossTerms,
    LossWeights,
    constrained_term,
    difficulty_term,
    example_terms,
    f_eff,
    fitness_value,
    individual_loss,
    mentions,
    multi_objective,
    reason_term,
    response_term,
)
from fitness.tasks import Task
from genomes.errors import InputError


def result(score=1.0, steps=(), response="The answer is 19.", answer="19", chain_tokens=24,
           difficulty=0.0, family="jsonl:t", level=0, task_id="t1") -> ExampleResult:
    return ExampleResult(
        strategy_hash="h", task_id=task_id, family=family, level=level, difficulty=difficulty,
        question="q", gold="19", answer=answer, answer_problem=None if answer else "no block",
        score=score, steps=tuple(steps), response=response, chain_tokens=chain_tokens,
        completion_tokens=100, finish_reason="stop", votes=1, completion="",
    )


def task(steps=None, difficulty=0.0, task_id="t1", family="jsonl:t") -> Task:
    return Task(id=task_id, family=family, question="q", answer="19", level=0, difficulty=difficulty,
                steps=None if steps is None else tuple(steps), verifier="numeric")


# ---- weights -----------------------------------------------------------------------
def test_default_weights():
    w = LossWeights()
    assert (w.alpha, w.beta, w.gamma, w.delta) == (1.0, 1.0, 0.2, 0.2)
    assert w.as_dict() == {"alpha": 1.0, "beta": 1.0, "gamma": 0.2, "delta": 0.2}


@pytest.mark.parametrize("field,value", [
    ("alpha", -0.1), ("beta", math.nan), ("gamma", math.inf), ("delta", "1"), ("alpha", True), ("beta", None),
])
def test_weights_reject_bad_values_naming_the_field(field, value):
    with pytest.raises(InputError, match=rf"loss\.{field}: must be a finite number >= 0"):
        LossWeights(**{field: value})


def test_zero_weights_are_allowed():
    assert LossWeights(0, 0, 0, 0).alpha == 0


# ---- f_eff -------------------------------------------------------------------------
@pytest.mark.parametrize("length,reference,expected", [
    (24, 48, 1.0),        # under the reference
    (48, 48, 1.0),        # at the reference
    (96, 48, 0.5),        # 48 / 96
    (144, 48, 1 / 3),     # 48 / 144
    (0, 48, 1.0),         # no chain at all
    (-5, 48, 1.0),        # negative length counts as 0
    (4, 0, 0.25),         # reference 0 -> 1 token: 1 / 4
    (4, -3, 0.25),        # reference < 0 -> 1 token: 1 / 4
    (1, 0, 1.0),          # 1 token against a 1-token reference
    (math.nan, 48, 1.0),  # NaN length counts as 0
])
def test_f_eff_values(length, reference, expected):
    assert f_eff(length, reference) == pytest.approx(expected)


def test_f_eff_is_positive_and_monotone():
    values = [f_eff(n, 48) for n in [0, 1, 47, 48, 49, 100, 10**6, 10**15, math.inf]]
    assert all(0 < v <= 1 for v in values)
    assert all(a >= b for a, b in itertools.pairwise(values))


# ---- mentions ----------------------------------------------------------------------
@pytest.mark.parametrize("text,value,expected", [
    ("12 + 7 = 19", "19", True),
    ("19 - 4 = 14", "15", False),
    ("12 + 7 = 19.0", "19", True),      # numbers compared as numbers
    ("so 190 apples", "19", False),     # not inside a longer number
    ("x = 12", "1", False),
    ("1,000 + 234 = 1,234", "1234", True),
    ("half is 1/2", "0.5", True),       # 1/2 == 0.5
    ("x = \u22124", "-4", True),        # typographic minus
    ("19-4 = 15", "-4", False),         # a binary minus is not a sign
    ("  The   CAT sat", "the cat", True),  # whitespace and case collapsed
    ("concatenate", "cat", False),      # not inside a longer word
    ("anything", "", False),
    ("", "19", False),
    (None, "19", False),
    ("9" * 5000, "9" * 5000, False),    # past int's digit limit: no crash, no match
])
def test_mentions(text, value, expected):
    assert mentions(text, value) is expected


# ---- L_reason ----------------------------------------------------------------------
def test_reason_without_gold_steps_short_correct_chain():
    # c = 1, chain 24 <= reference 48 -> f_eff = 1 -> L_reason = -(1 * 1) = -1
    assert reason_term(result(score=1.0, chain_tokens=24), task(), 48) == -1.0


def test_reason_without_gold_steps_long_correct_chain():
    # c = 1, chain 96 > 48 -> f_eff = 48/96 = 0.5 -> L_reason = -(1 * 0.5) = -0.5
    assert reason_term(result(score=1.0, chain_tokens=96), task(), 48) == -0.5


def test_reason_without_gold_steps_wrong_answer():
    # c = 0 -> L_reason = -(0 * 1) = 0, whatever the chain length
    assert reason_term(result(score=0.0, chain_tokens=10), task(), 48) == 0.0


def test_reason_partial_credit_scales():
    # c = 0.5, chain 72 > 48 -> f_eff = 48/72 = 2/3 -> L_reason = -(0.5 * 2/3) = -1/3
    assert reason_term(result(score=0.5, chain_tokens=72), task(), 48) == pytest.approx(-1 / 3)


def test_reason_empty_gold_steps_falls_back_to_chain_length():
    # steps=() is "no gold steps": c = 1, 24 tokens -> -1
    assert reason_term(result(chain_tokens=24), task(steps=[]), 48) == -1.0


def test_reason_with_gold_steps_one_of_two():
    # gold 19 in "12 + 7 = 19" (hit), gold 15 not in "19 - 4 = 14" (miss)
    # n = max(2, 2) = 2 -> L_reason = -(1/2)(1*1 + 0) = -0.5
    r = result(steps=["12 + 7 = 19", "19 - 4 = 14"])
    assert reason_term(r, task(steps=["19", "15"]), 48) == -0.5


def test_reason_with_gold_steps_all_correct():
    # both hit, n = 2 -> -(1/2)(1 + 1) = -1
    r = result(steps=["12 + 7 = 19", "19 - 4 = 15"])
    assert reason_term(r, task(steps=["19", "15"]), 48) == -1.0


def test_reason_padding_steps_cost():
    # 2 gold steps, 4 model steps, first two hit: n = max(2, 4) = 4 -> -(1/4)(1 + 1) = -0.5
    r = result(steps=["12 + 7 = 19", "19 - 4 = 15", "check: 15", "done"])
    assert reason_term(r, task(steps=["19", "15"]), 48) == -0.5


def test_reason_missing_steps_cost():
    # 3 gold steps, 1 model step that hits: n = max(3, 1) = 3 -> -(1/3)(1) = -1/3
    r = result(steps=["12 + 7 = 19"])
    assert reason_term(r, task(steps=["19", "15", "30"]), 48) == pytest.approx(-1 / 3)


def test_reason_alignment_is_positional():
    # the right values in swapped steps: "7 + 8 = 15" lacks 19, "12 + 7 = 19" lacks 15
    # -> -(1/2)(0 + 0) = 0
    r = result(steps=["7 + 8 = 15", "12 + 7 = 19"])
    assert reason_term(r, task(steps=["19", "15"]), 48) == 0.0


def test_reason_gold_steps_ignore_the_answer_score():
    # a wrong final answer (c = 0) with one good step: -(1/2)(1 + 0) = -0.5
    r = result(score=0.0, steps=["12 + 7 = 19", "no idea"])
    assert reason_term(r, task(steps=["19", "15"]), 48) == -0.5


def test_reason_text_gold_steps():
    # "Paris" found case-insensitively in step 1; "France" missing in step 2 -> -(1/2)(1 + 0) = -0.5
    r = result(steps=["the capital is paris", "europe"])
    assert reason_term(r, task(steps=["Paris", "France"]), 48) == -0.5


def test_reason_no_model_steps_with_gold_steps():
    # n = max(2, 0) = 2, no hits -> 0
    assert reason_term(result(steps=()), task(steps=["19", "15"]), 48) == 0.0


# ---- L_constrained -----------------------------------------------------------------
@pytest.mark.parametrize("score,expected", [
    (1.0, -1.0),      # -c
    (0.0, 0.0),       # a wrong answer earns nothing
    (0.25, -0.25),
    (1.7, -1.0),      # clipped to 1
    (-3.0, 0.0),      # clipped to 0
    (math.nan, 0.0),  # NaN is 0
])
def test_constrained(score, expected):
    assert constrained_term(result(score=score)) == expected


# ---- L_response --------------------------------------------------------------------
@pytest.mark.parametrize("response,answer,expected", [
    # present + non-empty + bounded + consistent = 4/4 -> -1
    ("The answer is 19.", "19", -1.0),
    # present, non-empty, bounded; "190" does not mention 19 -> 3/4
    ("The answer is 190.", "19", -0.75),
    # present, non-empty, consistent; 61 words + 1 "." = 62 > 60 -> not bounded -> 3/4
    ("19 " + "word " * 60 + ".", "19", -0.75),
    # present, non-empty, 62 tokens, no answer to be consistent with -> 2/4
    ("19 " + "word " * 60 + ".", None, -0.5),
    # present, empty: 1/4
    ("   ", "19", -0.25),
    # absent: 0/4
    (None, "19", 0.0),
    # present, non-empty, bounded, answer None -> not consistent -> 3/4
    ("The answer is 19.", None, -0.75),
])
def test_response_quarters(response, answer, expected):
    assert response_term(result(response=response, answer=answer)) == expected


def test_response_bound_is_inclusive_and_configurable():
    text = "19 " + "w " * 59  # 60 tokens: 60 <= 60 -> bounded -> 4/4
    assert response_term(result(response=text, answer="19")) == -1.0
    # with max 10 tokens: 60 > 10 -> not bounded -> 3/4
    assert response_term(result(response=text, answer="19"), max_response_tokens=10) == -0.75


# ---- L_diff ------------------------------------------------------------------------
@pytest.mark.parametrize("d_model,d_task,expected", [
    (0.5, 0.5, 0.0),
    (0.25, 1.0, 0.75),   # |0.25 - 1|
    (1.0, 0.0, 1.0),
    (1.5, 0.0, 1.0),     # d_model clipped to 1: |1 - 0|
    (-1.0, 0.5, 0.5),    # d_model clipped to 0: |0 - 0.5|
    (math.nan, 0.25, 0.25),  # NaN -> 0: |0 - 0.25|
])
def test_difficulty(d_model, d_task, expected):
    assert difficulty_term(d_model, d_task) == expected


# ---- totals ------------------------------------------------------------------------
def test_loss_terms_total_with_given_weights():
    terms = LossTerms(reason=-0.5, constrained=-1.0, response=-0.75, diff=0.5)
    # 2*(-0.5) + 1*(-1) + 0.4*(-0.75) + 0.5*0.5 = -1 - 1 - 0.3 + 0.25 = -2.05
    assert terms.total(LossWeights(2.0, 1.0, 0.4, 0.5)) == pytest.approx(-2.05)
    assert terms.as_dict() == {"reason": -0.5, "constrained": -1.0, "response": -0.75, "diff": 0.5}


def test_example_terms_perfect_completion():
    r = result(score=1.0, chain_tokens=24, response="The answer is 19.", difficulty=0.5)
    t = example_terms(r, task(difficulty=0.5), d_model=0.5, reference_tokens=48)
    # reason -1 (c=1, 24<=48), constrained -1, response -1 (4/4), diff |0.5-0.5| = 0
    assert t == LossTerms(-1.0, -1.0, -1.0, 0.0)
    # default weights: 1*(-1) + 1*(-1) + 0.2*(-1) + 0.2*0 = -2.2
    assert t.total(LossWeights()) == pytest.approx(-2.2)


def test_example_terms_per_family_reference():
    r = result(chain_tokens=96, family="long")
    # family "long" has reference 96 -> f_eff = 1 -> reason -1
    assert example_terms(r, task(), 0.0, {"long": 96}).reason == -1.0
    # a family missing from the map uses DEFAULT_REFERENCE_TOKENS = 48 -> 48/96 = 0.5
    assert DEFAULT_REFERENCE_TOKENS == 48
    assert example_terms(r, task(), 0.0, {"other": 96}).reason == -0.5


def test_individual_loss_averages_terms_then_weights():
    good = result(score=1.0, chain_tokens=96, response="The answer is 19.", difficulty=1.0, task_id="a")
    bad = result(score=0.0, chain_tokens=10, response=None, answer=None, difficulty=0.0, task_id="b")
    tasks = [task(task_id="a", difficulty=1.0), task(task_id="b")]
    weights = LossWeights(1.0, 2.0, 0.5, 1.0)
    total, terms = individual_loss([good, bad], tasks, d_model=0.5, weights=weights, reference_tokens=48)
    # reason: good -1*48/96 = -0.5, bad 0 -> mean -0.25
    # constrained: good -1, bad 0 -> mean -0.5
    # response: good -1 (4/4), bad 0 (absent) -> mean -0.5
    # diff: |0.5-1| = 0.5 and |0.5-0| = 0.5 -> mean 0.5
    assert terms == LossTerms(-0.25, -0.5, -0.5, 0.5)
    # total: 1*(-0.25) + 2*(-0.5) + 0.5*(-0.5) + 1*0.5 = -0.25 - 1 - 0.25 + 0.5 = -1.0
    assert total == pytest.approx(-1.0)
    assert fitness_value([good, bad], tasks, 0.5, weights, 48) == pytest.approx(1.0)  # -L_total
    # the same with tasks given as a map task_id -> Task
    assert individual_loss([good, bad], {t.id: t for t in tasks}, 0.5, weights, 48) == (total, terms)


def test_individual_loss_uses_gold_steps_from_the_task_map():
    r = result(steps=["12 + 7 = 19", "19 - 4 = 14"], task_id="s")
    _, terms = individual_loss([r], {"s": task(steps=["19", "15"], task_id="s")}, 0.0)
    assert terms.reason == -0.5  # -(1/2)(1 + 0)
    # an id missing from the map: no gold steps -> -c * f_eff(24, 48) = -1
    _, terms = individual_loss([r], {}, 0.0)
    assert terms.reason == -1.0


def test_individual_loss_caller_errors():
    with pytest.raises(ValueError, match="no results"):
        individual_loss([], [], 0.0)
    with pytest.raises(ValueError, match="aligned"):
        individual_loss([result()], [task(), task()], 0.0)


def test_terms_are_json_serialisable():
    _, terms = individual_loss([result()], [task()], 0.0)
    assert json.loads(json.dumps(terms.as_dict())) == terms.as_dict()


# ---- multi-objective ---------------------------------------------------------------
def test_multi_objective():
    rs = [result(score=1.0, chain_tokens=10), result(score=0.0, chain_tokens=30),
          result(score=0.5, chain_tokens=20), result(score=1.0, chain_tokens=40)]
    # accuracy: full credit in 2 of 4 (0.5 is not correct) = 0.5; tokens (10+30+20+40)/4 = 25
    assert multi_objective(rs) == (0.5, 25.0)
    with pytest.raises(ValueError):
        multi_objective([])


# ---- malformed results -------------------------------------------------------------
def test_garbage_results_never_raise():
    garbage = [
        result(score=0.0, steps=(), response=None, answer=None, chain_tokens=0),
        ExampleResult(  # every field wrong-typed or missing in spirit
            strategy_hash="", task_id="", family="", level=-1, difficulty=math.nan, question="",
            gold=None, answer=None, answer_problem="x", score=math.nan, steps=None, response=123,
            chain_tokens=None, completion_tokens=0, finish_reason="", votes=0, completion="",
        ),
        object(),  # not even a result
    ]
    gold = task(steps=["19", "15"])
    for g in garbage:
        terms = example_terms(g, gold, d_model=0.3)
        # reason 0 (no hits), constrained 0, response 0, diff |0.3 - d| with d in {0, NaN->0}
        assert (terms.reason, terms.constrained, terms.response) == (0.0, 0.0, 0.0)
        assert terms.diff == pytest.approx(0.3)
        assert example_terms(g, None, 0.0).reason == 0.0  # c = 0 -> -0 * f_eff
    total, _ = individual_loss(garbage, [gold] * 3, 0.3)
    assert total == pytest.approx(0.2 * 0.3)  # only delta * diff remains: 0.2 * 0.3
    assert multi_objective(garbage) == (0.0, 0.0)


def test_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, fitness.loss, fitness.curriculum; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
