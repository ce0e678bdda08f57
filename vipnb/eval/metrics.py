"""Classification metrics computed from saved logits: top-k, confusion, per-class, hard classes.

Everything takes numpy arrays (torch tensors are converted) and returns numpy arrays or plain
Python numbers, so a notebook can score `logits_val.npz` without a model or a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vipnb.errors import VipnbError


def _as_numpy(values: Any) -> np.ndarray:
    """A numpy view of an array-like; torch tensors are detached and moved to the CPU."""
    if hasattr(values, "detach"):
        tensor = values.detach().cpu()
        # numpy has no bfloat16, so half-precision logits are widened first.
        if tensor.is_floating_point():
            tensor = tensor.float()
        return tensor.numpy()
    return np.asarray(values)


def _class_indices(values: Any) -> np.ndarray:
    """Class indices (predicted or true labels) as a flat int64 array."""
    return _as_numpy(values).astype(np.int64).reshape(-1)


def _scores_and_labels(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = _as_numpy(scores), _class_indices(labels)
    if scores.ndim != 2:
        raise VipnbError(
            f"scores must be [num_samples, num_classes], got shape {scores.shape}; "
            "pass logits or probabilities, not predicted indices."
        )
    if scores.shape[0] != labels.shape[0]:
        raise VipnbError(
            f"{scores.shape[0]} rows of scores but {labels.shape[0]} labels; "
            "they must come from the same split in the same order."
        )
    if labels.size == 0:
        raise VipnbError("no samples to score: scores and labels are empty.")
    return scores, labels


def topk(scores: Any, labels: Any, k: int) -> float:
    """Fraction of samples whose true label is among the k highest scores (logits or probs)."""
    scores, labels = _scores_and_labels(scores, labels)
    if not 1 <= k <= scores.shape[1]:
        raise VipnbError(f"k={k} must be between 1 and the number of classes ({scores.shape[1]}).")
    # argpartition finds the k largest without sorting all classes.
    best_k = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(best_k == labels[:, None], axis=1)))


def top1(logits_or_probs: Any, labels: Any) -> float:
    """Fraction of samples whose highest score is the true label, in [0, 1]."""
    scores, labels = _scores_and_labels(logits_or_probs, labels)
    return float(np.mean(scores.argmax(axis=1) == labels))


def _checked_indices(
    predictions: Any, labels: Any, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    predictions, labels = _class_indices(predictions), _class_indices(labels)
    if predictions.shape != labels.shape:
        raise VipnbError(
            f"{predictions.size} predictions but {labels.size} labels; "
            "they must come from the same split in the same order."
        )
    for name, indices in (("predictions", predictions), ("labels", labels)):
        if indices.size and (indices.min() < 0 or indices.max() >= num_classes):
            raise VipnbError(
                f"{name} hold class indices outside [0, {num_classes}); "
                "check num_classes against the dataset's class list."
            )
    return predictions, labels


def confusion_matrix(predictions: Any, labels: Any, num_classes: int) -> np.ndarray:
    """Counts `[C, C]`: row = true class, column = predicted class."""
    predictions, labels = _checked_indices(predictions, labels, num_classes)
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def per_class_accuracy(predictions: Any, labels: Any, num_classes: int) -> np.ndarray:
    """Accuracy of each true class `[C]`; NaN for a class with no samples (not 0: unknown)."""
    counts = confusion_matrix(predictions, labels, num_classes)
    samples = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(samples > 0, np.diag(counts) / samples, np.nan)


def label_changes(before: Any, after: Any, labels: Any) -> dict[str, int]:
    """What a step that relabels images did: how many labels it `changed`, how many of those
    it `fixed` (wrong before, right after) and how many it `broke` (right before, wrong after).
    The accuracy moves by (fixed − broke) / images."""
    before, after, labels = (_class_indices(a) for a in (before, after, labels))
    if not before.shape == after.shape == labels.shape:
        raise VipnbError(f"{before.size} labels before, {after.size} after and {labels.size} "
                         "true labels; pass predictions on the same images in the same order")
    changed = before != after
    return {"changed": int(changed.sum()),
            "fixed": int((changed & (after == labels)).sum()),
            "broke": int((changed & (before == labels)).sum())}


def hard_classes(
    per_class_acc: Any,
    class_names: Sequence[str] | None,
    threshold: float = 0.5,
    k_worst: int = 10,
) -> list[dict]:
    """The classes a model finds hard, worst first.

    The rule follows the fusion-coverage paper (§III.E "Result Coverage"): a class is hard when
    its per-class validation accuracy is below 0.5 (the paper found 136 such classes and trained
    extra experts for them). To always have something to show on small or strong runs, the k
    worst classes are added to that set.

    Returns one dict per class, sorted by accuracy ascending (ties by class index):
    `{"class_index", "class_name", "accuracy", "below_threshold", "rank"}`, rank starting at 1.
    Classes with no validation samples (NaN accuracy) are left out.
    """
    accuracy = _as_numpy(per_class_acc).astype(np.float64).reshape(-1)
    if class_names is None:
        class_names = [str(index) for index in range(accuracy.size)]
    if len(class_names) != accuracy.size:
        raise VipnbError(
            f"{len(class_names)} class names for {accuracy.size} per-class accuracies; "
            "pass the class list of the split the accuracies were measured on."
        )
    measured = np.flatnonzero(~np.isnan(accuracy))
    # lexsort's last key is primary: accuracy ascending, then class index.
    worst_first = measured[np.lexsort((measured, accuracy[measured]))]
    chosen = set(worst_first[: max(k_worst, 0)].tolist())
    chosen |= {int(index) for index in measured if accuracy[index] < threshold}
    ordered = [int(index) for index in worst_first if index in chosen]
    return [
        {
            "class_index": index,
            "class_name": class_names[index],
            "accuracy": float(accuracy[index]),
            "below_threshold": bool(accuracy[index] < threshold),
            "rank": rank,
        }
        for rank, index in enumerate(ordered, start=1)
    ]


def mean_std(values: Any) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof=1; 0.0 for a single value) and count, for seeds."""
    array = _as_numpy(values).astype(np.float64).reshape(-1)
    if array.size == 0:
        raise VipnbError("mean_std needs at least one value (one per seed); got none.")
    spread = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return float(array.mean()), spread, int(array.size)
