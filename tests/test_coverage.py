from pathlib import Path

import numpy as np
import pytest
import torch

from vipnb.data.coverage import coverage_run_data, coverage_split, relabel_split
from vipnb.data.layout import ImageList
from vipnb.data.sources import RunData, SplitSource
from vipnb.errors import VipnbError
from vipnb.eval.coverage import (
    cover,
    coverage_class_names,
    coverage_classes,
    coverage_hard_vote,
    coverage_labels,
    coverage_training_index,
)

# 5 classes, class c has 3 + c training images, interleaved
TRAIN_LABELS = np.array([c for c in range(5) for _ in range(3 + c)])[
    np.random.default_rng(1).permutation(sum(3 + c for c in range(5)))]


def test_coverage_classes_are_strictly_below_the_threshold():
    accuracy = np.array([0.9, 0.49, 0.5, np.nan, 0.1])
    assert coverage_classes(accuracy) == [1, 4]
    assert coverage_classes(accuracy, threshold=0.95) == [0, 1, 2, 4]


def test_coverage_classes_top_up_with_the_next_worst_to_at_least():
    accuracy = np.array([0.9, 0.49, 0.7, np.nan, 0.1])
    assert coverage_classes(accuracy, at_least=3) == [1, 2, 4]
    assert coverage_classes(accuracy, at_least=1) == [1, 4]  # already two below 0.5
    assert coverage_classes(accuracy, threshold=0.05, at_least=2) == [1, 4]
    assert coverage_classes(accuracy, at_least=9) == [0, 1, 2, 4]  # NaN never counts
    assert coverage_classes(np.array([0.6, 0.6, 0.1]), at_least=2) == [0, 2]  # ties: lower index


def test_training_index_counts_and_labels():
    index, labels = coverage_training_index(TRAIN_LABELS, [3, 1], per_hard=10, per_other=2,
                                            seed=0)
    assert index.shape == labels.shape
    original = TRAIN_LABELS[index]
    for position, cls in enumerate([1, 3]):  # sorted: class 1 → 0, class 3 → 1
        mine = labels == position
        assert mine.sum() == 10
        assert set(original[mine]) == {cls}
        assert set(index[mine]) == set(np.flatnonzero(TRAIN_LABELS == cls))  # all present
    other = labels == 2
    assert sorted(original[other].tolist()) == [0, 0, 2, 2, 4, 4]
    assert len(set(index[other])) == 6  # without replacement
    index, labels = coverage_training_index(TRAIN_LABELS, [1, 3], per_hard=10, per_other=3)
    other = index[labels == 2]
    # class 0 has exactly 3 images: without replacement, it gives all of them
    assert len(set(other)) == 9 and set(np.flatnonzero(TRAIN_LABELS == 0)) <= set(other)


def test_training_index_is_deterministic_given_the_seed():
    first = coverage_training_index(TRAIN_LABELS, [1, 3], 10, 2, seed=5)
    again = coverage_training_index(TRAIN_LABELS, [1, 3], 10, 2, seed=5)
    other = coverage_training_index(TRAIN_LABELS, [1, 3], 10, 2, seed=6)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])


def test_training_index_refuses_to_take_a_class_short():
    with pytest.raises(VipnbError, match="class 0 has only 3 training images but per_other=4"):
        coverage_training_index(TRAIN_LABELS, [1], per_hard=10, per_other=4)
    with pytest.raises(VipnbError, match="hard class 4 has 7 training images; per_hard=5"):
        coverage_training_index(TRAIN_LABELS, [4], per_hard=5, per_other=1)
    with pytest.raises(VipnbError, match="no hard classes"):
        coverage_training_index(TRAIN_LABELS, [], per_hard=5, per_other=1)


def test_coverage_labels_map_hard_classes_and_other():
    assert coverage_labels([0, 1, 2, 3, 4, -1], [3, 1]).tolist() == [2, 0, 2, 1, 2, -1]


def test_cover_rules_differ_on_easy_images_the_coverage_model_calls_hard():
    hard = [1, 3]  # coverage space: 1 → 0, 3 → 1, other → 2
    fused = np.array([0, 1, 1, 4, 3])
    coverage_pred = np.array([0, 2, 1, 2, 0])
    # image 0: easy fused label, coverage says class 1: literal keeps 0, replace takes 1
    # image 1: hard fused label, coverage says "other": both keep the fused 1
    # images 2 and 4: hard fused label, coverage names a hard class: both take it
    assert cover(fused, coverage_pred, hard, rule="literal").tolist() == [0, 1, 3, 4, 1]
    assert cover(fused, coverage_pred, hard, rule="replace").tolist() == [1, 1, 3, 4, 1]
    with pytest.raises(VipnbError, match="unknown coverage rule 'swap'"):
        cover(fused, coverage_pred, hard, rule="swap")
    with pytest.raises(VipnbError, match=r"\[0, 2\]"):
        cover(fused, coverage_pred + 1, hard)


def test_coverage_hard_vote():
    covered = [np.array([0, 1, 2]), np.array([0, 2, 1]), np.array([3, 2, 4])]
    assert coverage_hard_vote(covered, 5).tolist() == [0, 2, 1]


def _memory_source(labels, name="train"):
    n = len(labels)
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).clone()
    return SplitSource(name, torch.as_tensor(labels, dtype=torch.int64),
                       [f"img{i}.png" for i in range(n)], list("abcde"), [], images=images)


def test_coverage_split_in_memory():
    source = _memory_source(TRAIN_LABELS)
    index, labels = coverage_training_index(TRAIN_LABELS, [1, 3], per_hard=10, per_other=2)
    names = coverage_class_names(source.classes, [1, 3])
    split = coverage_split(source, index, labels, names)
    assert split.classes == ["b", "d", "other"]
    assert split.labels.tolist() == labels.tolist()
    assert split.images[:, 0, 0, 0].tolist() == index.tolist()  # image i holds the value i
    assert len(split) == len(index) == len(set(split.ids))
    assert {i.split("#")[0] for i in split.ids} == {source.ids[i] for i in index}
    with pytest.raises(VipnbError, match="new labels outside"):
        coverage_split(source, index, labels, names[:2])


def test_coverage_split_streaming_repeats_paths():
    paths = [Path(f"/data/train/x/img{i}.png") for i in range(len(TRAIN_LABELS))]
    files = ImageList("train", paths, TRAIN_LABELS.copy(), list("abcde"))
    source = SplitSource("train", torch.from_numpy(TRAIN_LABELS.copy()), files.ids,
                         files.classes, [], files=files, size=8)
    index, labels = coverage_training_index(TRAIN_LABELS, [1], per_hard=10, per_other=2)
    split = coverage_split(source, index, labels, ["b", "other"])
    assert split.files.paths == [paths[i] for i in index]
    assert split.files.labels.tolist() == labels.tolist() == split.labels.tolist()
    assert split.files.classes == ["b", "other"] and split.size == 8
    assert len(set(split.ids)) == len(split)


def test_coverage_run_data_relabels_val_and_test():
    val = _memory_source([0, 1, 2, 3, 4], "val")
    test = _memory_source([3, -1], "test")
    data = RunData(_memory_source(TRAIN_LABELS), val, test, Path("."))
    covered = coverage_run_data(data, [3, 1], per_hard=10, per_other=2, seed=0)
    assert covered.classes == ["b", "d", "other"]
    assert len(covered.train) == 2 * 10 + 3 * 2
    assert covered.val.labels.tolist() == [2, 0, 2, 1, 2]
    assert covered.test.labels.tolist() == [1, -1]
    assert covered.val.images is val.images and covered.val.ids == val.ids
    assert relabel_split(val, [1]).classes == ["b", "other"]
    with pytest.raises(VipnbError, match=r"\[0, 5\)"):
        coverage_run_data(data, [7], per_hard=10, per_other=2)


def test_literal_coverage_of_a_single_hard_class_changes_no_label():
    """Notebook 04 says so: an image fused into the one hard class keeps it whether the
    coverage model confirms it (0) or says "other" (1); every other image keeps its label."""
    fused = np.array([0, 2, 2, 1, 2, 3])
    coverage_pred = np.array([0, 0, 1, 1, 1, 0])
    np.testing.assert_array_equal(cover(fused, coverage_pred, [2], "literal"), fused)
    assert (cover(fused, coverage_pred, [2], "replace") != fused).any()
