"""A chat template for tokenizers that have none.

Pretrained (not instruction-tuned) models, and GGUF files that leave the template
out, load with ``tokenizer.chat_template`` unset, and transformers then refuses
``apply_chat_template``. Every request of ours is chat messages, so such a model gets
a template here, chosen by the turn markers its vocabulary has:

- ``<start_of_turn>`` / ``<end_of_turn>`` (Gemma): Gemma's turn format, the system
  text folded into the first user turn as Gemma's own template does; generation
  stops at ``<end_of_turn>`` as well as at EOS;
- anything else: plain ``System:`` / ``User:`` / ``Assistant:`` paragraphs, stopping
  at EOS.

A tokenizer that has a template keeps it.
"""

from __future__ import annotations

GEMMA_TURNS = ("<start_of_turn>", "<end_of_turn>")

GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% set system = messages[0]['content'] if messages and messages[0]['role'] == 'system' else '' %}"
    "{% set turns = messages[1:] if system else messages %}"
    "{% for m in turns %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{% if loop.first and system %}{{ system }}\n\n{% endif %}"
    "{{ m['content'] | trim }}<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

PLAIN_TEMPLATE = (
    "{% for m in messages %}"
    "{{ {'system': 'System', 'user': 'User', 'assistant': 'Assistant'}.get(m['role'], m['role']) }}: "
    "{{ m['content'] | trim }}\n\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant: {% endif %}"
)


def ensure_chat_template(tokenizer) -> frozenset[int]:
    """Give ``tokenizer`` a chat template if it has none (see the module docstring);
    returns the token ids that end an assistant turn under the template it now has,
    besides EOS (empty where EOS alone ends it)."""
    vocab = tokenizer.get_vocab()
    gemma = all(marker in vocab for marker in GEMMA_TURNS)
    if tokenizer.chat_template is None:
        tokenizer.chat_template = GEMMA_TEMPLATE if gemma else PLAIN_TEMPLATE
    if gemma and "<end_of_turn>" in tokenizer.chat_template:
        return frozenset({vocab["<end_of_turn>"]})
    return frozenset()
