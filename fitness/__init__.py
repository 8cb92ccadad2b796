"""How a strategy is scored: tasks, the <cot> format parser, verifiers, backends and
the batched evaluator. Heavy libraries (torch, transformers, peft, vllm) are imported
only inside ``fitness.backends`` and only when a backend is built."""
