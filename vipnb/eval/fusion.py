"""Two-stage model fusion (fusion-coverage paper §III.D), from saved logits.

Stage 1 soft-votes the models that share a test size and a loss, weighting each by the softmax
of its validation score; stage 2 hard-votes the stage-1 results (the paper's nine).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from vipnb.errors import VipnbError
from vipnb.eval.ensemble import softmax, weighted_score_average


def score_weights(val_scores: Sequence[float], temperature: float = 1.0) -> np.ndarray:
    """Stage-1 weights, fusion-coverage paper §III.D: "use the scores of each single model as
    weights, and then perform softmax calculations on all the weights".

    Scores are validation accuracies as fractions in [0, 1], taken as the paper says, so close
    scores (0.66 vs 0.68) give nearly uniform weights. Scores are divided by `temperature`
    before the softmax; 1.0 is the paper, smaller values sharpen the weights.
    """
    scores = np.asarray(val_scores, dtype=np.float64).reshape(-1)
    if scores.size == 0:
        raise VipnbError("no validation scores: give one score per model")
    if np.any(~np.isfinite(scores)) or scores.min() < 0 or scores.max() > 1:
        raise VipnbError(f"validation scores {scores.tolist()} must be accuracies in [0, 1]; "
                         "divide percentages by 100")
    if not temperature > 0:
        raise VipnbError(f"temperature={temperature} must be positive (1.0 is the paper's)")
    return softmax(scores[None] / temperature)[0]


def soft_vote(logits_list: Sequence[np.ndarray], val_scores: Sequence[float],
              temperature: float = 1.0) -> np.ndarray:
    """Stage 1 (§III.D): class probabilities [N, C], the models' softmaxes averaged with
    `score_weights(val_scores, temperature)`."""
    return weighted_score_average(logits_list, score_weights(val_scores, temperature))


def hard_vote(predictions: np.ndarray | Sequence[np.ndarray], num_classes: int,
              tie_scores: np.ndarray | None = None) -> np.ndarray:
    """Majority vote over the models' predicted labels `[M, N]` → labels [N] (§III.D stage 2).

    The paper does not say how ties break. Here a tie goes to the tied class with the highest
    `tie_scores[n, c]` ([N, C], e.g. the summed stage-1 probabilities) when given, otherwise
    (and among equal tie scores) to the lowest class index.
    """
    if not isinstance(predictions, np.ndarray) and len({np.shape(p) for p in predictions}) > 1:
        raise VipnbError("the models predicted different image sets (label shapes "
                         f"{sorted({np.shape(p) for p in predictions})})")
    votes = np.asarray(predictions)
    if votes.ndim != 2 or votes.size == 0:
        raise VipnbError(f"predictions must be [models, images] labels, got shape {votes.shape}")
    votes = votes.astype(np.int64)
    if votes.min() < 0 or votes.max() >= num_classes:
        raise VipnbError(f"predicted labels outside [0, {num_classes}); check num_classes")
    images = votes.shape[1]
    counts = np.zeros((images, num_classes), dtype=np.int64)
    np.add.at(counts, (np.broadcast_to(np.arange(images), votes.shape), votes), 1)
    tied = counts == counts.max(1, keepdims=True)
    if tie_scores is None:
        return tied.argmax(1)  # first True = lowest tied class
    tie_scores = np.asarray(tie_scores, dtype=np.float64)
    if tie_scores.shape != counts.shape:
        raise VipnbError(f"tie_scores have shape {tie_scores.shape}; expected "
                         f"[images, classes] = {counts.shape}")
    return np.where(tied, tie_scores, -np.inf).argmax(1)


class TwoStageFusion(NamedTuple):
    stage1: dict[Hashable, np.ndarray]  # key → soft-voted probabilities [N, C]
    labels: np.ndarray  # stage-2 hard vote [N]


def two_stage_fusion(
    groups: Mapping[Hashable, tuple[Sequence[np.ndarray], Sequence[float]]],
    temperature: float = 1.0,
) -> TwoStageFusion:
    """The paper's two-stage fusion (§III.D). `groups` maps a key such as (test_size, loss) to
    (logits [N, C] of its models, their validation scores). Stage 1 soft-votes each group;
    stage 2 hard-votes the groups' argmax labels, ties going to the highest summed stage-1
    probability."""
    if not groups:
        raise VipnbError("no groups to fuse: give {key: (logits list, val scores)}")
    stage1 = {key: soft_vote(logits, scores, temperature)
              for key, (logits, scores) in groups.items()}
    shapes = {key: p.shape for key, p in stage1.items()}
    if len(set(shapes.values())) != 1:
        raise VipnbError(f"the groups scored different image sets (shapes {shapes})")
    probs = np.stack(list(stage1.values()))
    labels = hard_vote(probs.argmax(2), probs.shape[2], tie_scores=probs.sum(0))
    return TwoStageFusion(stage1, labels)
