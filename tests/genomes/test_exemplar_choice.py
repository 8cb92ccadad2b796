"""Per-question exemplar choice (genomes.exemplar_choice) and how Strategy.render uses
it: the order and subset each choice gives, ties, and that on real reasoning-gym
questions the library exemplars of the question's own family are the nearest."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from genomes.exemplar_choice import (
    EXEMPLAR_CHOICES,
    choose_exemplars,
    matching_exemplars,
    similarity,
    template_words,
)
from genomes.fragments import EXEMPLARS
from genomes.operators import cx_prompt, mut_prompt, random_strategy
from genomes.strategy import Exemplar, PromptGene, Strategy

ARITH = Exemplar("State the final answer to the following arithmetic problem: 12 + 7 - 4 =", ("12 + 7 = 19",), "15")
LETTER = Exemplar('How many times does the letter "r" appear in the text: "a red car"?', ("red: 1",), "2")
CALC = Exemplar("Calculate 6 * 4 - 10.", ("6 * 4 = 24",), "14")
LETTER_Q = 'How many times does the letter "o" appear in the text: "the arithmetic problem of food"?'
ARITH_Q = "State the final answer to the following arithmetic problem: 4 - 1 - 7 ="
# Library exemplars by the reasoning-gym family they are written for (fragments.py order).
LIBRARY_FAMILIES = ("chain_sum", "chain_sum", "basic_arithmetic", "basic_arithmetic", "letter_counting",
                    "spell_backward", "word_sorting", "syllogism", "syllogism", "count_bits", "count_bits")


def test_template_words_ignore_numbers_and_quoted_text():
    assert template_words(LETTER_Q) == template_words(LETTER.question)
    assert template_words(ARITH_Q) == template_words(ARITH.question)
    assert "arithmetic" not in template_words(LETTER_Q)  # it sits inside the quoted text


def test_similarity_is_a_jaccard_overlap():
    assert similarity(ARITH_Q, ARITH.question) == 1.0
    assert similarity("Calculate 5 - 3.", ARITH_Q) == 0.0
    assert similarity("a b c", "b c d") == pytest.approx(2 / 4)
    assert similarity("", "12 + 3") == 0.0  # no words on either side


def test_fixed_keeps_every_exemplar_in_gene_order():
    exemplars = (LETTER, ARITH, CALC)
    assert choose_exemplars(exemplars, ARITH_Q, "fixed") == exemplars


@pytest.mark.parametrize("question,last", [(ARITH_Q, ARITH), (LETTER_Q, LETTER), ("Calculate 2 * 3.", CALC)])
def test_nearest_last_puts_the_most_similar_exemplar_last(question, last):
    exemplars = (LETTER, ARITH, CALC)
    out = choose_exemplars(exemplars, question, "nearest_last")
    assert out[-1] == last and sorted(out, key=exemplars.index) == list(exemplars)


def test_nearest_last_ties_keep_gene_order():
    exemplars = (LETTER, CALC)
    # Neither shares a word with a bare sum: both score 0 and stay as they are.
    assert choose_exemplars(exemplars, "12 + 3", "nearest_last") == exemplars


def test_nearest_only_shows_the_matching_exemplars():
    other_arith = replace(ARITH, question="State the final answer to the following arithmetic problem: 5 - 9 =")
    exemplars = (ARITH, LETTER, other_arith)
    assert choose_exemplars(exemplars, ARITH_Q, "nearest_only") == (ARITH, other_arith)  # ties kept, in order
    assert choose_exemplars(exemplars, LETTER_Q, "nearest_only") == (LETTER,)
    assert choose_exemplars(exemplars, "12 + 3", "nearest_only") == exemplars  # nothing matches: all tie at 0


def test_nearest_two_shows_the_two_most_similar_the_nearer_last():
    other_arith = replace(ARITH, question="State the final answer to the following arithmetic problem: 5 - 9 =")
    exemplars = (ARITH, LETTER, CALC, other_arith)
    # two of the question's kind: both, in gene order (equal similarity)
    assert choose_exemplars(exemplars, ARITH_Q, "nearest_two") == (ARITH, other_arith)
    # one of its kind: it comes last, after the next most similar (a tie at 0: the earliest)
    assert choose_exemplars(exemplars, LETTER_Q, "nearest_two") == (ARITH, LETTER)
    assert choose_exemplars((LETTER, CALC, ARITH), LETTER_Q, "nearest_two") == (ARITH, LETTER)  # "the" in both
    assert choose_exemplars((LETTER, ARITH), ARITH_Q, "nearest_two") == (LETTER, ARITH)  # = nearest_last
    assert choose_exemplars(exemplars, "12 + 3", "nearest_two") == (ARITH, LETTER)  # nothing matches


def test_matching_exemplars_keep_the_kinds_a_run_trains_on():
    questions = [ARITH_Q, LETTER_Q, "Calculate -8 * -1."]
    kept = matching_exemplars(EXEMPLARS, questions)
    assert [LIBRARY_FAMILIES[EXEMPLARS.index(e)] for e in kept] == [
        "chain_sum", "chain_sum", "basic_arithmetic", "basic_arithmetic", "letter_counting"]
    assert matching_exemplars(EXEMPLARS, ["Spell this word backward (example: sun -> nus): river"]) == (EXEMPLARS[5],)
    assert matching_exemplars(EXEMPLARS, ["Translate 'chat' into English."]) == ()
    # counting bits shares "how many ... the ... in" with letter counting, but only 0.25
    assert all("bits" not in e.question for e in kept)


def test_unknown_choice_is_a_value_error():
    with pytest.raises(ValueError, match="nearest"):
        choose_exemplars((ARITH, LETTER), ARITH_Q, "nearest")


@pytest.mark.parametrize("family", sorted(set(LIBRARY_FAMILIES)))
def test_on_real_questions_the_nearest_library_exemplars_are_of_the_same_family(family):
    import reasoning_gym

    for item in reasoning_gym.create_dataset(family, size=20, seed=3):
        chosen = choose_exemplars(EXEMPLARS, item["question"], "nearest_only")
        assert {LIBRARY_FAMILIES[EXEMPLARS.index(e)] for e in chosen} == {family}, item["question"]
        assert choose_exemplars(EXEMPLARS, item["question"], "nearest_last")[-1] in chosen


# ---- rendering and operators -----------------------------------------------------------
def render_questions(strategy: Strategy, question: str) -> list[str]:
    """The exemplar questions the rendered chat shows, in order."""
    users = [m["content"] for m in strategy.render(question).messages if m["role"] == "user"]
    return users[:-1]


def test_render_follows_the_choice():
    s = Strategy(prompt=PromptGene(exemplars=(ARITH, LETTER)))
    assert render_questions(s, ARITH_Q) == [ARITH.question, LETTER.question]
    last = replace(s, prompt=replace(s.prompt, exemplar_choice="nearest_last"))
    assert render_questions(last, ARITH_Q) == [LETTER.question, ARITH.question]
    assert render_questions(last, LETTER_Q) == [ARITH.question, LETTER.question]
    only = replace(s, prompt=replace(s.prompt, exemplar_choice="nearest_only"))
    assert render_questions(only, LETTER_Q) == [LETTER.question]
    # The system prompt and the question itself do not depend on the choice.
    for a, b in [(s, last), (s, only)]:
        ra, rb = a.render(LETTER_Q), b.render(LETTER_Q)
        assert ra.messages[0] == rb.messages[0] and ra.messages[-1] == rb.messages[-1] and ra.prefill == rb.prefill


def test_mutation_reaches_every_choice_only_where_it_can_matter():
    rng = random.Random(5)
    with_exemplars = PromptGene(exemplars=(ARITH, LETTER))
    assert {mut_prompt(with_exemplars, rng).exemplar_choice for _ in range(300)} == set(EXEMPLAR_CHOICES)
    for too_few in (PromptGene(), PromptGene(exemplars=(ARITH,))):
        outs = [mut_prompt(too_few, rng) for _ in range(300)]
        assert {g.exemplar_choice for g in outs if len(g.exemplars) < 2} == {"fixed"}
        # only pairing up sets a choice (with a second exemplar of the kind and more);
        # adding one exemplar to one keeps "fixed"
        assert {g.exemplar_choice for g in outs if len(g.exemplars) >= 2} <= {"fixed", "nearest_two"}
        assert any(g.exemplar_choice == "nearest_two" for g in outs)
    # a pool with one exemplar: pairing up can only add it, and one exemplar keeps "fixed"
    assert {mut_prompt(PromptGene(), rng, exemplar_pool=(ARITH,)).exemplar_choice for _ in range(100)} == {"fixed"}
    # Dropping to one exemplar resets the choice: with one it changes nothing.
    pair = PromptGene(exemplars=(ARITH, LETTER), exemplar_choice="nearest_only")
    dropped = [g for g in (mut_prompt(pair, rng) for _ in range(300)) if len(g.exemplars) == 1]
    assert dropped and all(g.exemplar_choice == "fixed" for g in dropped)


def test_crossover_passes_the_choice_on():
    rng = random.Random(6)
    a = PromptGene(exemplars=(ARITH, CALC), exemplar_choice="nearest_only")
    b = PromptGene(exemplars=(LETTER, CALC), exemplar_choice="nearest_last")
    seen = set()
    for _ in range(100):
        for child in cx_prompt(a, b, rng):
            if len(child.exemplars) > 1:
                seen.add(child.exemplar_choice)
            else:
                assert child.exemplar_choice == "fixed"
    assert seen == {"nearest_only", "nearest_last"}


def test_random_strategies_draw_a_choice_only_with_two_exemplars_or_more():
    rng = random.Random(7)
    drawn = [random_strategy(rng) for _ in range(300)]
    assert all(s.prompt.exemplar_choice == "fixed" for s in drawn if len(s.prompt.exemplars) < 2)
    assert {s.prompt.exemplar_choice for s in drawn if len(s.prompt.exemplars) > 1} == set(EXEMPLAR_CHOICES)
    assert all(Strategy.decode(s.encode()) == s for s in drawn)
