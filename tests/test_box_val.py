"""Box data's validation split (`box_val_per_class`): held out of train, the same images for
every seed and every class subset, scored beside the test set, and the run's headline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_mtl_recipe

from vipnb.data.box_data import held_out_for_val, load_box_data
from vipnb.engine import train
from vipnb.engine.recipe import from_dict
from vipnb.errors import VipnbError


def _pixels(split) -> set[bytes]:
    return {image.numpy().tobytes() for image in split.images}


def test_val_is_held_out_of_train_per_class(boxes_root):
    whole = load_box_data(tiny_mtl_recipe(boxes_root))
    held = load_box_data(tiny_mtl_recipe(boxes_root, box_val_per_class=2))
    assert whole.val is None
    assert torch.bincount(held.val.labels, minlength=10).tolist() == [2] * 10
    assert torch.bincount(held.train.labels, minlength=10).tolist() == [4] * 10
    assert not _pixels(held.val) & _pixels(held.train)
    assert _pixels(held.val) | _pixels(held.train) == _pixels(whole.train)
    assert torch.equal(held.test.images, whole.test.images)


def test_every_seed_and_subset_hold_out_the_same_images(boxes_root):
    seed0 = load_box_data(tiny_mtl_recipe(boxes_root, box_val_per_class=2))
    seed3 = load_box_data(tiny_mtl_recipe(boxes_root, box_val_per_class=2, seed=3))
    assert torch.equal(seed0.val.images, seed3.val.images)
    subset = load_box_data(tiny_mtl_recipe(boxes_root, box_val_per_class=2, class_subset=[8, 9]))
    in_subset = (seed0.val.labels >= 8).numpy()
    assert _pixels(subset.val) == {image.numpy().tobytes()
                                   for image in seed0.val.images[in_subset]}
    assert subset.val.labels.tolist() == [0, 0, 1, 1]


def test_holding_out_a_whole_class_is_refused_by_name():
    labels = np.array([0, 0, 0, 1, 1])
    assert held_out_for_val(labels, 1, ["a", "b"], "r").sum() == 2
    with pytest.raises(VipnbError, match=r"recipe r: box_val_per_class=2 .* class b \(it has "
                                         r"2\); ask for fewer than 2"):
        held_out_for_val(labels, 2, ["a", "b"], "r")


def test_a_run_scores_val_beside_test_and_heads_with_val(boxes_root, tmp_path):
    recipe = tiny_mtl_recipe(boxes_root, box_val_per_class=2, val_every=2, epochs=3)
    run = train(recipe, runs_root=tmp_path, progress=False)
    metrics = run.metrics()
    scored = [m for m in metrics if m["val_top1"] is not None]
    assert [m["epoch"] for m in scored] == [1, 2]
    assert {"val_top1", "val_mean_iou", "test_top1", "test_mean_iou"} <= set(scored[0])
    assert run.logits("val").logits.shape == (20, 10)
    assert run.logits("test").logits.shape == (30, 10)
    last = run.logits("val")
    assert run.summary()["val_top1"] == pytest.approx(
        float((last.logits.argmax(1) == last.labels).mean()))
    assert recipe.run_name != tiny_mtl_recipe(boxes_root, val_every=2, epochs=3).run_name


def test_a_run_without_val_keeps_its_name_and_its_keys(boxes_root, tmp_path):
    recipe = tiny_mtl_recipe(boxes_root)
    assert recipe.run_name == from_dict({**recipe.to_dict(), "box_val_per_class": 0}).run_name
    run = train(recipe, runs_root=tmp_path, progress=False)
    assert not any(key.startswith("val_") for key in run.metrics()[-1])
