"""One training loop for every task: MTL-MoE gets the loop's EMA, gradient accumulation and
exact resume as classification does, and a task refuses the recipe keys it cannot honour."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vipnb.engine
from tests.conftest import tiny_mtl_recipe, write_recipe_file
from vipnb.data.box_data import load_box_data
from vipnb.engine import train
from vipnb.engine.checkpoint import load_checkpoint
from vipnb.engine.recipe import from_dict
from vipnb.engine.rundir import RunDir
from vipnb.engine.trainer import Trainer
from vipnb.errors import VipnbError


def test_the_engine_defines_fit_and_the_epoch_step_once():
    engine = Path(vipnb.engine.__file__).parent
    defined = [f"{path.relative_to(engine)}:{node.name}" for path in engine.rglob("*.py")
               for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.FunctionDef) and node.name in ("fit", "_train_one_epoch")]
    assert sorted(defined) == ["trainer.py:_train_one_epoch", "trainer.py:fit"]


def test_mtl_evaluates_and_saves_its_ema(boxes_root, tmp_path):
    recipe = tiny_mtl_recipe(boxes_root, ema_decay=0.5)
    run = RunDir(tmp_path / recipe.run_name)
    run.write_recipe(recipe)
    data = load_box_data(recipe)
    trainer = Trainer(recipe, run, data, torch.device("cpu"), progress=False)
    trainer.fit()
    state = load_checkpoint(run.checkpoint_file)
    assert state["ema"] is not None
    assert not torch.equal(state["ema"]["module.backbone.conv1.weight"],
                           state["model"]["backbone.conv1.weight"])
    with_ema = trainer.task.predict(trainer.ema.module, data.test)["logits"].numpy()
    np.testing.assert_array_equal(run.logits("test").logits, with_ema)
    assert not np.array_equal(with_ema,
                              trainer.task.predict(trainer.model, data.test)["logits"].numpy())


def test_mtl_accumulates_micro_batches_into_one_step(boxes_root, tmp_path, monkeypatch):
    seen, steps = [], []
    # 60 images, batch 20: 3 steps of 2 × 10
    recipe = tiny_mtl_recipe(boxes_root, accum_steps=2, epochs=1)
    real_step = torch.optim.Adam.step

    def counted(self, *args, **kwargs):
        steps.append(1)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", counted)
    real_loss = Trainer._forward_loss
    monkeypatch.setattr(Trainer, "_forward_loss", lambda self, inputs, targets: (
        seen.append(len(inputs)), real_loss(self, inputs, targets))[1])
    train(recipe, runs_root=tmp_path, progress=False)
    assert seen == [10] * 6 and len(steps) == 3


def test_killed_mtl_run_with_ema_and_accumulation_resumes_exactly(boxes_root, tmp_path,
                                                                       killed_and_resumed):
    recipe = tiny_mtl_recipe(boxes_root, epochs=3, ema_decay=0.5, accum_steps=2)
    whole, resumed = killed_and_resumed(recipe, tmp_path, kill_at=2)
    for key in ("train_loss", "ce", "box", "aux", "test_top1", "test_mean_iou"):
        assert [m[key] for m in resumed.metrics()] == [m[key] for m in whole.metrics()]
    np.testing.assert_array_equal(resumed.logits("test").logits, whole.logits("test").logits)


@pytest.mark.parametrize("key, value", [("mixup_alpha", 0.2), ("random_erasing", 0.25),
                                        ("loss", "taylor_ce"), ("eval_views", "flip")])
def test_mtl_refuses_keys_it_cannot_honour(boxes_root, tmp_path, key, value):
    recipe = tiny_mtl_recipe(boxes_root, **{key: value})
    with pytest.raises(VipnbError, match=rf"tiny_mtl: `{key}: {value}` is not supported "
                                         r"here: .*Remove it from the recipe"):
        train(recipe, runs_root=tmp_path, progress=False)
    assert not (tmp_path / recipe.run_name).exists()  # refused before anything is written


def test_moco_refuses_a_teacher(tiny_tree, tmp_path):
    recipe = from_dict({"name": "moco", "dataset": "folder", "data_root": str(tiny_tree),
                        "model": "resnet10t", "stage": "moco", "center_loss_weight": 0.1})
    with pytest.raises(VipnbError, match=r"moco: `center_loss_weight: 0.1` is not supported"):
        train(recipe, runs_root=tmp_path, progress=False)


def test_the_mtl_results_version_renames_mtl_runs_only(boxes_root, tiny_tree, monkeypatch):
    import vipnb.engine.recipe as recipe_module

    mtl = tiny_mtl_recipe(boxes_root)
    classify = from_dict({"name": "tiny", "dataset": "folder", "data_root": str(tiny_tree)})
    names = mtl.run_name, classify.run_name
    monkeypatch.setattr(recipe_module, "MTL_RESULTS_VERSION",
                        recipe_module.MTL_RESULTS_VERSION + 1)
    assert mtl.run_name != names[0] and classify.run_name == names[1]


def test_mtl_trains_under_torchrun(boxes_root, tmp_path):
    """Two processes (gloo, CPU) share each MTL batch and rank 0 alone writes the run. Not
    compared with one process: the gates' noise comes from each process's own generator."""
    recipe = write_recipe_file(
        tmp_path, "ddp_mtl", boxes_root, dataset="fashion_boxes", architecture="mtl_moe",
        model="resnet18", model_kwargs={"channels": [8, 16, 32, 64]}, experts=3, gate_k=2,
        optimizer="adam", lr=3e-3, weight_decay=0.0, batch_size=20, cache_size=32,
        input_size=28, scale=[0.5, 1.0], eval_batch_size=50, amp="none", channels_last=False)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", "-m", "vipnb.cli", "train", str(recipe),
                           "--runs", str(tmp_path / "runs")],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-5000:]
    (run_path,) = (tmp_path / "runs").iterdir()
    run = RunDir(run_path)
    assert run.finished and [m["epoch"] for m in run.metrics()] == [0]
    assert run.logits("test").logits.shape == (30, 10)
