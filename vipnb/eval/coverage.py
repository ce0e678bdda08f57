"""Result coverage (fusion-coverage paper §III.E): retrain on the hard classes plus one "other"
class, then let that model's labels overwrite part of the fused result.

Two label spaces meet here: the original one (C classes) and the coverage one, where hard class
`hard[i]` (sorted) is label i and every other class is label `len(hard)`, "other".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vipnb.errors import VipnbError
from vipnb.eval.fusion import hard_vote
from vipnb.eval.metrics import hard_classes

OTHER = "other"
RULES = ("literal", "replace")


def coverage_classes(per_class_accuracy: np.ndarray, threshold: float = 0.5,
                     at_least: int = 0) -> list[int]:
    """Sorted indices of the classes whose accuracy is below `threshold` (§III.E: 136 classes
    below 0.5), topped up with the next-worst classes to `at_least` where fewer are below it.
    Classes with NaN accuracy (no validation images) are left out."""
    return sorted(c["class_index"]
                  for c in hard_classes(per_class_accuracy, None, threshold, k_worst=at_least))


def _hard_list(hard: Sequence[int], num_classes: int | None = None) -> list[int]:
    classes = sorted({int(c) for c in hard})
    if not classes:
        raise VipnbError("no hard classes to cover: raise the threshold of coverage_classes "
                         "or pick classes with metrics.hard_classes(k_worst=...)")
    if classes[0] < 0 or (num_classes is not None and classes[-1] >= num_classes):
        raise VipnbError(f"hard classes {classes} must lie in [0, {num_classes})")
    return classes


def coverage_class_names(classes: Sequence[str], hard: Sequence[int]) -> list[str]:
    """Names in coverage label space: the hard classes' names (sorted by index), then "other"."""
    return [classes[c] for c in _hard_list(hard, len(classes))] + [OTHER]


def coverage_training_index(labels: np.ndarray, hard: Sequence[int], per_hard: int = 500,
                            per_other: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The coverage training set of §III.E: "each category was resampled to 500 data. For the
    other categories, we randomly selected 5 samples for each category, and then fused all
    the newly selected samples to form a new category."

    Each hard class keeps all its images once and is topped up to `per_hard` by random draws
    with replacement; each other class present in `labels` gives `per_other` random images
    without replacement. A class with fewer images than asked raises a VipnbError (nothing is
    silently taken short). Returns (indices into `labels`, labels in coverage space),
    hard classes first in sorted order, then "other"; the same seed gives the same result.
    """
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    hard = _hard_list(hard)
    rng = np.random.default_rng(seed)
    chosen, new_labels = [], []
    for position, cls in enumerate(hard):
        members = np.flatnonzero(labels == cls)
        if not 0 < members.size <= per_hard:
            raise VipnbError(f"hard class {cls} has {members.size} training images; per_hard="
                             f"{per_hard} must be at least that and the class must have images")
        chosen += [members, rng.choice(members, per_hard - members.size, replace=True)]
        new_labels.append(np.full(per_hard, position))
    for cls in np.unique(labels[~np.isin(labels, hard)]):
        members = np.flatnonzero(labels == cls)
        if members.size < per_other:
            raise VipnbError(f"class {cls} has only {members.size} training images but "
                             f"per_other={per_other}; lower per_other to at most {members.size}")
        chosen.append(np.sort(rng.choice(members, per_other, replace=False)))
        new_labels.append(np.full(per_other, len(hard)))
    return np.concatenate(chosen).astype(np.int64), np.concatenate(new_labels).astype(np.int64)


def coverage_labels(labels: np.ndarray, hard: Sequence[int]) -> np.ndarray:
    """Original labels → coverage space: hard class → its position in sorted `hard`, any other
    class → `len(hard)` ("other"); unknown labels (-1, e.g. an unlabelled test set) stay -1."""
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    hard = _hard_list(hard)
    mapped = np.full(labels.shape, len(hard), dtype=np.int64)
    for position, cls in enumerate(hard):
        mapped[labels == cls] = position
    mapped[labels < 0] = -1
    return mapped


def cover(fused: np.ndarray, coverage_pred: np.ndarray, hard: Sequence[int],
          rule: str = "literal") -> np.ndarray:
    """Overwrite fused labels with a coverage model's (§III.E), back in the original space.

    The paper: "we covered it by taking out the labels of the other 864 classes from the
    previous fusion results and covering them with the newly trained results". Two readings:

    - "literal": labels the fusion gave to easy (non-hard) classes are taken out and kept; the
      images the fusion put in a hard class take the coverage model's label, except where it
      says "other", which keeps the fused label. This is the fix for the coverage model
      pulling easy-class images into the hard classes.
    - "replace": the coverage model wins wherever it names a hard class; elsewhere the fused
      label stays. This is the naive coverage whose side effect the paper describes.
    """
    if rule not in RULES:
        raise VipnbError(f"unknown coverage rule {rule!r}; use one of {', '.join(RULES)}")
    fused = np.asarray(fused).astype(np.int64).reshape(-1)
    pred = np.asarray(coverage_pred).astype(np.int64).reshape(-1)
    hard = _hard_list(hard)
    if fused.shape != pred.shape:
        raise VipnbError(f"{fused.size} fused labels but {pred.size} coverage predictions; "
                         "they must come from the same split in the same order")
    if pred.size and (pred.min() < 0 or pred.max() > len(hard)):
        raise VipnbError(f"coverage predictions must lie in [0, {len(hard)}] (the hard "
                         "classes, then 'other'); pass coverage-space labels")
    names_hard = pred < len(hard)
    back = np.asarray(hard, dtype=np.int64)[np.minimum(pred, len(hard) - 1)]
    take = names_hard & np.isin(fused, hard) if rule == "literal" else names_hard
    return np.where(take, back, fused)


def coverage_hard_vote(covered_labels_list: Sequence[np.ndarray], num_classes: int,
                       tie_scores: np.ndarray | None = None) -> np.ndarray:
    """The final step of §III.E: "we fused the 6 coverage results by hard voting" (ties as in
    fusion.hard_vote)."""
    if not len(covered_labels_list):
        raise VipnbError("no covered results to vote over")
    return hard_vote([np.asarray(c).reshape(-1) for c in covered_labels_list], num_classes,
                     tie_scores)
