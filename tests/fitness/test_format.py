"""The reasoning-format parser: rules of docs/design.md, "The reasoning format", and that model
output of any shape (huge, binary, malformed) parses quickly and never raises.

hypothesis is not a dependency, so the property test is a seeded random fuzz loop.
"""

from __future__ import annotations

import random
import time

import pytest

from fitness.format import MAX_PARSE_CHARS, count_tokens, parse_completion
from genomes.chat_format import BEGIN_ANSWER, BEGIN_RESPONSE, COT, END_ANSWER, END_RESPONSE, MARKERS, format_completion

A, Z = BEGIN_ANSWER, END_ANSWER
R, RZ = BEGIN_RESPONSE, END_RESPONSE


# ---- well-formed output ----------------------------------------------------------
def test_round_trip_gives_back_steps_answer_and_response():
    text = format_completion(["add 2 and 3", "  2+3=5 "], " 5 ", "two plus three is five")
    parsed = parse_completion(text)
    assert parsed.steps == ("add 2 and 3", "2+3=5")
    assert parsed.answer == "5"
    assert parsed.answer_problem is None
    assert parsed.response == "two plus three is five"
    assert parsed.n_answer_blocks == 1
    assert parsed.well_formed is True
    assert parsed.truncated is False


def test_canonical_rendering():
    assert format_completion(["a", "b"], "7", "r") == f"{COT} a {COT} b {A} 7 {Z}\n{R} r {RZ}"
    assert format_completion([], "7") == f"{A} 7 {Z}"


def test_round_trip_without_response_is_not_well_formed():
    parsed = parse_completion(format_completion(["x"], "7"))
    assert parsed.answer == "7"
    assert parsed.response is None
    assert parsed.well_formed is False


def test_steps_counted_and_preamble_before_first_cot_ignored():
    text = f"Let me think. {COT} one {COT}  two\n words {COT} three {A} 3 {Z}"
    parsed = parse_completion(text)
    assert parsed.steps == ("one", "two words", "three")
    assert parsed.n_steps == 3


def test_empty_steps_are_dropped():
    parsed = parse_completion(f"{COT} {COT} real {COT}   {A} 1 {Z}")
    assert parsed.steps == ("real",)


def test_no_cot_means_no_steps():
    parsed = parse_completion(f"just text {A} 1 {Z}")
    assert parsed.steps == ()
    assert parsed.chain_tokens == 0
    assert parsed.answer == "1"


def test_chain_tokens_count_words_and_punctuation():
    # "add 2 and 3" = 4 tokens; "2+3=5" = 2 + 3 = 5 -> 5 tokens
    parsed = parse_completion(f"{COT} add 2 and 3 {COT} 2+3=5 {A} 5 {Z}")
    assert parsed.chain_tokens == 9
    assert count_tokens("add 2 and 3") == 4
    assert count_tokens("2+3=5") == 5


def test_steps_after_the_answer_block_are_not_chain():
    parsed = parse_completion(f"{COT} one {A} 1 {Z} {COT} late step")
    assert parsed.steps == ("one",)
    assert parsed.chain_tokens == 1


# ---- the answer rule ---------------------------------------------------------------
def test_no_block_gives_no_answer():
    parsed = parse_completion(f"{COT} the answer is 4")
    assert parsed.answer is None
    assert parsed.answer_problem == "no constrained-output block"
    assert parsed.n_answer_blocks == 0


def test_answer_only_in_the_chain_is_no_answer():
    parsed = parse_completion(f"{COT} so the answer is 42 {COT} 42\n{R} it is 42 {RZ}")
    assert parsed.answer is None
    assert parsed.answer_problem == "no constrained-output block"


def test_empty_block_gives_no_answer():
    parsed = parse_completion(f"{COT} x {A}   {Z}")
    assert parsed.answer is None
    assert parsed.answer_problem == "empty constrained-output block"


def test_an_empty_block_beside_a_full_one_gives_no_answer():
    parsed = parse_completion(f"{A} 4 {Z} {A} {Z}")
    assert parsed.answer is None
    assert parsed.answer_problem == "empty constrained-output block"


def test_disagreeing_blocks_give_no_answer():
    parsed = parse_completion(f"{COT} x {A} 4 {Z} {A} 5 {Z} {A} 6 {Z}")
    assert parsed.answer is None
    assert parsed.answer_problem == "3 disagreeing constrained-output blocks"
    assert parsed.n_answer_blocks == 3


def test_agreeing_blocks_give_the_answer():
    parsed = parse_completion(f"{A} 4 {Z} filler {A}\n  4\t{Z}")
    assert parsed.answer == "4"
    assert parsed.answer_problem is None
    assert parsed.n_answer_blocks == 2


def test_blocks_agree_only_after_whitespace_not_case():
    parsed = parse_completion(f"{A} Yes {Z} {A} yes {Z}")
    assert parsed.answer is None
    assert parsed.answer_problem == "2 disagreeing constrained-output blocks"


def test_answer_whitespace_is_normalised():
    assert parse_completion(f"{A}\n  a   b\n{Z}").answer == "a b"


def test_nested_open_marker_is_two_answers_not_one():
    # "<begin> 4 <begin> 5 <end>" lists two candidates inside one block
    parsed = parse_completion(f"{A} 4 {A} 5 {Z}")
    assert parsed.answer is None
    assert parsed.answer_problem == "format marker inside a constrained-output block"


def test_cot_marker_inside_block_gives_no_answer():
    parsed = parse_completion(f"{A} 4 {COT} 5 {Z}")
    assert parsed.answer is None
    assert parsed.answer_problem == "format marker inside a constrained-output block"


# ---- response ------------------------------------------------------------------------
def test_response_extracted_after_the_answer():
    parsed = parse_completion(f"{COT} s {A} 9 {Z}\n{R}  nine,\n because  {RZ} trailing")
    assert parsed.response == "nine, because"


def test_response_before_the_answer_is_ignored():
    parsed = parse_completion(f"{R} early {RZ} {COT} s {A} 9 {Z}")
    assert parsed.response is None
    assert parsed.answer == "9"


def test_first_response_block_wins():
    parsed = parse_completion(f"{A} 9 {Z} {R} first {RZ} {R} second {RZ}")
    assert parsed.response == "first"


def test_response_without_answer_block_is_still_read():
    parsed = parse_completion(f"{COT} s {R} words {RZ}")
    assert parsed.answer is None
    assert parsed.response == "words"


# ---- unclosed and stray markers ----------------------------------------------------
def test_unclosed_answer_block_is_no_block():
    parsed = parse_completion(f"{COT} s {A} 4")
    assert parsed.answer is None
    assert parsed.answer_problem == "no constrained-output block"
    assert parsed.steps == ("s",)


def test_unclosed_second_block_is_ignored():
    parsed = parse_completion(f"{A} 4 {Z} {A} 5")
    assert parsed.answer == "4"
    assert parsed.n_answer_blocks == 1


def test_stray_end_marker_is_no_block():
    parsed = parse_completion(f"4 {Z}")
    assert parsed.answer is None
    assert parsed.answer_problem == "no constrained-output block"


def test_unclosed_response_is_none():
    parsed = parse_completion(f"{A} 4 {Z} {R} never closed")
    assert parsed.answer == "4"
    assert parsed.response is None


# ---- hostile input ----------------------------------------------------------------
def test_huge_output_parses_quickly_and_is_truncated():
    text = f"{COT} step " + "x" * 5_000_000 + f" {A} 4 {Z}"
    start = time.perf_counter()
    parsed = parse_completion(text)
    assert time.perf_counter() - start < 1.0
    assert parsed.truncated is True
    # the answer block lies past the cut, so it is not seen
    assert parsed.answer is None
    assert parsed.answer_problem == "no constrained-output block"
    assert parsed.steps[0].startswith("step x")


def test_output_at_the_limit_is_not_truncated():
    text = f"{A} 4 {Z}"
    parsed = parse_completion(text + " " * (MAX_PARSE_CHARS - len(text)))
    assert parsed.truncated is False
    assert parsed.answer == "4"


@pytest.mark.parametrize("marker", MARKERS)
def test_repeated_marker_flood_is_linear(marker):
    # the lazy-regex block matcher rescanned the text for every unclosed marker
    start = time.perf_counter()
    parsed = parse_completion(marker * 400_000)
    assert time.perf_counter() - start < 1.0
    assert parsed.truncated is True
    assert parsed.answer is None


def test_unclosed_answer_markers_up_to_the_limit_are_linear():
    text = (A + " 4 ") * (MAX_PARSE_CHARS // (len(A) + 3))
    start = time.perf_counter()
    parsed = parse_completion(text)
    assert time.perf_counter() - start < 1.0
    assert parsed.answer_problem == "no constrained-output block"


def test_bytes_input_is_decoded():
    parsed = parse_completion(format_completion(["s"], "4", "r").encode())
    assert parsed.answer == "4"
    assert parsed.steps == ("s",)


def test_invalid_utf8_bytes_never_raise():
    parsed = parse_completion(b"\xff\xfe\xc3(" + A.encode() + b" 4\xff " + Z.encode())
    assert parsed.answer == "4\ufffd"


def test_nul_and_control_characters_are_dropped():
    parsed = parse_completion(f"{COT} a\x00b {A} 4\x002\x07 {Z}\r\n{R} o\x1bk {RZ}")
    assert parsed.steps == ("ab",)
    assert parsed.answer == "42"
    assert parsed.response == "ok"


def test_nul_only_block_is_empty():
    parsed = parse_completion(f"{A}\x00\x00{Z}")
    assert parsed.answer is None
    assert parsed.answer_problem == "empty constrained-output block"


@pytest.mark.parametrize("raw", [None, "", 0, 3.5, [1, 2], {"a": 1}, object(), b"", bytearray(b"\x00")])
def test_non_text_input_never_raises(raw):
    parsed = parse_completion(raw)
    assert parsed.answer is None
    assert parsed.steps == ()


def test_random_binary_garbage_never_raises():
    rng = random.Random(1234)
    for _ in range(200):
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(2000)))
        parsed = parse_completion(raw)
        assert parsed.answer is None or isinstance(parsed.answer, str)


def test_fuzz_text_never_raises():
    """Property: any text -- markers, unicode, controls, in any order -- parses to a
    consistent result (answer None exactly when a problem is named)."""
    rng = random.Random(20240601)
    alphabet = ["a", " ", "\n", "4", "-", "\x00", "\ud800", "\u2212", "é", "🙂", "<", ">", "{", "\\"]
    pieces = list(MARKERS) * 3 + alphabet
    for _ in range(2000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(40)))
        parsed = parse_completion(text)
        assert (parsed.answer is None) == (parsed.answer_problem is not None)
        assert parsed.chain_tokens == sum(count_tokens(s) for s in parsed.steps)
        if parsed.answer is not None:
            assert parsed.answer == parsed.answer.strip() != ""
            assert not any(m in parsed.answer for m in MARKERS)
        assert all(s and not any(m in s for m in MARKERS) for s in parsed.steps)


def test_fuzz_round_trip():
    """Property: rendering then parsing gives back the (normalised) parts."""
    rng = random.Random(7)
    words = ["add", "2", "x=3", "é", "-5", "(a+b)", "🙂", "so"]
    for _ in range(500):
        steps = [" ".join(rng.choices(words, k=rng.randrange(1, 5))) for _ in range(rng.randrange(1, 5))]
        answer = " ".join(rng.choices(words, k=rng.randrange(1, 3)))
        response = " ".join(rng.choices(words, k=rng.randrange(1, 4)))
        parsed = parse_completion(format_completion(steps, answer, response))
        assert parsed.steps == tuple(steps)
        assert parsed.answer == answer
        assert parsed.response == response
