import numpy as np
import pytest

from vipnb.errors import VipnbError
from vipnb.eval.ensemble import softmax
from vipnb.eval.fusion import hard_vote, score_weights, soft_vote, two_stage_fusion


def test_score_weights_are_a_softmax_of_the_scores():
    assert score_weights([0.7, 0.7, 0.7]) == pytest.approx([1 / 3] * 3)
    weights = score_weights([0.66, 0.68])
    assert weights.sum() == pytest.approx(1.0)
    assert 0.5 < weights[1] < 0.51  # the paper's softmax of fractions: nearly uniform
    assert weights[1] == pytest.approx(1 / (1 + np.exp(-0.02)))
    sharp = score_weights([0.66, 0.68], temperature=0.01)
    assert sharp[1] == pytest.approx(1 / (1 + np.exp(-2.0)))


def test_score_weights_reject_percentages_and_bad_temperatures():
    with pytest.raises(VipnbError, match="divide percentages by 100"):
        score_weights([66.0, 68.0])
    with pytest.raises(VipnbError, match="temperature=0"):
        score_weights([0.6], temperature=0)


def test_soft_vote_with_one_dominant_weight_is_that_model():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 5, 4))
    fused = soft_vote([a, b], [1.0, 0.0], temperature=0.01)  # weights ≈ [1, e^-100]
    assert fused == pytest.approx(softmax(a), abs=1e-9)
    assert soft_vote([a, b], [0.5, 0.5]) == pytest.approx((softmax(a) + softmax(b)) / 2)


def test_hard_vote_majority_and_ties():
    predictions = np.array([[0, 2, 1],
                            [0, 1, 2],
                            [1, 2, 0]])
    # image 0: 0 wins 2-1; image 1: 2 wins 2-1; image 2: a three-way tie.
    assert hard_vote(predictions, 3).tolist() == [0, 2, 0]  # tie → lowest index
    tie_scores = np.array([[0.0, 0.9, 0.1], [0.9, 0.0, 0.1], [0.1, 0.2, 0.7]])
    # tie scores only decide ties: images 0 and 1 keep their majority
    assert hard_vote(predictions, 3, tie_scores).tolist() == [0, 2, 2]
    # a tie score for a class nobody voted for is ignored
    assert hard_vote(np.array([[0], [1]]), 3, np.array([[0.1, 0.2, 0.9]])).tolist() == [1]


def test_hard_vote_checks_its_inputs():
    with pytest.raises(VipnbError, match="outside"):
        hard_vote(np.array([[0, 3]]), 3)
    with pytest.raises(VipnbError, match="tie_scores"):
        hard_vote(np.array([[0, 1]]), 3, np.zeros((3, 3)))
    with pytest.raises(VipnbError, match="different image sets"):
        hard_vote([np.array([0, 1]), np.array([0])], 3)


def _logits(labels, num_classes=3, margin=2.0):
    z = np.zeros((len(labels), num_classes))
    z[np.arange(len(labels)), labels] = margin
    return z


def test_two_stage_fusion_on_planted_logits():
    groups = {
        # stage 1, equal scores: where the two models disagree, the larger margin decides
        (224, "ce"): ([_logits([0, 1, 2], margin=3.0), _logits([1, 1, 1])], [0.5, 0.5]),
        (320, "ce"): ([_logits([0, 1, 1])], [0.6]),
        (380, "ce"): ([_logits([2, 2, 1])], [0.6]),
    }
    fused = two_stage_fusion(groups)
    assert set(fused.stage1) == set(groups)
    assert fused.stage1[(224, "ce")].argmax(1).tolist() == [0, 1, 2]
    assert fused.stage1[(320, "ce")] == pytest.approx(softmax(_logits([0, 1, 1])))
    # votes per image: [0,0,2] → 0; [1,1,2] → 1; [2,1,1] → 1
    assert fused.labels.tolist() == [0, 1, 1]


def test_two_stage_fusion_breaks_ties_by_summed_probabilities():
    groups = {"a": ([_logits([0], margin=1.0)], [0.5]),
              "b": ([_logits([1], margin=4.0)], [0.5])}
    # one vote each: class 1's stage-1 probability is higher, so it wins (not the lowest index)
    assert two_stage_fusion(groups).labels.tolist() == [1]
    with pytest.raises(VipnbError, match="different image sets"):
        two_stage_fusion({"a": ([_logits([0])], [0.5]), "b": ([_logits([0, 1])], [0.5])})
