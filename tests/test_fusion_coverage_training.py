"""The fusion-coverage paper's settings, end to end through the trainer: its augmentation,
Xavier initialisation, robust losses, the DSB focal loss's feature store and the coverage
training set."""

from pathlib import Path

import pytest
import torch
from conftest import make_tree
from conftest import tiny_recipe as one_epoch_recipe

from vipnb.data.sources import load_run_data
from vipnb.engine import train
from vipnb.engine.build import build_model
from vipnb.engine.objective import Objective
from vipnb.engine.rescore import rescore
from vipnb.errors import VipnbError
from vipnb.study.fusion import fuse, tta_score_many, tta_scores

PAPER_AUGMENTATION = {"vflip": 0.5, "color_jitter": [0.5, 0.5, 0.5, 0.1],
                      "gaussian_noise": 20, "init": "xavier"}


def tiny_recipe(tree: Path, **changes):
    return one_epoch_recipe(tree, **{"epochs": 2, **changes})


@pytest.fixture(scope="module")
def soft_ce_losses(tmp_path_factory):
    """The training losses of the same recipe with the soft-target cross-entropy."""
    tree = make_tree(tmp_path_factory.mktemp("tree") / "tiny")
    run = train(tiny_recipe(tree, **PAPER_AUGMENTATION), runs_root=tmp_path_factory.mktemp("runs"),
                progress=False)
    return [m["train_loss"] for m in run.metrics()]


@pytest.mark.parametrize("loss", ["taylor_ce", "bi_tempered", "dsb_focal"])
def test_each_loss_trains_with_the_papers_augmentation(tiny_tree, tmp_path, loss,
                                                       soft_ce_losses):
    run = train(tiny_recipe(tiny_tree, loss=loss, **PAPER_AUGMENTATION),
                runs_root=tmp_path, progress=False)
    losses = [m["train_loss"] for m in run.metrics()]
    assert run.finished and all(torch.isfinite(torch.tensor(losses)))
    # The same images and initial weights: the named loss, not the default, was trained on.
    assert abs(losses[0] - soft_ce_losses[0]) > 1e-3


def test_photometric_augmentation_changes_what_the_model_sees(tiny_tree, tmp_path):
    plain = train(tiny_recipe(tiny_tree), runs_root=tmp_path, progress=False)
    augmented = train(tiny_recipe(tiny_tree, vflip=1.0), runs_root=tmp_path, progress=False)
    assert plain.metrics()[0]["train_loss"] != augmented.metrics()[0]["train_loss"]


def test_dsb_weights_follow_the_features_seen_and_resume(tiny_tree):
    recipe = tiny_recipe(tiny_tree, loss="dsb_focal", semantic_scale_store=4)
    objective = Objective(recipe, num_classes=3)
    assert torch.equal(objective.head_loss.class_weights, torch.ones(3))
    features = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    targets = torch.eye(3)[torch.tensor([0, 0, 1, 1, 2, 2])]
    # Class 0 gets nearly identical features: a small semantic scale, a large weight.
    features[1] = features[0] + 1e-3
    objective(torch.zeros(6, 3), targets, features)
    objective.start_epoch()
    weights = objective.head_loss.class_weights
    assert weights[0] > weights[1:].max()
    restored = Objective(recipe, num_classes=3)
    restored.load_state_dict(objective.state_dict())
    restored.start_epoch()
    assert torch.allclose(restored.head_loss.class_weights, weights)
    # A checkpoint written before the head-loss registry kept the store as `scale_store`.
    legacy = Objective(recipe, num_classes=3)
    legacy.load_state_dict({"scale_store": objective.state_dict()["head_loss"]})
    legacy.start_epoch()
    assert torch.allclose(legacy.head_loss.class_weights, weights)


def test_dsb_focal_needs_one_classifier(tiny_tree, tmp_path):
    with pytest.raises(VipnbError, match="experts: 1"):
        train(tiny_recipe(tiny_tree, loss="dsb_focal", experts=2), runs_root=tmp_path,
              progress=False)


def test_dsb_resume_equals_uninterrupted(tiny_tree, tmp_path, killed_and_resumed):
    recipe = tiny_recipe(tiny_tree, loss="dsb_focal", epochs=3)
    whole, resumed = killed_and_resumed(recipe, tmp_path, kill_at=2)
    assert [m["train_loss"] for m in resumed.metrics()] == [m["train_loss"]
                                                           for m in whole.metrics()]


def test_xavier_initialisation_and_models_without_drop_path(tiny_tree):
    recipe = tiny_recipe(tiny_tree, model="densenet121", init="xavier",
                         model_kwargs={"growth_rate": 4, "block_config": [1, 1]})
    model = build_model(recipe, 3)
    conv = model.features.conv0.weight
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(conv)
    bound = (6 / (fan_in + fan_out)) ** 0.5
    assert conv.abs().max() <= bound and conv.abs().max() > 0.8 * bound


def test_coverage_classes_build_the_resampled_training_set(tiny_tree):
    recipe = tiny_recipe(tiny_tree, coverage_classes=[2], coverage_per_hard=10,
                         coverage_per_other=2)
    data = load_run_data(recipe)
    assert data.train.classes == ["c_cls", "other"]
    assert data.train.labels.tolist().count(0) == 10 and data.train.labels.tolist().count(1) == 4
    assert data.val.labels.tolist().count(0) == 6 and data.val.labels.tolist().count(1) == 12


def test_coverage_classes_are_whole_numbers(tiny_tree):
    assert tiny_recipe(tiny_tree, coverage_classes="[1, 2]").coverage_classes == (1, 2)
    with pytest.raises(VipnbError, match="coverage_classes"):
        tiny_recipe(tiny_tree, coverage_classes=[1.5])


def test_tta_scores_at_a_test_size_feed_the_whole_image(tiny_tree, tmp_path):
    run = train(tiny_recipe(tiny_tree), runs_root=tmp_path, progress=False)
    scores = tta_scores(run, 20, test_limit=5)
    assert scores.val.logits.shape == (18, 3) and scores.test.logits.shape == (5, 3)
    assert (run.path / "logits_test_paper_tta_20px_crop20_first5_nhwc.npz").exists()
    ten_crop = rescore(run, "ten_crop", 20, limit=5)  # crops of the training size
    assert not torch.allclose(torch.from_numpy(ten_crop.logits),
                              torch.from_numpy(scores.test.logits))
    fusion = fuse({("tiny", 16): tta_scores(run, 16, 5), ("tiny", 20): scores},
                  {"tiny": "ce"})
    assert set(fusion.stage1_test) == {(16, "ce"), (20, "ce")}
    assert fusion.stage2_test.shape == (5,) and fusion.stage2_val.shape == (18,)


def test_tta_score_many_leaves_what_tta_scores_reads(tiny_tree, tmp_path):
    run = train(tiny_recipe(tiny_tree), runs_root=tmp_path, progress=False)
    tta_score_many([run], [16, 20], test_limit=5)
    saved = sorted(path.name for path in run.path.glob("logits_*paper_tta*"))
    assert saved == ["logits_test_paper_tta_16px_first5_nhwc.npz",
                     "logits_test_paper_tta_20px_crop20_first5_nhwc.npz",
                     "logits_val_paper_tta_16px_nhwc.npz", "logits_val_paper_tta_20px_crop20_nhwc.npz"]
