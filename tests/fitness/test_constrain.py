"""The grammar of constrained decoding (fitness.constrain), checked with llguidance
against the bundled model's tokenizer: what the parser calls well formed is what the
grammar accepts, and answers outside the family's pattern are not."""

from __future__ import annotations

import pytest

from fitness.constrain import (
    ANSWER_TOKENS,
    COT_TOKENS,
    MARKER_TOKENS,
    format_grammar,
    response_tokens,
    step_budget,
)
from fitness.format import format_completion, parse_completion
from genomes.chat_format import COT

pytest.importorskip("llguidance")


@pytest.fixture(scope="module")
def compiler():
    from transformers import AutoTokenizer

    from fitness.backends.grammar_rows import GrammarCompiler
    from fitness.backends.model_store import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("default"), local_files_only=True)
    return tokenizer, GrammarCompiler(tokenizer, len(tokenizer), frozenset({tokenizer.eos_token_id}))


def accepts(compiler, grammar: str, text: str) -> bool:
    tokenizer, grammars = compiler
    ids = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
    return grammars.matcher(grammar).matcher.validate_tokens(ids) == len(ids)


def test_off_is_no_grammar():
    assert format_grammar("off", "integer", True, 128) is None
    with pytest.raises(ValueError, match="unknown constrain mode"):
        format_grammar("strict", "", True, 128)


@pytest.mark.parametrize("prefilled", [True, False])
def test_structure_accepts_the_canonical_format(compiler, prefilled):
    text = format_completion(["add 17 and 25", "that is 42"], "42", "17 + 25 = 42")
    assert parse_completion(text).well_formed
    generated = text[len(COT):] if prefilled else text
    grammar = format_grammar("structure", "", prefilled, 256)
    assert accepts(compiler, grammar, generated)
    assert not accepts(compiler, grammar, text.replace("<begin_response>", "<begin_answer>"))
    # a second answer block, no response, or no step at all are not the format
    assert not accepts(compiler, grammar, generated.replace("\n<begin_response>", " <begin_constrained_output> 41 "
                                                                                "<end_constrained_output>\n<begin_response>"))
    assert not accepts(compiler, grammar, generated.split("\n<begin_response>")[0])


def test_answer_mode_restricts_the_answer_to_the_pattern(compiler):
    good = format_completion(["count"], "-15", "done")[len(COT):]
    bad = format_completion(["count"], "fifteen", "done")[len(COT):]
    assert accepts(compiler, format_grammar("answer", "integer", True, 128), good)
    assert not accepts(compiler, format_grammar("answer", "integer", True, 128), bad)
    assert accepts(compiler, format_grammar("structure", "integer", True, 128), bad)  # structure ignores the pattern
    labels = 'choice:["False", "True"]'
    assert accepts(compiler, format_grammar("answer", labels, True, 128),
                   format_completion(["compare"], "True", "ok")[len(COT):])
    assert not accepts(compiler, format_grammar("answer", labels, True, 128),
                       format_completion(["compare"], "Yes", "ok")[len(COT):])
    # answer mode without a pattern (a family with none) is structure only
    assert format_grammar("answer", "", True, 128) == format_grammar("structure", "", True, 128)


def test_the_chain_is_bounded_so_the_answer_fits():
    for max_new in (128, 192, 256, 384, 512, 1024):
        steps, per_step = step_budget(max_new)
        assert 1 <= steps <= 8 and per_step >= 8
        assert steps * (per_step + COT_TOKENS) + MARKER_TOKENS + ANSWER_TOKENS + response_tokens(max_new) <= max_new
    assert step_budget(32) == (1, 8)  # too small a budget still allows one short step
