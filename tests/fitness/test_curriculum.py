"""Frontier curriculum and ability estimate (fitness.curriculum), with hand-computed
expectations in the comments."""

from __future__ import annotations

import json
import math
import random
from collections import Counter

import pytest

from fitness.curriculum import Curriculum, estimate_ability
from fitness.evaluate import ExampleResult
from genomes.errors import InputError


def result(family="arith", level=0, correct=True, difficulty=None, score=None) -> ExampleResult:
    return ExampleResult(
        strategy_hash="h", task_id=f"{family}/L{level}/x", family=family, level=level,
        difficulty=level / 4 if difficulty is None else difficulty, question="q", gold="1", answer="1",
        answer_problem=None, score=(1.0 if correct else 0.0) if score is None else score, steps=(),
        response=None, chain_tokens=0, completion_tokens=0, finish_reason="stop", votes=1, completion="",
    )


def outcomes(family, level, n_ok, n_bad):
    return [result(family, level, True)] * n_ok + [result(family, level, False)] * n_bad


# ---- construction ------------------------------------------------------------------
def test_start_level_is_clipped_per_family_and_jsonl_has_one_level():
    c = Curriculum({"b": 2, "a": 5, "jsonl:mine": 4}, start_level=3)
    # a: min(3, 4) = 3; b: min(3, 1) = 1; jsonl: forced to 1 level -> 0
    assert c.frontier == {"a": 3, "b": 1, "jsonl:mine": 0}
    assert c.families == {"a": 5, "b": 2, "jsonl:mine": 1}
    assert list(c.frontier) == ["a", "b", "jsonl:mine"]  # sorted, so sampling order is stable


@pytest.mark.parametrize("kwargs,field", [
    ({"families": {}}, "families"),
    ({"families": {"a": 0}}, "families.a"),
    ({"families": {"a": True}}, "families.a"),
    ({"start_level": -1}, "start_level"),
    ({"up_threshold": 1.5}, "up_threshold"),
    ({"down_threshold": math.nan}, "down_threshold"),
    ({"up_threshold": 0.3, "down_threshold": 0.3}, "down_threshold"),
    ({"window": 0}, "window"),
    ({"spread": -1}, "spread"),
    ({"min_evidence": 0}, "min_evidence"),
    ({"window": 2, "min_evidence": 3}, "min_evidence"),
])
def test_bad_arguments_name_the_field(kwargs, field):
    kwargs = {"families": {"a": 3}, **kwargs}
    with pytest.raises(InputError, match=rf"curriculum\.{field}"):
        Curriculum(**kwargs)


# ---- moving the frontier -----------------------------------------------------------
def test_moves_up_on_success_and_down_on_failure():
    c = Curriculum({"arith": 3})
    # 2 of 2 at level 0: rate 1.0 >= 0.7 -> up to 1; evidence cleared
    assert c.update(outcomes("arith", 0, 2, 0)) == {"arith": 1}
    assert c.evidence["arith"] == []
    # results below the frontier are ignored; one failure at level 1 is < 2 outcomes -> stay
    assert c.update(outcomes("arith", 0, 5, 0) + outcomes("arith", 1, 0, 1)) == {"arith": 1}
    # evidence now [F, F]: rate 0.0 <= 0.2 -> down to 0
    assert c.update(outcomes("arith", 1, 0, 1)) == {"arith": 0}
    assert c.history == [{"arith": 1}, {"arith": 1}, {"arith": 0}]


def test_a_held_update_records_the_outcomes_but_never_moves():
    c = Curriculum({"arith": 3})
    assert c.update(outcomes("arith", 0, 2, 0), may_move=False) == {"arith": 0}
    assert c.evidence["arith"] == [True, True]  # kept: the next free update judges on them
    assert c.update([]) == {"arith": 1}


def test_min_evidence_holds_the_frontier_until_enough_outcomes():
    c = Curriculum({"arith": 3}, min_evidence=6)
    for _ in range(2):  # 2 and 4 outcomes, all correct: not enough to judge
        assert c.update(outcomes("arith", 0, 2, 0)) == {"arith": 0}
    assert c.update(outcomes("arith", 0, 2, 0)) == {"arith": 1}


def test_thresholds_are_inclusive():
    c = Curriculum({"a": 3}, start_level=1, window=10)
    # 7 of 10 = 0.7 >= 0.7 -> up
    assert c.update(outcomes("a", 1, 7, 3)) == {"a": 2}
    c = Curriculum({"a": 3}, start_level=1, window=10)
    # 1 of 5 = 0.2 <= 0.2 -> down
    assert c.update(outcomes("a", 1, 1, 4)) == {"a": 0}
    c = Curriculum({"a": 3}, start_level=1, window=10)
    # 1 of 2 = 0.5: between 0.2 and 0.7 -> stay
    assert c.update(outcomes("a", 1, 1, 1)) == {"a": 1}


def test_clipped_at_top_and_bottom():
    c = Curriculum({"a": 2}, start_level=1)
    # 2 of 2 at the top level (1): up is clipped -> stays 1
    assert c.update(outcomes("a", 1, 2, 0)) == {"a": 1}
    c = Curriculum({"a": 2}, start_level=0)
    # 0 of 2 at the bottom level: down is clipped -> stays 0
    assert c.update(outcomes("a", 0, 0, 2)) == {"a": 0}


def test_one_level_per_update_and_families_independent():
    c = Curriculum({"a": 5, "b": 5})
    # a: 8 of 8 at level 0 -> up one (not more); b: no evidence -> stays
    assert c.update(outcomes("a", 0, 8, 0)) == {"a": 1, "b": 0}


def test_window_slides_over_updates():
    c = Curriculum({"a": 3}, start_level=1, window=4)
    c.update(outcomes("a", 1, 1, 1))   # [T, F]: 0.5 -> stay
    c.update(outcomes("a", 1, 1, 0))   # [T, F, T]: 2/3 = 0.67 < 0.7 -> stay
    assert c.frontier == {"a": 1}
    c.update(outcomes("a", 1, 2, 0))   # last 4 of [T, F, T, T, T] = [F, T, T, T]: 0.75 -> up
    assert c.frontier == {"a": 2}


def test_jsonl_family_frontier_stays_zero():
    c = Curriculum({"jsonl:mine": 1})
    assert c.update(outcomes("jsonl:mine", 0, 4, 0)) == {"jsonl:mine": 0}


def test_unknown_families_and_garbage_results_are_ignored():
    c = Curriculum({"a": 3})
    junk = [result("other", 0, True), result("a", 0, score=math.nan), object()]
    # "other" is unknown; NaN score is a failure; object() has no family -> evidence [F]
    assert c.update(junk) == {"a": 0}
    assert c.evidence == {"a": [False]}


# ---- sampling ----------------------------------------------------------------------
def test_sampling_distribution_around_the_frontier():
    c = Curriculum({"a": 5}, start_level=2)
    counts = Counter(level for _, level in c.sample_levels(random.Random(0), 4000))
    # weights spread+1-|k|: levels 1, 2, 3 -> 1, 2, 1 -> 1/4, 1/2, 1/4 of 4000 = 1000, 2000, 1000
    assert set(counts) == {1, 2, 3}
    for level, expected in {1: 1000, 2: 2000, 3: 1000}.items():
        assert abs(counts[level] - expected) < 120  # ~4 standard deviations (sd <= 32)


def test_sampling_at_the_bottom_renormalises():
    c = Curriculum({"a": 5}, start_level=0)
    counts = Counter(level for _, level in c.sample_levels(random.Random(1), 3000))
    # level -1 dropped: weights 2, 1 -> 2/3, 1/3 of 3000 = 2000, 1000
    assert set(counts) == {0, 1}
    assert abs(counts[0] - 2000) < 110 and abs(counts[1] - 1000) < 110  # sd ~ 26


def test_sampling_spread_two_and_zero():
    c = Curriculum({"a": 9}, start_level=4, spread=2)
    counts = Counter(level for _, level in c.sample_levels(random.Random(2), 9000))
    # weights 1, 2, 3, 2, 1 over levels 2..6 (sum 9) -> 1000, 2000, 3000, 2000, 1000
    for level, expected in {2: 1000, 3: 2000, 4: 3000, 5: 2000, 6: 1000}.items():
        assert abs(counts[level] - expected) < 180
    assert c.level_weights("a") == {2: 1, 3: 2, 4: 3, 5: 2, 6: 1}
    c0 = Curriculum({"a": 9}, start_level=4, spread=0)
    assert set(c0.sample_levels(random.Random(2), 50)) == {("a", 4)}


def test_sampling_order_counts_and_determinism():
    c = Curriculum({"b": 3, "a": 3, "jsonl:x": 1})
    draws = c.sample_levels(random.Random(7), 3)
    # 3 per family, families in sorted order
    assert [f for f, _ in draws] == ["a"] * 3 + ["b"] * 3 + ["jsonl:x"] * 3
    assert [lvl for f, lvl in draws if f == "jsonl:x"] == [0, 0, 0]
    assert draws == c.sample_levels(random.Random(7), 3)
    assert c.sample_levels(random.Random(7), 0) == []


def test_global_random_untouched():
    random.seed(1234)
    before = random.getstate()
    c = Curriculum({"a": 5, "b": 3}, start_level=1)
    c.sample_levels(random.Random(0), 100)
    c.update(outcomes("a", 1, 3, 0))
    Curriculum.from_state(json.loads(json.dumps(c.to_state())))
    assert random.getstate() == before


# ---- ability -----------------------------------------------------------------------
def test_ability_is_highest_difficulty_with_half_success():
    rs = (outcomes("a", 0, 2, 0)      # d 0.0: 2/2
          + outcomes("a", 2, 1, 1)    # d 0.5: 1/2 = 0.5 >= 0.5 -> mastered
          + outcomes("a", 4, 0, 2))   # d 1.0: 0/2
    assert estimate_ability(rs) == 0.5
    assert Curriculum.estimate_ability(rs) == 0.5  # the same function on the class


def test_ability_below_half_is_not_mastered():
    rs = outcomes("a", 1, 2, 0) + outcomes("a", 3, 1, 2)  # d 0.25: 2/2; d 0.75: 1/3 < 0.5
    assert estimate_ability(rs) == 0.25


def test_ability_zero_when_nothing_mastered_or_no_results():
    assert estimate_ability(outcomes("a", 3, 0, 3)) == 0.0
    assert estimate_ability([]) == 0.0


def test_ability_uses_each_tasks_own_normalised_difficulty():
    rs = [result("a", 1, True, difficulty=1 / 2),   # family a: level 1 of 3 -> 0.5
          result("b", 1, True, difficulty=1 / 4),   # family b: level 1 of 5 -> 0.25
          result("b", 2, False, difficulty=2 / 4)]  # family b: level 2 of 5 -> 0.5
    # d 0.5 pools a's success and b's failure: 1/2 -> mastered; max(0.25, 0.5) = 0.5
    assert estimate_ability(rs) == 0.5


def test_ability_ignores_bad_difficulties():
    rs = [result("a", 0, True, difficulty=math.nan), result("a", 0, True, difficulty=2.0)]
    # NaN skipped; 2.0 clipped to 1.0 with 1/1 success -> 1.0
    assert estimate_ability(rs) == 1.0


# ---- state -------------------------------------------------------------------------
def test_state_round_trips_exactly_and_behaves_the_same():
    c = Curriculum({"a": 4, "b": 3, "jsonl:x": 1}, start_level=1, up_threshold=0.6, down_threshold=0.1,
                   window=5, spread=2, min_evidence=3)
    c.update(outcomes("a", 1, 3, 0) + outcomes("b", 1, 1, 0))
    c.update(outcomes("b", 1, 0, 1))
    state = c.to_state()
    restored = Curriculum.from_state(json.loads(json.dumps(state)))
    assert restored.to_state() == state
    assert restored.frontier == {"a": 2, "b": 1, "jsonl:x": 0}
    assert restored.evidence == {"a": [], "b": [True, False], "jsonl:x": []}
    assert restored.history == c.history
    assert restored.sample_levels(random.Random(3), 20) == c.sample_levels(random.Random(3), 20)
    more = outcomes("b", 1, 0, 1)
    assert restored.update(more) == c.update(more) == {"a": 2, "b": 1, "jsonl:x": 0}
    # b: [T, F, F] -> 1/3: between 0.1 and 0.6 -> stays


@pytest.mark.parametrize("change,message", [
    (lambda s: s.update(version=99), "version"),
    (lambda s: s.pop("window"), "window"),
    (lambda s: s.update(frontier={"a": 7}), "frontier"),
    (lambda s: s.update(evidence={"a": [1]}), "evidence"),
    (lambda s: s.update(history=[{"a": -1}]), "history"),
    (lambda s: s.update(up_threshold=2), "up_threshold"),
])
def test_bad_state_raises_input_error(change, message):
    state = Curriculum({"a": 3}).to_state()
    change(state)
    with pytest.raises(InputError, match=message):
        Curriculum.from_state(state)
