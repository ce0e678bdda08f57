"""VIPF §4.1's final models: "trained on both training set and most of validation set. Only a
little samples in validation set were reserved for validation."

The first ⌈fraction·n⌉ images of each validation class (in file order, the same for every
model and seed, so the kept validation images can still weigh an ensemble) move into training.
"""

from __future__ import annotations

import math

import numpy as np

from vipnb.data.layout import ImageList
from vipnb.errors import VipnbError


def move_val_into_train(train: ImageList, val: ImageList,
                        fraction: float) -> tuple[ImageList, ImageList]:
    """(train + the moved val images, the val images kept); every class keeps ≥ 1 val image."""
    if not 0.0 <= fraction < 1.0:
        raise VipnbError(f"val_into_train={fraction} must lie in [0, 1): the fraction of each "
                         "validation class moved into training; some must stay for validation")
    if train.classes != val.classes:
        raise VipnbError("val_into_train: the train and val folders hold different classes; "
                         "they must have the same class folders")
    moved = np.zeros(len(val), dtype=bool)
    for label in np.unique(val.labels):
        members = np.flatnonzero(val.labels == label)
        moved[members[: min(math.ceil(fraction * len(members)), len(members) - 1)]] = True
    moved_paths = [p for p, m in zip(val.paths, moved, strict=True) if m]
    kept_paths = [p for p, m in zip(val.paths, moved, strict=True) if not m]
    merged = ImageList(train.split, train.paths + moved_paths,
                       np.concatenate([train.labels, val.labels[moved]]), train.classes)
    return merged, ImageList(val.split, kept_paths, val.labels[~moved], val.classes)
