from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_recipe as one_epoch_recipe

from vipnb.engine import train
from vipnb.engine.checkpoint import load_checkpoint, save_atomic
from vipnb.errors import VipnbError


def tiny_recipe(tree: Path, **changes):
    return one_epoch_recipe(tree, **{"epochs": 3, "scale": [0.5, 1.0], **changes})


def test_run_directory_contents_and_reuse(tiny_tree: Path, tmp_path: Path):
    run = train(tiny_recipe(tiny_tree), runs_root=tmp_path / "runs", progress=False)
    assert run.finished and run.recipe == tiny_recipe(tiny_tree)
    metrics = run.metrics()
    assert [m["epoch"] for m in metrics] == [0, 1, 2]
    assert {"train_loss", "lr", "val_top1", "images_per_s", "wall_time_s"} <= set(metrics[0])
    test = run.logits("test")
    assert test.logits.shape == (9, 3) and test.ids[0] == "img_0.png"
    assert test.classes == ["a_cls", "b_cls", "c_cls"]
    assert run.summary()["test_top1"] == pytest.approx(test.top1)
    stamp = run.summary_file.stat().st_mtime_ns
    again = train(tiny_recipe(tiny_tree), runs_root=tmp_path / "runs", progress=False)
    assert again.path == run.path and run.summary_file.stat().st_mtime_ns == stamp


def test_resume_after_interruption_equals_uninterrupted(tiny_tree: Path, tmp_path: Path,
                                                        killed_and_resumed):
    recipe = tiny_recipe(tiny_tree, mixup_alpha=0.2, label_smoothing=0.1, ema_decay=0.9)
    # the killed run is unfinished with its checkpoint at epoch 2 (asserted by the fixture)
    whole, resumed = killed_and_resumed(recipe, tmp_path, kill_at=2)

    assert [m["epoch"] for m in resumed.metrics()] == [0, 1, 2]
    for key in ("train_loss", "val_top1", "val_loss"):
        assert [m[key] for m in resumed.metrics()] == [m[key] for m in whole.metrics()]
    np.testing.assert_array_equal(resumed.logits("val").logits, whole.logits("val").logits)


def test_non_finite_loss_names_epoch_and_step_and_keeps_checkpoint(tiny_tree: Path,
                                                                   tmp_path: Path, monkeypatch):
    recipe = tiny_recipe(tiny_tree)
    calls = {"n": 0}
    real_forward = torch.nn.Module.__call__

    def poisoned(self, *args, **kwargs):
        out = real_forward(self, *args, **kwargs)
        if self.training and type(self).__name__ == "ResNet":
            calls["n"] += 1
            if calls["n"] == 5:  # epoch 1 (3 steps per epoch), step 1
                return out * float("nan")
        return out

    monkeypatch.setattr(torch.nn.Module, "__call__", poisoned)
    with pytest.raises(VipnbError, match=r"non-finite loss.*epoch 1, step 1"):
        train(recipe, runs_root=tmp_path, progress=False)
    state = load_checkpoint(tmp_path / recipe.run_name / "checkpoint.pt")
    assert state["next_epoch"] == 1


def test_failed_save_leaves_previous_checkpoint_loadable(tmp_path: Path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_atomic({"epoch": 1, "weights": torch.ones(3)}, path)

    def disk_full(state, stream):
        stream.write(b"half a checkpoint")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="disk full"):
        save_atomic({"epoch": 2, "weights": torch.zeros(3)}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert list(tmp_path.iterdir()) == [path]


def test_state_that_could_not_be_loaded_back_is_not_saved(tmp_path: Path):
    with pytest.raises(TypeError, match=r"state\['lr'\] is a numpy.float64"):
        save_atomic({"lr": np.float64(0.1)}, tmp_path / "checkpoint.pt")
    assert not list(tmp_path.iterdir())


def test_unreadable_checkpoint_says_what_to_do(tmp_path: Path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"garbage")
    with pytest.raises(VipnbError, match="delete it to train this run from the start"):
        load_checkpoint(path)


def test_streaming_path_matches_memory_path(tiny_tree: Path, tmp_path: Path):
    """The DataLoader path decodes the same pixels as the cache, so the runs agree."""
    memory = train(tiny_recipe(tiny_tree, epochs=1), runs_root=tmp_path / "m", progress=False)
    stream = train(tiny_recipe(tiny_tree, epochs=1, data_cache="stream"),
                   runs_root=tmp_path / "s", progress=False)
    np.testing.assert_allclose(stream.logits("val").logits, memory.logits("val").logits,
                               rtol=1e-5, atol=1e-5)
    assert stream.logits("test").ids == memory.logits("test").ids


def test_val_every_validates_every_k_epochs_and_the_last(tiny_tree: Path, tmp_path: Path):
    every = train(tiny_recipe(tiny_tree), runs_root=tmp_path / "a", progress=False)
    sparse = train(tiny_recipe(tiny_tree, val_every=2, epochs=3), runs_root=tmp_path / "b",
                   progress=False)
    assert [m["val_top1"] is not None for m in sparse.metrics()] == [False, True, True]
    # Validating less changes nothing else: the same weights, the same final scores.
    assert sparse.metrics()[-1]["val_top1"] == every.metrics()[-1]["val_top1"]
    np.testing.assert_array_equal(sparse.logits("val").logits, every.logits("val").logits)
    np.testing.assert_array_equal(sparse.logits("test").logits, every.logits("test").logits)


def test_test_limit_scores_the_first_test_images_of_each_class(tiny_tree: Path, tmp_path: Path):
    run = train(tiny_recipe(tiny_tree, test_limit=6, epochs=1), runs_root=tmp_path,
                progress=False)
    test = run.logits("test")
    assert len(test.labels) == 6 and np.bincount(test.labels).tolist() == [2, 2, 2]
    assert len(run.logits("val").labels) == 18  # val untouched
