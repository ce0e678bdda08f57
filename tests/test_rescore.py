"""Re-scoring a finished run under test-time views, cached in its run directory."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch._dynamo.eval_frame import OptimizedModule

from tests.conftest import write_recipe_file
from vipnb.engine import load_recipe, train
from vipnb.engine import rescore as rescore_module
from vipnb.engine.precision import use_bf16
from vipnb.engine.rescore import cxx_compiler_on_path, rescore, scoring_model
from vipnb.errors import VipnbError
from vipnb.study.seed_groups import SeedGroup


def test_ten_crops_at_a_larger_size_are_saved_and_read_back(tiny_tree: Path, tmp_path: Path):
    recipe = write_recipe_file(tmp_path, "r", tiny_tree, cache_size=20, input_size=16,
                               crop_pct=0.8)
    run = train(load_recipe(recipe, "cpu"), runs_root=tmp_path / "runs", progress=False)
    scored = rescore(run, "ten_crop", 20, limit=5)
    assert scored.logits.shape == (5, 3) and scored.ids == run.logits("test").ids[:5]
    saved = run.path / "logits_test_ten_crop_20px_first5_nhwc.npz"
    assert saved.exists()
    stamp = saved.stat().st_mtime_ns
    again = rescore(run, "ten_crop", 20, limit=5)
    assert saved.stat().st_mtime_ns == stamp and np.array_equal(again.logits, scored.logits)
    trained, rescored = SeedGroup("r", [run]).rescored_top1("ten_crop", 20, 5)
    assert rescored == [100 * scored.top1] and len(trained) == 1
    trained_all, rescored_all = SeedGroup("r", [run]).rescored_top1("ten_crop", 20, 0)
    assert trained_all == [100 * run.logits("test").top1]  # limit 0: every test image
    assert rescored_all == [100 * rescore(run, "ten_crop", 20).top1]
    with pytest.raises(VipnbError, match="below"):
        rescore(run, "ten_crop", 12)


def test_rescoring_runs_on_the_gpu_when_there_is_one(monkeypatch):
    from vipnb.engine.rescore import default_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_device() == torch.device("cpu")


# Where the CPU would emulate bf16, `amp: bf16` is refused (engine/precision.py).
NATIVE_CPU_BF16 = use_bf16("auto", torch.device("cpu"))


@pytest.mark.parametrize(("channels_last", "amp", "suffix"),
                         [(True, "none", "_nhwc"), (False, "none", ""),
                          pytest.param(True, "bf16", "_nhwc_bf16", marks=pytest.mark.skipif(
                              not NATIVE_CPU_BF16, reason="this CPU has no native bf16"))])
def test_the_centre_view_rescores_the_logits_training_wrote(tiny_tree: Path, tmp_path: Path,
                                                             channels_last: bool, amp: str,
                                                             suffix: str):
    # rescore computes as the trainer's evaluation: the recipe's memory format and autocast
    recipe = write_recipe_file(tmp_path, "r", tiny_tree, cache_size=16, input_size=16,
                               crop_pct=1.0, channels_last=channels_last, amp=amp)
    run = train(load_recipe(recipe, "cpu"), runs_root=tmp_path / "runs", progress=False)
    scored = rescore(run, "center", 16, device="cpu")  # TTA's scores: log of the mean softmax
    trained = torch.log_softmax(torch.from_numpy(run.logits("test").logits), dim=1)
    assert np.array_equal(scored.logits, trained.numpy())
    assert (run.path / f"logits_test_center_16px{suffix}.npz").exists()


@pytest.mark.skipif(not cxx_compiler_on_path(), reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_scoring_names_its_file_and_scores_as_the_eager_model(tiny_tree: Path,
                                                                       tmp_path: Path):
    recipe = load_recipe(write_recipe_file(tmp_path, "r", tiny_tree, cache_size=16,
                                           input_size=16, crop_pct=1.0,
                                           compile_scoring=True), "cpu")
    eager = load_recipe(write_recipe_file(tmp_path, "r", tiny_tree, cache_size=16,
                                          input_size=16, crop_pct=1.0), "cpu")
    assert recipe.run_name == eager.run_name  # it changes how re-scores compute, not the run
    run = train(recipe, runs_root=tmp_path / "runs", progress=False)
    scored = rescore(run, "center", 16, device="cpu")
    assert (run.path / "logits_test_center_16px_nhwc_compiled.npz").exists()
    trained = torch.log_softmax(torch.from_numpy(run.logits("test").logits), dim=1)
    np.testing.assert_allclose(scored.logits, trained.numpy(), atol=1e-4)
    assert isinstance(scoring_model(torch.nn.Linear(2, 2), recipe), OptimizedModule)


def test_without_a_cxx_compiler_scoring_stays_eager_and_says_so(tiny_tree: Path, tmp_path: Path,
                                                                 monkeypatch):
    recipe = load_recipe(write_recipe_file(tmp_path, "r", tiny_tree, cache_size=16,
                                           input_size=16, crop_pct=1.0,
                                           compile_scoring=True), "cpu")
    run = train(recipe, runs_root=tmp_path / "runs", progress=False)
    monkeypatch.setattr(rescore_module, "cxx_compiler_on_path", lambda: False)
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler"):
        rescore(run, "center", 16, device="cpu")
    assert (run.path / "logits_test_center_16px_nhwc.npz").exists()
