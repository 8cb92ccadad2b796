"""Tokenizers without a chat template (pretrained models, GGUF files that leave it
out) get one: Gemma's turns where the vocabulary has them, plain paragraphs
elsewhere; a tokenizer with a template keeps it."""

from __future__ import annotations

import copy

import pytest

from fitness.backends.chat_templates import ensure_chat_template

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2?"},
            {"role": "assistant", "content": "4"}, {"role": "user", "content": "3 + 3?"}]


@pytest.fixture(scope="module")
def bundled_tokenizer():
    from transformers import AutoTokenizer

    from fitness.backends.model_store import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("default"), local_files_only=True)


def test_a_tokenizer_with_a_template_keeps_it(bundled_tokenizer):
    tok = copy.deepcopy(bundled_tokenizer)
    before = tok.chat_template
    assert ensure_chat_template(tok) == frozenset() and tok.chat_template == before


def test_no_template_and_no_turn_markers_gives_plain_paragraphs(bundled_tokenizer):
    tok = copy.deepcopy(bundled_tokenizer)
    tok.chat_template = None
    assert ensure_chat_template(tok) == frozenset()
    text = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert text == "System: Be brief.\n\nUser: 2 + 2?\n\nAssistant: 4\n\nUser: 3 + 3?\n\nAssistant: "


def test_gemma_turn_markers_give_gemmas_format_and_a_stop_token(bundled_tokenizer):
    tok = copy.deepcopy(bundled_tokenizer)
    tok.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    tok.chat_template = None
    stops = ensure_chat_template(tok)
    assert stops == frozenset({tok.convert_tokens_to_ids("<end_of_turn>")})
    text = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert text == (f"{tok.bos_token}<start_of_turn>user\nBe brief.\n\n2 + 2?<end_of_turn>\n"
                    "<start_of_turn>model\n4<end_of_turn>\n<start_of_turn>user\n3 + 3?<end_of_turn>\n"
                    "<start_of_turn>model\n")
