"""The LLM-rewrite mutation, in two pure halves: :func:`rewrite_messages` (what to
ask the model) and :func:`apply_rewrite` (the answer, sanitised, into the gene);
the engine sends the messages through the backend in one batch."""

from __future__ import annotations

import re
from dataclasses import replace

from genomes.chat_format import MARKERS
from genomes.operators.limits import (
    MAX_REWRITE_CHARS,
    REWRITABLE_SLOTS,
)
from genomes.strategy import PromptGene

# ---- LLM rewrite (pure halves) ---------------------------------------------------
_SLOT_PURPOSE = {
    "role": "who the assistant is",
    "approach": "how to approach the problem",
    "cautions": "a warning against a common mistake",
    "answer_format": "how the final answer must be written",
}
_LABEL = re.compile(r"^(?:(?:new|rewritten|improved|better)\s+)?(?:instruction|version|text|answer|sentence)\s*:\s*", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_QUOTES = "\"'`\u201c\u201d\u2018\u2019 \t"
# "<cot" without its ">" and the like: a model that starts writing a format marker
# is answering a question, not rewriting an instruction.
_MARKER_STEMS = tuple(m[:-1].lower() for m in MARKERS)


def rewrite_messages(text: str, slot: str) -> tuple[dict[str, str], ...]:
    """Chat messages asking the model to rewrite the instruction ``text`` that sits
    in prompt slot ``slot`` (one of REWRITABLE_SLOTS), or to write one if it is empty."""
    if slot not in _SLOT_PURPOSE:
        raise ValueError(f"rewrite_messages: unknown slot {slot!r} (rewritable: {', '.join(REWRITABLE_SLOTS)})")
    system = (
        "You improve instructions for a small language model that solves reasoning problems. "
        "Reply with the new instruction only: one or two short sentences, no quotes, no preamble."
    )
    purpose = _SLOT_PURPOSE[slot]
    if text.strip():
        user = f"Rewrite this instruction ({purpose}) so that it is clearer and more helpful. Keep it short.\n\nInstruction: {text.strip()}"
    else:
        user = f"Write one short instruction ({purpose})."
    return ({"role": "system", "content": system}, {"role": "user", "content": user})


def sanitise_rewrite(raw: object) -> str | None:
    """The instruction in a model's rewrite reply, or None to refuse it.

    Takes the first non-empty line (without a leading "Instruction:" label or
    surrounding quotes), keeps whole sentences up to MAX_REWRITE_CHARS (cutting at a
    word boundary if the first sentence alone is longer). Refuses non-text, empty or
    letterless output, and any output containing a format marker.
    """
    if not isinstance(raw, str):
        return None
    lowered = raw.lower()
    if any(m.lower() in lowered for m in MARKERS) or any(stem in lowered for stem in _MARKER_STEMS):
        return None
    lines = [line.strip() for line in raw.splitlines() if line.strip()]
    # "Here is a clearer version:" on a line of its own introduces the instruction.
    while len(lines) > 1 and lines[0].endswith(":"):
        lines.pop(0)
    text = _LABEL.sub("", lines[0].strip(_QUOTES)).strip(_QUOTES) if lines else ""
    text = " ".join(text.split())
    if len(text) > MAX_REWRITE_CHARS:
        kept = ""
        for sentence in _SENTENCE_END.split(text):
            longer = f"{kept} {sentence}".strip()
            if len(longer) > MAX_REWRITE_CHARS:
                break
            kept = longer
        text = kept or text[:MAX_REWRITE_CHARS].rsplit(" ", 1)[0].rstrip(",;: ")
    if not any(c.isalpha() for c in text):
        return None
    return text


def apply_rewrite(gene: PromptGene, slot: str, rewritten: str) -> PromptGene:
    """``gene`` with the sanitised rewrite in ``slot``; ``gene`` itself when the
    rewrite is refused (see :func:`sanitise_rewrite`)."""
    if slot not in _SLOT_PURPOSE:
        raise ValueError(f"apply_rewrite: unknown slot {slot!r} (rewritable: {', '.join(REWRITABLE_SLOTS)})")
    text = sanitise_rewrite(rewritten)
    return gene if text is None else replace(gene, **{slot: text})
