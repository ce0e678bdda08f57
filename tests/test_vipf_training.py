"""VIPF's training pieces through the trainer: eq. 3's weighted center and tree terms, the
hierarchy induced from another run, dual pooling, train + most of val, DSK-net under DDP."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tree, write_recipe_file
from conftest import tiny_recipe as one_epoch_recipe
from run_checks import assert_summary_and_logits_are_the_models

from vipnb.data.layout import ImageList, scan_split
from vipnb.data.sources import load_run_data
from vipnb.data.val_into_train import move_val_into_train
from vipnb.engine import train
from vipnb.engine.build import build_model
from vipnb.engine.checkpoint import load_checkpoint
from vipnb.engine.objective import Objective
from vipnb.engine.rundir import RunDir
from vipnb.errors import VipnbError
from vipnb.losses import Hierarchy, soft_cross_entropy, tree_supervision_loss


def tiny_recipe(tree: Path, **changes):
    return one_epoch_recipe(tree, **{"epochs": 2, **changes})

NARROW_DSK = {"channels": [8, 8, 16, 16], "stem_width": 8, "cardinality": 2,
              "base_width": 8, "layers": [1, 1, 1, 1]}


def centres_of(run: RunDir) -> torch.Tensor:
    """The center loss's class centres in a run's last checkpoint."""
    return load_checkpoint(run.checkpoint_file)["objective"]["center_loss"]["centers"]


def test_eq3_weighs_the_head_center_and_tree_terms(tiny_tree):
    hierarchy = Hierarchy.from_nested([[0, 1], 2])
    recipe = tiny_recipe(tiny_tree, loss_weight=2.0, center_loss_weight=0.5,
                         tree_loss_weight=0.25)
    objective = Objective(recipe, num_classes=3, feature_dim=4, hierarchy=hierarchy)
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    features = torch.tensor([[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]])
    # The centres start at zero: the center term is the batch mean of ½‖x‖² = (2.5 + 4.5) / 2.
    expected = (2.0 * soft_cross_entropy(logits, targets) + 0.5 * 3.5
                + 0.25 * tree_supervision_loss(logits, targets, hierarchy))
    assert objective(logits, targets, features).item() == pytest.approx(expected.item())
    # The step moved the centres of classes 0 and 1 (each sample's argmax) towards their features.
    moved = objective.state_dict()["center_loss"]["centers"]
    assert torch.allclose(moved[0], 0.5 * features[0] / 2) and moved[1].abs().sum() > 0
    assert moved[2].abs().sum() == 0


def test_centres_resume_with_the_checkpoint(tiny_tree):
    recipe = tiny_recipe(tiny_tree, center_loss_weight=1.0)
    objective = Objective(recipe, num_classes=3, feature_dim=2)
    objective(torch.zeros(2, 3), torch.eye(3)[:2], torch.tensor([[1.0, 1.0], [2.0, 0.0]]))
    restored = Objective(recipe, num_classes=3, feature_dim=2)
    restored.load_state_dict(objective.state_dict())
    assert torch.equal(restored.center_loss.centers, objective.center_loss.centers)


def test_tree_loss_without_a_hierarchy_says_which_key_to_set(tiny_tree):
    with pytest.raises(VipnbError, match="hierarchy_from"):
        Objective(tiny_recipe(tiny_tree, tree_loss_weight=1.0), num_classes=3)


def test_center_and_tree_losses_train_from_an_induced_hierarchy(tiny_tree, tmp_path):
    source = write_recipe_file(tmp_path, "source", tiny_tree, model="resnet10t", epochs=1,
                               batch_size=6, cache_size=16, input_size=16)
    recipe = tiny_recipe(tiny_tree, loss="positive_class", center_loss_weight=0.01,
                         tree_loss_weight=1.0, hierarchy_from=str(source))
    run = train(recipe, runs_root=tmp_path / "runs", progress=False)
    assert run.finished
    assert all(np.isfinite(m["train_loss"]) for m in run.metrics())
    # The center loss was on: its centres moved from zero, for every class seen.
    assert centres_of(run).abs().sum(1).min() > 0
    # The source run trained first, and its run name is part of this run's hash.
    assert len(list((tmp_path / "runs").iterdir())) == 2
    digest = recipe.digest()
    write_recipe_file(tmp_path, "source", tiny_tree, model="resnet10t", epochs=2,
                      batch_size=6, cache_size=16, input_size=16)
    assert recipe.digest() != digest


def test_dual_pool_concatenates_average_and_max(tiny_tree):
    plain = build_model(tiny_recipe(tiny_tree, model="dsk_resnext50_32x4d",
                                    model_kwargs=NARROW_DSK), 3)
    dual = build_model(tiny_recipe(tiny_tree, model="dsk_resnext50_32x4d",
                                   model_kwargs=NARROW_DSK, global_pool="catavgmax"), 3)
    assert dual.get_classifier().in_features == 2 * plain.get_classifier().in_features
    assert dual(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_val_into_train_moves_the_first_images_of_each_val_class(tiny_tree):
    train_files, val_files = scan_split(tiny_tree, "train"), scan_split(tiny_tree, "val")
    merged, kept = move_val_into_train(train_files, val_files, 0.5)
    per_class = np.bincount(val_files.labels)
    assert len(merged) == len(train_files) + int(np.ceil(0.5 * per_class).sum())
    assert len(merged) + len(kept) == len(train_files) + len(val_files)
    assert set(merged.paths).isdisjoint(kept.paths)
    assert np.array_equal(np.unique(kept.labels), np.unique(val_files.labels))
    # Never the whole class: one image per class always stays for validation.
    _, kept_most = move_val_into_train(train_files, val_files, 0.99)
    assert np.array_equal(np.bincount(kept_most.labels), np.ones_like(per_class))
    data = load_run_data(tiny_recipe(tiny_tree, val_into_train=0.5))
    assert (len(data.train), len(data.val)) == (len(merged), len(kept))


def test_val_into_train_rejects_bad_fractions_and_mismatched_classes(tiny_tree):
    train_files, val_files = scan_split(tiny_tree, "train"), scan_split(tiny_tree, "val")
    with pytest.raises(VipnbError, match="val_into_train=1.0"):
        move_val_into_train(train_files, val_files, 1.0)
    other = ImageList("val", val_files.paths, val_files.labels, ["x", "y", "z"])
    with pytest.raises(VipnbError, match="different classes"):
        move_val_into_train(train_files, other, 0.5)


def test_dsk_net_trains_under_ddp_though_one_residual_function_rests(tmp_path):
    """Eq. 2 runs one of the two residual functions per step: DDP must be told that some
    parameters get no gradient, or its second step fails. The center loss's centres move by
    the global batch (an all-reduce)."""
    tree = make_tree(tmp_path / "tree", per_class=8, size=32)
    recipe = write_recipe_file(tmp_path, "ddp_dsk", tree, model="dsk_resnext50_32x4d",
                               model_kwargs=NARROW_DSK, epochs=2, batch_size=8, lr=0.05,
                               cache_size=32, input_size=32, center_loss_weight=0.01)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "vipnb.cli", "train", str(recipe), "--runs", str(tmp_path / "runs")],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-5000:]
    run = RunDir(next((tmp_path / "runs").iterdir()))
    assert centres_of(run).abs().sum(1).min() > 0
    assert_summary_and_logits_are_the_models(run)
