"""Constrained decoding of the reasoning format: the grammar a request carries.

The decoding gene's ``constrain`` option (docs/design.md, "The reasoning format"):

- ``off``: free decoding (the request carries no grammar; outputs are unchanged);
- ``structure``: ``<cot>`` steps, then exactly one ``<begin_constrained_output>``
  answer ``<end_constrained_output>``, then the response block, then the end token;
- ``answer``: the same, with the answer restricted to the family's answer pattern
  (:mod:`fitness.answer_patterns`; structure only where the family has none).

:func:`format_grammar` writes the grammar in llguidance's Lark dialect, which the hf
backend enforces through llguidance (:mod:`fitness.backends.grammar_rows`) and the
vllm backend hands to vLLM's structured outputs ("guidance" backend). This module is
pure text: no grammar library is imported here.

Budget: the grammar bounds the chain so that the answer and the response fit in
``max_new_tokens``: at most :func:`step_budget` steps of a bounded token length each,
a bounded answer and a bounded response (llguidance's ``max_tokens`` on a rule). A
step cannot contain ``<`` (it would open a marker), so a step ends where the model
starts the next marker.
"""

from __future__ import annotations

import json

from fitness.answer_patterns import PATTERNS, check_pattern, choices
from genomes.chat_format import BEGIN_ANSWER, BEGIN_RESPONSE, COT, END_ANSWER, END_RESPONSE
from genomes.strategy import CONSTRAIN_MODES

# Token costs (SmolLM2's tokenizer; others are similar in size): the four block
# markers together, one <cot> marker, and the bounds of the free-text answer and of
# the response. Overestimates only shorten the chain a little.
MARKER_TOKENS = 34
COT_TOKENS = 3
ANSWER_TOKENS = 24
MIN_STEP_TOKENS = 8
MAX_STEPS = 8
STEP_TOKENS_TARGET = 24  # room per step the step count is chosen for


def response_tokens(max_new_tokens: int) -> int:
    return max(6, min(32, max_new_tokens // 8))


def step_budget(max_new_tokens: int) -> tuple[int, int]:
    """(steps, tokens per step) that leave room for the answer and the response."""
    room = max_new_tokens - MARKER_TOKENS - ANSWER_TOKENS - response_tokens(max_new_tokens)
    steps = max(1, min(MAX_STEPS, room // STEP_TOKENS_TARGET))
    return steps, max(MIN_STEP_TOKENS, room // steps - COT_TOKENS)


def _literal(text: str) -> str:
    return json.dumps(text)  # a Lark string literal is a JSON string


def _answer_rule(pattern: str) -> str:
    values = choices(pattern)
    if values is not None:
        body = " | ".join(_literal(v) for v in values)
    elif pattern:
        body = f"/{PATTERNS[pattern]}/"
    else:
        body = r"/[^<]*[^<\s][^<]*/"
    return f"answer_text[max_tokens={ANSWER_TOKENS}]: {body}"


def format_grammar(mode: str, answer_pattern: str, cot_prefilled: bool, max_new_tokens: int) -> str | None:
    """The Lark grammar of a completion's generated text (what follows the prefill),
    or None for ``mode == "off"``. ``cot_prefilled``: the assistant turn already
    starts with ``<cot>`` (the chain gene's prefill), so the text starts inside the
    first step."""
    if mode not in CONSTRAIN_MODES:
        raise ValueError(f"unknown constrain mode {mode!r} (one of: {', '.join(CONSTRAIN_MODES)})")
    if mode == "off":
        return None
    check_pattern(answer_pattern)
    steps, step_tokens = step_budget(max_new_tokens)
    first = "step" if cot_prefilled else f"{_literal(COT)} step"
    more = f' ({_literal(COT)} step){{0,{steps - 1}}}' if steps > 1 else ""
    return "\n".join([
        "start: chain answer response",
        f"chain: {first}{more}",
        rf"step[max_tokens={step_tokens}]: /[^<]*[^<\s][^<]*/",
        rf"answer: {_literal(BEGIN_ANSWER)} / ?/ answer_text / ?/ {_literal(END_ANSWER)}",
        _answer_rule(answer_pattern if mode == "answer" else ""),
        rf"response: /[ \n]{{0,2}}/ {_literal(BEGIN_RESPONSE)} response_text {_literal(END_RESPONSE)}",
        rf"response_text[max_tokens={response_tokens(max_new_tokens)}]: /[^<]*[^<\s][^<]*/",
        "",
    ])
