"""The MTL-MoE trainer end to end on a tiny fashion-boxes: run directory, box metrics,
gates, transfer with frozen experts, resume."""


import numpy as np
import pytest
import torch
from conftest import tiny_mtl_recipe

from vipnb.engine import train
from vipnb.engine.checkpoint import load_checkpoint
from vipnb.errors import VipnbError


def test_run_directory_metrics_and_gates(boxes_root, tmp_path):
    run = train(tiny_mtl_recipe(boxes_root), runs_root=tmp_path, progress=False)
    metrics = run.metrics()
    assert [m["epoch"] for m in metrics] == [0, 1]
    assert {"test_top1", "test_mean_iou", "test_iou50", "test_mean_ciou", "ce", "box",
            "aux"} <= set(metrics[0])
    assert run.logits("test").logits.shape == (30, 10)
    with np.load(run.path / "boxes_gates_test.npz") as saved:
        assert saved["boxes"].shape == saved["target_boxes"].shape == (30, 4)
        for task in ("classify", "box"):
            assert ((saved[f"gates_{task}"] > 0).sum(1) == 2).all()
    assert run.summary()["test_mean_iou"] == pytest.approx(metrics[-1]["test_mean_iou"])


def test_single_task_and_class_subset(boxes_root, tmp_path):
    run = train(tiny_mtl_recipe(boxes_root, box_task=False, class_subset=[7, 8, 9]),
                runs_root=tmp_path, progress=False)
    assert run.logits("test").classes == ["008.sneaker", "009.bag", "010.ankle_boot"]
    assert "test_mean_iou" not in run.metrics()[0]
    with pytest.raises(VipnbError, match="class_subset"):
        train(tiny_mtl_recipe(boxes_root, class_subset=[12]), runs_root=tmp_path, progress=False)


def test_transfer_with_frozen_experts_keeps_them(boxes_root, tmp_path, monkeypatch):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    base = tiny_mtl_recipe(boxes_root, name="base", box_task=False,
                           class_subset=[0, 1, 2, 3, 4, 5, 6])
    base_run = train(base, runs_root=tmp_path / "runs", progress=False)
    monkeypatch.setattr("vipnb.engine.recipe.Recipe.dependency", lambda self, key: base)
    frozen = tiny_mtl_recipe(boxes_root, name="frozen", box_task=False, class_subset=[7, 8, 9],
                             init_from="base", freeze="experts")
    run = train(frozen, runs_root=tmp_path / "runs", progress=False)
    before = load_checkpoint(base_run.checkpoint_file)["model"]
    after = load_checkpoint(run.checkpoint_file)["model"]
    experts = [k for k in before if k.startswith(("moe.experts.", "condense."))]
    assert experts and all(torch.equal(before[k], after[k]) for k in experts)
    assert not torch.equal(before["backbone.conv1.weight"], after["backbone.conv1.weight"])
    assert after["towers.classify.3.weight"].shape[0] == 3


def test_freeze_needs_a_trained_model(boxes_root, tmp_path):
    with pytest.raises(VipnbError, match="init_from"):
        train(tiny_mtl_recipe(boxes_root, freeze="experts"), runs_root=tmp_path, progress=False)


def test_resume_equals_uninterrupted(boxes_root, tmp_path, killed_and_resumed):
    recipe = tiny_mtl_recipe(boxes_root, epochs=3)
    whole, resumed = killed_and_resumed(recipe, tmp_path, kill_at=2)
    assert [m["train_loss"] for m in resumed.metrics()] == [m["train_loss"]
                                                           for m in whole.metrics()]
