"""Markers of the reasoning-chain format and its canonical rendering.

Lives in ``genomes`` because strategies render exemplars and chain templates in this
format; the parser that reads model output back is ``fitness.format``.
"""

from __future__ import annotations

from collections.abc import Sequence

COT = "<cot>"
BEGIN_ANSWER = "<begin_constrained_output>"
END_ANSWER = "<end_constrained_output>"
BEGIN_RESPONSE = "<begin_response>"
END_RESPONSE = "<end_response>"
MARKERS = (COT, BEGIN_ANSWER, END_ANSWER, BEGIN_RESPONSE, END_RESPONSE)


def format_completion(steps: Sequence[str], answer: str, response: str = "") -> str:
    """Render a completion in the canonical format (few-shot exemplars, DPO targets).

    ``fitness.format.parse_completion(format_completion(s, a, r))`` gives back the
    same steps, answer and response (whitespace-normalised).
    """
    chain = " ".join(f"{COT} {s.strip()}" for s in steps)
    text = f"{chain} {BEGIN_ANSWER} {answer.strip()} {END_ANSWER}".strip()
    if response:
        text += f"\n{BEGIN_RESPONSE} {response.strip()} {END_RESPONSE}"
    return text
