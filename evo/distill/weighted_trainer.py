"""TRL's DPOTrainer with the unified loss on the reasoning format's tokens.

Per pair, with per-token weights ``w`` (α chain, β answer block, γ response block;
:mod:`evo.distill.token_weights`) and the example weight ``e`` (δ, the frontier)::

    logπ_w(y)   = Σ_t w_t · log π(y_t | prompt, y_<t)            (the same for the reference)
    L_pref      = −log σ(b · [(logπ_w(chosen) − logπ_ref,w(chosen)) − (logπ_w(rejected) − logπ_ref,w(rejected))])
    L_sft       = −Σ_t w_t · log π(chosen_t) / Σ_t w_t           (per token, on the chosen side)
    loss        = mean over the batch of  e · (L_pref + s · L_sft)

``b`` is DPO's temperature (``TrainSettings.dpo_beta``) and ``s`` the SFT weight
(``TrainSettings.sft``). With α = β = γ = 1 and δ = 0 this is TRL's sigmoid DPO loss
plus a plain SFT term. The reference is the base model with the adapter switched off.
TRL still tokenizes the pairs (its chat template and truncation), shuffles, steps and
logs; only the collator (which adds the weights) and the loss are ours. The loss
computes the head's logits only from the batch's first weighted token on, and the
reference's weighted sum once per sequence (later epochs reuse it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evo.distill.token_weights import SegmentWeights, token_weights

EXAMPLE_WEIGHT = "example_weight"  # dataset column: δ's weight of the pair


def side_weights(examples: list[dict[str, Any]], tokenizer, segments: SegmentWeights, width: int):
    """Per-token weights of a collated batch, chosen rows then rejected rows (TRL's
    order), ``width`` columns; prompt and padding positions weigh 0."""
    import torch

    weights = torch.zeros((2 * len(examples), width), dtype=torch.float32)
    sides = [(e["prompt_ids"], e["chosen_ids"]) for e in examples] + [(e["prompt_ids"], e["rejected_ids"]) for e in examples]
    for row, (prompt, completion) in enumerate(sides):
        pieces = [tokenizer.decode([token]) for token in completion]
        for j, weight in enumerate(token_weights(pieces, segments)):
            if len(prompt) + j < width:
                weights[row, len(prompt) + j] = weight
    return weights


def unified_loss(policy_per_token, reference, weights, example, dpo_beta: float, sft: float):
    """The loss of the module doc from per-token log-probabilities of the batch
    (chosen rows then rejected rows, aligned with ``weights``); ``reference`` is the
    reference's per-token log-probabilities alike, or already their weighted sums (one
    per row). Returns the loss and its parts (preference, SFT, margin; batch means)
    for the log."""
    import torch.nn.functional as F

    policy = (policy_per_token * weights).sum(dim=1)
    if reference.dim() == 2:
        reference = (reference * weights).sum(dim=1)
    chosen, rejected = policy.chunk(2)
    ref_chosen, ref_rejected = reference.chunk(2)
    margin = (chosen - ref_chosen) - (rejected - ref_rejected)
    preference = -F.logsigmoid(dpo_beta * margin)
    chosen_weights = weights.chunk(2)[0]
    sft_loss = -(policy_per_token.chunk(2)[0] * chosen_weights).sum(dim=1) / chosen_weights.sum(dim=1).clamp(min=1e-6)
    loss = (example * (preference + sft * sft_loss)).mean()
    return loss, {"pref_loss": preference.mean().item(), "sft_loss": sft_loss.mean().item(),
                  "margin": margin.mean().item()}


def first_weighted_column(token_weights) -> int:
    """The first column of a batch where some token weighs (at least 1: a token is
    predicted from the one before it)."""
    columns = token_weights.any(dim=0).nonzero()
    return max(1, int(columns[0])) if len(columns) else 1


def row_key(input_ids, attention_mask, weights) -> bytes:
    """One sequence's identity for the reference cache: its tokens (prompt and
    completion) and the weights of its weighted ones, padding and the batch's width
    left out."""
    return (input_ids[attention_mask.bool()].cpu().numpy().tobytes() + b"|"
            + weights[weights != 0].cpu().numpy().tobytes())


def batch_loss(trainer, model, inputs, sft: float):
    """The unified loss of one collated batch for ``trainer`` (a WeightedDPOTrainer).
    The head and the log-softmax (49,152 columns) run only from the batch's first
    weighted token on, not over every prompt position; the reference's weighted sum
    of a sequence is computed once and kept in ``trainer.reference_sums``."""
    import torch

    first = first_weighted_column(inputs["token_weights"])
    targets = inputs["input_ids"][:, first:]
    weights = inputs["token_weights"][:, first:]

    def per_token_logps(run):
        logits = run(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False,
                     logits_to_keep=targets.shape[1] + 1).logits[:, :-1].float()
        return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)

    policy = per_token_logps(model)
    weights = weights.to(policy.device, torch.float32)
    keys = [row_key(ids, mask, row_weights)
            for ids, mask, row_weights in zip(inputs["input_ids"], inputs["attention_mask"], weights)]
    if any(key not in trainer.reference_sums for key in keys):
        with torch.no_grad(), trainer.accelerator.unwrap_model(model).disable_adapter():
            sums = (per_token_logps(model) * weights).sum(dim=1)
        trainer.reference_sums.update(zip(keys, sums.tolist()))
    reference = torch.tensor([trainer.reference_sums[key] for key in keys], device=policy.device)
    example = inputs[EXAMPLE_WEIGHT].to(policy.device)
    return unified_loss(policy, reference, weights, example, trainer.beta, sft)


def weighted_trainer(tokenizer, segments: SegmentWeights, sft: float, **trainer_kwargs):
    """A :class:`trl.DPOTrainer` whose collator weights tokens and whose loss is the one
    above (TRL and torch imported here, lazily)."""
    import torch
    from trl import DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    @dataclass
    class WeightedCollator(DataCollatorForPreference):
        tokenizer: Any = None
        segments: SegmentWeights = SegmentWeights()

        def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
            out = super().torch_call(examples)
            mask = out["completion_mask"]
            weights = side_weights(examples, self.tokenizer, self.segments, mask.shape[1])
            out["token_weights"] = weights * mask  # truncated positions weigh nothing
            out[EXAMPLE_WEIGHT] = torch.tensor([float(e.get(EXAMPLE_WEIGHT, 1.0)) for e in examples])
            return out

    class WeightedDPOTrainer(DPOTrainer):
        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if EXAMPLE_WEIGHT not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, EXAMPLE_WEIGHT]

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # the reference's weighted log-probability of each sequence seen (row_key → a
            # number): it never changes, so the epochs after the first skip its forward
            self.reference_sums: dict[bytes, float] = {}

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, parts = batch_loss(self, model, inputs, sft)
            for name, value in parts.items():
                self._metrics["train"][name].append(value)
            return (loss, {}) if return_outputs else loss

    collator = WeightedCollator(pad_token_id=tokenizer.pad_token_id, max_length=trainer_kwargs["args"].max_length,
                                truncation_mode=trainer_kwargs["args"].truncation_mode, tokenizer=tokenizer,
                                segments=segments)
    return WeightedDPOTrainer(data_collator=collator, processing_class=tokenizer, **trainer_kwargs)
