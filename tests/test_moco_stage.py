"""MoCo-v2 as a recipe stage whose backbone initialises a supervised run."""

from pathlib import Path

import torch

from tests.conftest import write_recipe_file
from tests.run_checks import assert_summary_and_logits_are_the_models
from vipnb.engine import load_recipe, train
from vipnb.engine.build import build_model, initialise_from, trained_weights


def test_moco_stage_then_supervised_run_from_its_backbone(tiny_tree: Path, tmp_path: Path):
    moco = write_recipe_file(tmp_path, "moco", tiny_tree, stage="moco", epochs=2,
                             moco_queue=12, lr=0.03)
    supervised = write_recipe_file(tmp_path, "supervised", tiny_tree, init_from=str(moco))
    runs = tmp_path / "runs"
    run = train(load_recipe(supervised, "cpu"), runs_root=runs, progress=False)
    moco_run = train(load_recipe(moco, "cpu"), runs_root=runs, progress=False)  # reused
    summary = moco_run.summary()
    assert 0.0 <= summary["val_knn_top1"] <= 1.0 and len(moco_run.metrics()) == 2
    backbone = trained_weights(moco_run)
    assert "fc.weight" not in backbone and "conv1.0.weight" in backbone
    model = build_model(load_recipe(supervised, "cpu"), num_classes=3)
    initialise_from(model, moco_run)
    assert torch.equal(model.state_dict()["conv1.0.weight"], backbone["conv1.0.weight"])
    assert_summary_and_logits_are_the_models(run)
