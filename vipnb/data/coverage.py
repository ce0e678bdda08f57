"""The data of a result-coverage run (fusion-coverage paper §III.E): the resampled training split
and val/test relabelled into the hard classes plus "other" (see vipnb.eval.coverage)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from vipnb.data.layout import ImageList
from vipnb.data.run_data import RunData, SplitSource
from vipnb.errors import VipnbError
from vipnb.eval.coverage import coverage_class_names, coverage_labels, coverage_training_index


def _unique_ids(ids: list[str]) -> list[str]:
    """The k-th repeat (k ≥ 1) of an id becomes "id#k", so nothing keyed by id collides."""
    seen: dict[str, int] = {}
    unique = []
    for name in ids:
        k = seen.get(name, 0)
        seen[name] = k + 1
        unique.append(f"{name}#{k}" if k else name)
    return unique


def _with_labels(source: SplitSource, index: np.ndarray | None, labels: np.ndarray,
                 classes: list[str]) -> SplitSource:
    """`source` restricted to `index` (None: all, in order) with new labels and classes."""
    ids = source.ids if index is None else _unique_ids([source.ids[i] for i in index])
    images, files = source.images, source.files
    if images is not None and index is not None:
        images = images[torch.from_numpy(index)]  # a copy: repeated images take memory again
    if files is not None:
        paths = files.paths if index is None else [files.paths[i] for i in index]
        files = ImageList(files.split, paths, labels, classes)
    return replace(source, labels=torch.from_numpy(labels), ids=ids, classes=classes,
                   skipped=list(source.skipped), images=images, files=files)


def coverage_split(source: SplitSource, indices: np.ndarray, new_labels: np.ndarray,
                   class_names: Sequence[str]) -> SplitSource:
    """The coverage training split (§III.E): image `indices[i]` of `source` with label
    `new_labels[i]`, as made by eval.coverage.coverage_training_index; `class_names` is the
    coverage class list (coverage_class_names: hard classes' names, then "other")."""
    index = np.asarray(indices).astype(np.int64).reshape(-1)
    labels = np.asarray(new_labels).astype(np.int64).reshape(-1)
    if index.shape != labels.shape:
        raise VipnbError(f"{index.size} indices but {labels.size} new labels; pass both "
                         "outputs of coverage_training_index")
    if index.size and (index.min() < 0 or index.max() >= len(source)):
        raise VipnbError(f"indices outside the {len(source)} images of split {source.name!r}; "
                         "index the split the training labels came from")
    if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise VipnbError(f"new labels outside [0, {len(class_names)}): give one class name per "
                         "coverage label (coverage_class_names)")
    return _with_labels(source, index, labels, list(class_names))


def relabel_split(source: SplitSource, hard: Sequence[int]) -> SplitSource:
    """A val or test split in coverage label space (§III.E); the images are shared, not copied.
    Unknown labels (-1) stay -1."""
    labels = coverage_labels(source.labels.numpy(), hard)
    return _with_labels(source, None, labels, coverage_class_names(source.classes, hard))


def coverage_run_data(data: RunData, hard: Sequence[int], per_hard: int = 500,
                      per_other: int = 5, seed: int = 0) -> RunData:
    """The whole coverage run's data (§III.E): training resampled to `per_hard` images per hard
    class plus `per_other` per other class as "other"; val and test relabelled."""
    names = coverage_class_names(data.classes, hard)
    index, labels = coverage_training_index(data.train.labels.numpy(), hard, per_hard,
                                            per_other, seed)
    return RunData(coverage_split(data.train, index, labels, names),
                   relabel_split(data.val, hard), relabel_split(data.test, hard), data.root)
