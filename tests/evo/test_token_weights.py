"""The unified loss on tokens: which segment each token of a hand-built completion
belongs to, its weight, and δ's weight of whole examples."""

from __future__ import annotations

import pytest

from evo.distill.token_weights import (
    ANSWER,
    CHAIN,
    RESPONSE,
    SegmentWeights,
    answer_span,
    example_weights,
    token_segments,
    token_weights,
)

W = SegmentWeights(chain=1.0, answer=2.0, response=0.25)


def test_each_segment_gets_its_weight():
    pieces = ["<cot>", " 2 + 3", " = 5", " <begin_constrained_output>", " 5", " <end_constrained_output>",
              "\n<begin_response>", " It is 5.", " <end_response>", ""]
    assert token_segments(pieces) == [CHAIN, CHAIN, CHAIN, ANSWER, ANSWER, ANSWER, RESPONSE, RESPONSE, RESPONSE, RESPONSE]
    # a token belongs to the segment of its last non-space character: " <begin_constrained_output>" is answer
    assert token_weights(pieces, W) == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 0.25, 0.25, 0.25, 0.25]
    # " <" opens the marker that follows it; white space alone stays with the token before
    assert token_segments(["<cot> 1", " <", "begin_constrained_output> 1 <end_constrained_output>", "\n", "<begin_response>"]) \
        == [CHAIN, ANSWER, ANSWER, ANSWER, RESPONSE]


def test_markers_split_across_tokens_and_missing_blocks():
    pieces = ["<c", "ot>", " 4", "<begin_", "constrained_output>", "4", "<end_constrained", "_output>", "<|im_end|>"]
    assert token_segments(pieces) == [CHAIN, CHAIN, CHAIN, ANSWER, ANSWER, ANSWER, ANSWER, ANSWER, RESPONSE]
    assert token_segments(["<cot>", " no answer block", ""]) == [CHAIN] * 3
    assert token_segments(["<begin_constrained_output>", " 7", " and it never ends"]) == [ANSWER] * 3
    assert token_segments([]) == []
    assert answer_span("x <begin_constrained_output> 1 <end_constrained_output> y") == (2, 55)


def test_zero_weight_segments_and_loss_mapping():
    weights = SegmentWeights.from_loss({"alpha": 0.0, "beta": 1.0, "gamma": 0.5, "delta": 0.3})
    pieces = ["<cot> a", "<begin_constrained_output>1<end_constrained_output>", " <begin_response>r<end_response>"]
    assert token_weights(pieces, weights) == [0.0, 1.0, 0.5]


def test_delta_weighs_examples_by_closeness_to_the_frontier():
    assert example_weights([0.0, 0.5, 1.0], ability=0.5, delta=0.0) == [1.0, 1.0, 1.0]
    near, mid, far = example_weights([0.5, 0.25, 1.0], ability=0.5, delta=1.0)
    assert near > mid > far
    assert (near + mid + far) / 3 == pytest.approx(1.0)  # the mean weight stays 1
    assert min(example_weights([0.0] * 9 + [1.0], ability=1.0, delta=20.0)) == 0.0  # never negative
    assert example_weights([], 0.5, 1.0) == []


def test_unified_loss_on_hand_built_log_probabilities():
    """Two pairs (rows: chosen 0, chosen 1, rejected 0, rejected 1), three tokens each."""
    import math

    import torch

    from evo.distill.weighted_trainer import unified_loss

    policy = torch.log(torch.tensor([[0.5, 0.5, 0.5], [0.9, 0.9, 0.9], [0.1, 0.1, 0.1], [0.2, 0.2, 0.2]]))
    reference = torch.log(torch.full((4, 3), 0.25))
    weights = torch.tensor([[1.0, 2.0, 0.0]] * 4)  # the third token weighs nothing
    ones = torch.ones(2)
    loss, parts = unified_loss(policy, reference, weights, ones, dpo_beta=0.1, sft=0.0)
    margin0 = 3 * (math.log(0.5) - math.log(0.25)) - 3 * (math.log(0.1) - math.log(0.25))
    margin1 = 3 * (math.log(0.9) - math.log(0.25)) - 3 * (math.log(0.2) - math.log(0.25))
    expected = [math.log1p(math.exp(-0.1 * m)) for m in (margin0, margin1)]
    assert loss.item() == pytest.approx(sum(expected) / 2, rel=1e-5)
    assert parts["margin"] == pytest.approx((margin0 + margin1) / 2, rel=1e-5)
    # SFT: the weighted mean negative log-likelihood of the chosen rows
    _, parts = unified_loss(policy, reference, weights, ones, dpo_beta=0.1, sft=1.0)
    assert parts["sft_loss"] == pytest.approx(-(math.log(0.5) + math.log(0.9)) / 2, rel=1e-5)
    # δ's example weights scale each pair; a pair of weight 0 adds nothing
    only_first, _ = unified_loss(policy, reference, weights, torch.tensor([2.0, 0.0]), dpo_beta=0.1, sft=0.0)
    assert only_first.item() == pytest.approx(expected[0], rel=1e-5)
