"""Recipe features through the trainer, on tiny one-epoch runs: each changes the run as it
should (or equals a run or computation made otherwise), so one that silently does nothing
fails. Unit-level checks of the same features: test_feature_effects.py."""

from pathlib import Path

import numpy as np
import torch
from conftest import tiny_recipe, write_recipe_file

from vipnb.data.augment import EvalTransform
from vipnb.data.sources import load_run_data
from vipnb.engine import load_recipe, train
from vipnb.engine.build import load_trained_model
from vipnb.engine.rundir import RunDir


def first_loss(run: RunDir) -> float:
    return run.metrics()[0]["train_loss"]


def test_resume_replays_the_draws_of_torchs_global_generator(tiny_tree: Path, tmp_path: Path,
                                                              killed_and_resumed):
    """Drop path draws from torch's global generator: only its reseed at every epoch makes
    the resumed run equal the uninterrupted one."""
    recipe = tiny_recipe(tiny_tree, epochs=2, drop_path_rate=0.5)
    whole, resumed = killed_and_resumed(recipe, tmp_path, kill_at=1)
    assert [m["train_loss"] for m in resumed.metrics()] == [m["train_loss"]
                                                            for m in whole.metrics()]
    np.testing.assert_array_equal(resumed.logits("val").logits, whole.logits("val").logits)


def test_a_teacher_changes_what_the_student_learns(tiny_tree: Path, tmp_path: Path):
    # The teacher is the student's recipe without the teacher: its run is the untaught
    # student, with the same initial weights, images and draws.
    teacher = write_recipe_file(tmp_path, "teacher", tiny_tree)
    student = write_recipe_file(tmp_path, "student", tiny_tree, teacher=str(teacher))
    runs = tmp_path / "runs"
    taught = train(load_recipe(student, "cpu"), runs_root=runs, progress=False)
    untaught = RunDir(next(runs.glob("teacher-*")))
    # Only the targets differ (MoE eq. 2): the labels mixed with the teacher's softmax.
    assert abs(first_loss(taught) - first_loss(untaught)) > 1e-3


def test_mixup_off_epochs_train_as_without_mixup(tiny_tree: Path, tmp_path: Path):
    """With Mixup off for the last epoch, the first epoch mixes as a Mixup run does and the
    last trains on the plain images: its loss is the plain run's where both start alike."""
    mixup = {"mixup_alpha": 1.0, "cutmix_alpha": 1.0, "epochs": 2}
    mixed = train(tiny_recipe(tiny_tree, **mixup), runs_root=tmp_path, progress=False)
    switched_off = train(tiny_recipe(tiny_tree, **mixup, mixup_off_epochs=1),
                         runs_root=tmp_path, progress=False)
    plain = train(tiny_recipe(tiny_tree, epochs=2), runs_root=tmp_path, progress=False)
    losses = {name: [m["train_loss"] for m in run.metrics()]
              for name, run in (("mixed", mixed), ("off", switched_off), ("plain", plain))}
    assert losses["off"][0] == losses["mixed"][0]  # the same draws, mixed alike
    assert abs(losses["mixed"][0] - losses["plain"][0]) > 1e-3  # Mixup changes the loss
    # the last epoch: plain targets (a mixed batch's soft targets keep the loss higher)
    assert abs(losses["off"][1] - losses["mixed"][1]) > 1e-3


def test_flip_eval_views_average_the_probabilities_of_both_views(tiny_tree: Path,
                                                                 tmp_path: Path):
    recipe = tiny_recipe(tiny_tree, eval_views="flip")
    run = train(recipe, runs_root=tmp_path, progress=False)
    model = load_trained_model(recipe, run, 3, torch.device("cpu"))
    source = load_run_data(recipe).val
    transform = EvalTransform(recipe.input_size, recipe.crop_pct, tuple(recipe.mean),
                              tuple(recipe.std))
    with torch.inference_mode():
        images = transform(source.images)
        center = model(images).double().log_softmax(-1)
        mirrored = model(images.flip(-1)).double().log_softmax(-1)
    # log((p_center + p_mirror) / 2), in log space: confident views underflow otherwise.
    expected = (torch.logaddexp(center, mirrored) - np.log(2)).numpy()
    saved = run.logits("val").logits
    np.testing.assert_allclose(saved, expected, atol=1e-5, rtol=1e-5)
    assert np.abs(center.numpy() - expected).max() > 1e-3  # the mirror counted, by 100 atol


def test_coverage_classes_relabel_in_sorted_order(tiny_tree: Path):
    original = load_run_data(tiny_recipe(tiny_tree))
    covered = load_run_data(tiny_recipe(tiny_tree, coverage_classes=[2, 0],
                                        coverage_per_hard=8, coverage_per_other=2))
    assert covered.train.classes == ["a_cls", "c_cls", "other"]
    expected_val = {0: 0, 2: 1, 1: 2}  # a_cls, c_cls, then b_cls as "other"
    assert covered.val.labels.tolist() == [expected_val[int(c)] for c in original.val.labels]
    assert np.bincount(covered.train.labels.numpy()).tolist() == [8, 8, 2]
    # The resampled images of coverage class 1 are class c's (the brightest in the tree).
    brightness = covered.train.images.float().mean((1, 2, 3))
    labels = covered.train.labels
    assert brightness[labels == 1].min() > brightness[labels == 0].max()
