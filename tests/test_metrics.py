"""Metrics from saved logits: top-k, confusion matrix, per-class accuracy, hard classes, spread."""

import math

import numpy as np
import pytest
import torch

from vipnb.errors import VipnbError
from vipnb.eval.metrics import (
    confusion_matrix,
    hard_classes,
    label_changes,
    mean_std,
    per_class_accuracy,
    top1,
    topk,
)

# Four samples, three classes; argmax = [0, 2, 1, 2] against labels [0, 1, 1, 0].
LOGITS = np.array(
    [
        [3.0, 1.0, 0.0],
        [0.0, 2.0, 3.0],
        [0.5, 2.0, 1.0],
        [1.0, 0.0, 4.0],
    ]
)
LABELS = np.array([0, 1, 1, 0])


def test_top1_and_topk_match_hand_counts():
    assert top1(LOGITS, LABELS) == 0.5
    # Second-best classes are [1, 1, 2, 0], so top-2 recovers samples 1 and 3 as well.
    assert topk(LOGITS, LABELS, k=2) == 1.0
    assert topk(LOGITS, LABELS, k=1) == top1(LOGITS, LABELS)


def test_metrics_accept_torch_tensors():
    logits = torch.tensor(LOGITS, dtype=torch.bfloat16)
    assert top1(logits, torch.tensor(LABELS)) == 0.5


def test_score_shape_errors_are_clear():
    with pytest.raises(VipnbError, match="4 rows of scores but 3 labels"):
        top1(LOGITS, LABELS[:3])
    with pytest.raises(VipnbError, match="k=4"):
        topk(LOGITS, LABELS, k=4)


def test_confusion_matrix_rows_are_true_classes():
    predictions = LOGITS.argmax(axis=1)
    expected = np.array(
        [
            [1, 0, 1],  # true 0: once right, once predicted 2
            [0, 1, 1],  # true 1: once right, once predicted 2
            [0, 0, 0],  # true 2: no samples
        ]
    )
    np.testing.assert_array_equal(confusion_matrix(predictions, LABELS, 3), expected)
    with pytest.raises(VipnbError, match="outside"):
        confusion_matrix(predictions, LABELS, 2)


def test_per_class_accuracy_is_nan_for_empty_classes():
    accuracy = per_class_accuracy(LOGITS.argmax(axis=1), LABELS, 3)
    np.testing.assert_allclose(accuracy[:2], [0.5, 0.5])
    assert math.isnan(accuracy[2])


def test_hard_classes_is_threshold_union_k_worst_sorted():
    accuracy = np.array([0.9, 0.2, 0.6, 0.4, np.nan, 0.4, 0.8])
    names = [f"class{i}" for i in range(7)]
    hard = hard_classes(accuracy, names, threshold=0.5, k_worst=4)
    # Below 0.5: 1, 3, 5. The 4 worst add class 2. NaN (no samples) is never listed;
    # the tie between 3 and 5 is broken by index.
    assert [row["class_index"] for row in hard] == [1, 3, 5, 2]
    assert [row["rank"] for row in hard] == [1, 2, 3, 4]
    assert [row["below_threshold"] for row in hard] == [True, True, True, False]
    assert hard[0] == {
        "class_index": 1,
        "class_name": "class1",
        "accuracy": 0.2,
        "below_threshold": True,
        "rank": 1,
    }
    # Every class under the threshold is kept even when k_worst is smaller.
    assert [row["class_index"] for row in hard_classes(accuracy, names, k_worst=1)] == [1, 3, 5]
    with pytest.raises(VipnbError, match="class names"):
        hard_classes(accuracy, names[:3])


def test_label_changes_counts_fixed_and_broken_labels():
    labels = np.array([0, 1, 2, 2, 1, 0])
    before = np.array([0, 1, 1, 0, 2, 0])
    after = np.array([1, 1, 2, 1, 2, 0])  # broke 0, kept 1, fixed 2, wrong→wrong 3, kept 4, 5
    moved = label_changes(before, after, labels)
    assert moved == {"changed": 3, "fixed": 1, "broke": 1}
    assert (moved["fixed"] - moved["broke"]) / labels.size == pytest.approx(
        (after == labels).mean() - (before == labels).mean())
    with pytest.raises(VipnbError, match="same images"):
        label_changes(before, after[:5], labels)


def test_mean_std_uses_sample_std():
    mean, std, n = mean_std([0.70, 0.72, 0.74])
    assert (round(mean, 10), round(std, 10), n) == (0.72, 0.02, 3)
    assert mean_std([0.5]) == (0.5, 0.0, 1)
    with pytest.raises(VipnbError):
        mean_std([])
