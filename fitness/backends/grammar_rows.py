"""Grammar-constrained rows for the hf decoder, enforced with llguidance.

A request with a ``grammar`` (Lark text from :func:`fitness.constrain.format_grammar`)
gets a :class:`RowGrammar`: before each token is picked, the logits of tokens the
grammar forbids are set to -inf; after, the token is fed to the matcher. Greedy rows
then take the best allowed token and sampled rows sample among allowed ones, from
their own generator as before. A row whose grammar is complete stops.

llguidance (PyPI ``llguidance``) computes the masks; it is imported on first use so
that runs without constrained requests never need it. :func:`available` says whether
it is installed; :class:`GrammarCompiler` raises InputError naming the package if not.
"""

from __future__ import annotations

import functools

from genomes.errors import InputError

MISSING = "constrained decoding needs llguidance (pip install llguidance)"


@functools.cache
def available() -> bool:
    try:
        import llguidance  # noqa: F401
    except ImportError:
        return False
    return True


class GrammarCompiler:
    """Makes row matchers for one tokenizer and vocabulary size. Building
    llguidance's tokenizer view takes about 0.4 s, so one compiler serves a backend."""

    def __init__(self, hf_tokenizer, vocab_size: int, stop_ids: frozenset[int]) -> None:
        if not available():
            raise InputError(MISSING)
        import llguidance
        import llguidance.hf
        import torch

        self.llguidance, self.torch = llguidance, torch
        self.vocab_size = vocab_size
        self.tokenizer = llguidance.hf.from_tokenizer(hf_tokenizer, n_vocab=vocab_size, eos_token=sorted(stop_ids))
        self.words = (vocab_size + 31) // 32
        self.shifts = torch.arange(32, dtype=torch.int32)
        self._grammars: dict[str, str] = {}  # Lark text -> compiled grammar

    def matcher(self, lark: str) -> RowGrammar:
        if lark not in self._grammars:
            grammar = self.llguidance.LLMatcher.grammar_from_lark(lark)
            failed, messages = self.llguidance.LLMatcher.validate_grammar_with_warnings(grammar, self.tokenizer)
            if failed:
                raise InputError(f"invalid constraint grammar: {'; '.join(messages)}")
            if len(self._grammars) > 256:
                self._grammars.pop(next(iter(self._grammars)))
            self._grammars[lark] = grammar
        return RowGrammar(self.llguidance.LLMatcher(self.tokenizer, self._grammars[lark]))

    def mask_rows(self, logits, rows: list[tuple[int, RowGrammar]]) -> None:
        """Set forbidden logits of the given (batch row, grammar) pairs to -inf, in
        place. A matcher in an error state (it cannot happen with tokens it allowed,
        but a grammar could be exhausted) leaves its row unmasked."""
        torch = self.torch
        live = [(b, g) for b, g in rows if not g.matcher.is_error()]
        if not live:
            return
        bits = torch.zeros((len(live), self.words), dtype=torch.int32)
        for i, (_, grammar) in enumerate(live):
            row = bits[i]
            grammar.matcher.unsafe_compute_mask_ptr(row.data_ptr(), row.numel() * row.element_size())
        allowed = ((bits.unsqueeze(-1) >> self.shifts) & 1).view(len(live), -1)[:, : logits.shape[1]].bool()
        index = torch.tensor([b for b, _ in live], dtype=torch.long)
        logits[index] = logits[index].masked_fill(~allowed, float("-inf"))


class RowGrammar:
    """The grammar state of one row."""

    def __init__(self, matcher) -> None:
        self.matcher = matcher

    def advance(self, token: int) -> bool:
        """Feed the picked token; True when the grammar admits nothing more (stop)."""
        if not self.matcher.is_error():
            self.matcher.consume_token(token)
        return self.matcher.is_stopped() and not self.matcher.is_error()
