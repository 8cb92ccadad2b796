"""The reasoning-chain format and its parser (docs/design.md, "The reasoning format").

A completion looks like::

    <cot> step one <cot> step two ... <begin_constrained_output> ANSWER <end_constrained_output>
    <begin_response> short explanation for a person <end_response>

Contract of :func:`parse_completion`: it accepts any string (or bytes) and never
raises; malformed output is data. The answer is the text of the constrained-output
blocks when there is at least one non-empty block and all blocks agree after
whitespace normalisation; otherwise ``answer`` is None and ``answer_problem`` says
why (no block, a marker inside a block, an empty block, disagreeing blocks). No
credit for listing many answers. Parsing is linear in the length of the input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from genomes.chat_format import (
    BEGIN_ANSWER,
    BEGIN_RESPONSE,
    COT,
    END_ANSWER,
    END_RESPONSE,
    MARKERS,
    format_completion,
)

__all__ = ["MARKERS", "ParsedCompletion", "count_tokens", "format_completion", "parse_completion"]

# Model output can be arbitrarily long; everything past this is ignored so that a
# runaway generation costs linear time once and cannot blow up memory downstream.
MAX_PARSE_CHARS = 200_000

# C0 controls except tab and newline (see _clean).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f]")
_WORDISH = re.compile(r"\w+|[^\w\s]")
_WHITESPACE = re.compile(r"\s+")


def count_tokens(text: str) -> int:
    """Tokenizer-free length: words and punctuation marks. Used where no model
    tokenizer is at hand; backends report exact model-token counts separately."""
    return len(_WORDISH.findall(text))


def normalise_space(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


@dataclass(frozen=True)
class ParsedCompletion:
    """What the parser found. ``answer`` is None exactly when ``answer_problem`` is set."""

    steps: tuple[str, ...]
    answer: str | None
    answer_problem: str | None
    response: str | None
    chain_tokens: int
    n_answer_blocks: int
    truncated: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    @property
    def well_formed(self) -> bool:
        """At least one step, a single agreed answer and a response block."""
        return bool(self.steps) and self.answer is not None and self.response is not None


def _as_text(raw: object) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    if isinstance(raw, str):
        return raw
    return "" if raw is None else str(raw)


def _clean(text: str) -> str:
    # NULs and other C0 controls are never meaningful in an answer; dropping them
    # stops "4\x002" from comparing unequal to itself after a round-trip.
    return _CONTROL.sub("", text)


def _blocks(text: str, begin: str, end: str) -> list[str]:
    """Contents of the ``begin ... end`` blocks, in order; an unclosed block is none.

    A scan with str.find, linear in the text: the lazy regex ``begin(.*?)end`` rescans
    to the end of the text for every unclosed ``begin`` and took seconds on a
    completion that repeats the marker.
    """
    blocks, pos = [], 0
    while (start := text.find(begin, pos)) >= 0:
        stop = text.find(end, start + len(begin))
        if stop < 0:
            break
        blocks.append(text[start + len(begin):stop])
        pos = stop + len(end)
    return blocks


def _steps(chain_region: str) -> tuple[str, ...]:
    if COT not in chain_region:
        return ()
    pieces = chain_region.split(COT)[1:]  # text before the first <cot> is preamble
    steps = []
    for piece in pieces:
        for marker in MARKERS[1:]:
            piece = piece.replace(marker, " ")
        piece = normalise_space(piece)
        if piece:
            steps.append(piece)
    return tuple(steps)


def parse_completion(raw: object) -> ParsedCompletion:
    """Parse one completion; never raises. See the module docstring for the rules."""
    text = _as_text(raw)
    truncated = len(text) > MAX_PARSE_CHARS
    text = _clean(text[:MAX_PARSE_CHARS])  # cut first: cleaning is the costlier pass

    blocks = [normalise_space(b) for b in _blocks(text, BEGIN_ANSWER, END_ANSWER)]
    first_answer = text.find(BEGIN_ANSWER)
    chain_region = text if first_answer < 0 else text[:first_answer]
    steps = _steps(chain_region)

    answer: str | None = None
    problem: str | None = None
    if not blocks:
        problem = "no constrained-output block"
    elif any(marker in b for b in blocks for marker in MARKERS):
        # "<begin> 4 <begin> 5 <end>" lists two answers in one block
        problem = "format marker inside a constrained-output block"
    elif any(not b for b in blocks):
        problem = "empty constrained-output block"
    elif len(set(blocks)) > 1:
        problem = f"{len(set(blocks))} disagreeing constrained-output blocks"
    else:
        answer = blocks[0]

    after_answer = text[text.rfind(END_ANSWER):] if blocks else text
    responses = _blocks(after_answer, BEGIN_RESPONSE, END_RESPONSE)
    response = normalise_space(responses[0]) if responses else None

    return ParsedCompletion(
        steps=steps,
        answer=answer,
        answer_problem=problem,
        response=response,
        chain_tokens=sum(count_tokens(s) for s in steps),
        n_answer_blocks=len(blocks),
        truncated=truncated,
    )
