"""The unified loss as weights on training tokens (no torch).

A completion in the reasoning format has three segments, and the loss weights of
evolution weight the tokens of each (docs/design.md, the loss)::

    <cot> step <cot> step   <begin_constrained_output> 42 <end_constrained_output>   <begin_response> ... <end_response>
    |------ chain: α -----| |------------------ answer: β ---------------------|   |------- response: γ (and anything after) --|

A completion with no answer block is chain throughout. A token belongs to the segment
of its last non-space character (so `` <`` opening a marker goes with the marker); a
token that decodes to nothing or to white space only (end of sequence, a special
token, a line break) takes the segment of the token before it.

δ weights whole examples: an example whose task sits at the model's frontier
(difficulty close to the model's ability, the curriculum's D_model vs D_task) counts
more, one far from it less: ``1 + δ · (closeness − mean closeness)`` over the
examples of a training set, with closeness ``1 − |D_model − D_task|``, so the mean
example weight stays 1 and ``δ = 0`` weighs every example alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from genomes.chat_format import BEGIN_ANSWER, END_ANSWER

CHAIN, ANSWER, RESPONSE = "chain", "answer", "response"


@dataclass(frozen=True)
class SegmentWeights:
    """Per-token weight of each segment: α on the chain, β on the answer block, γ on
    the response block."""

    chain: float = 1.0
    answer: float = 1.0
    response: float = 0.2

    @classmethod
    def from_loss(cls, weights: dict[str, float]) -> SegmentWeights:
        return cls(chain=weights["alpha"], answer=weights["beta"], response=weights["gamma"])

    def of(self, segment: str) -> float:
        return {CHAIN: self.chain, ANSWER: self.answer, RESPONSE: self.response}[segment]


def answer_span(text: str) -> tuple[int, int] | None:
    """Character span ``[start, end)`` of the first answer block, markers included;
    None when there is none (an answer block without its end runs to the end)."""
    start = text.find(BEGIN_ANSWER)
    if start < 0:
        return None
    end = text.find(END_ANSWER, start + len(BEGIN_ANSWER))
    return start, len(text) if end < 0 else end + len(END_ANSWER)


def segment_at(position: int, span: tuple[int, int] | None) -> str:
    if span is None or position < span[0]:
        return CHAIN
    return ANSWER if position < span[1] else RESPONSE


def token_segments(pieces: Sequence[str]) -> list[str]:
    """The segment of each completion token, given the text each token decodes to (in
    order; their concatenation is the completion)."""
    span = answer_span("".join(pieces))
    segments: list[str] = []
    position = 0
    for piece in pieces:
        stripped = piece.rstrip()
        if stripped.strip():
            segments.append(segment_at(position + len(stripped) - 1, span))
        else:
            segments.append(segments[-1] if segments else CHAIN)
        position += len(piece)
    return segments


def token_weights(pieces: Sequence[str], weights: SegmentWeights) -> list[float]:
    """Per-token loss weight of a completion (see the module doc)."""
    return [weights.of(segment) for segment in token_segments(pieces)]


def example_weights(difficulties: Sequence[float], ability: float, delta: float) -> list[float]:
    """δ's weight of each example: ``1 + δ · (closeness − mean closeness)``, at least 0."""
    if not difficulties:
        return []
    closeness = [1.0 - abs(ability - d) for d in difficulties]
    mean = sum(closeness) / len(closeness)
    return [max(0.0, 1.0 + delta * (c - mean)) for c in closeness]
