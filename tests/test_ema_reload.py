"""A run trained with an EMA of its weights evaluates with that EMA and can be loaded again:
re-scored, and used as `teacher`, `init_from` and `hierarchy_from` of another run."""

from pathlib import Path

import numpy as np
import torch
from conftest import write_recipe_file

from vipnb.data.augment import EvalTransform
from vipnb.data.sources import load_run_data
from vipnb.engine import load_recipe, train
from vipnb.engine.build import build_model, load_trained_model, trained_weights
from vipnb.engine.checkpoint import load_checkpoint
from vipnb.engine.rescore import rescore

CPU = torch.device("cpu")
# An EMA that moves a lot per step, so the EMA and the raw weights give clearly other logits.
EMA = {"ema_decay": 0.5, "epochs": 1, "lr": 0.1, "eval_batch_size": 8}


def _logits(model: torch.nn.Module, recipe, split: str) -> np.ndarray:
    """`model` scored on `split` as the trainer scores the center view, computed here."""
    source = getattr(load_run_data(recipe), split)
    transform = EvalTransform(recipe.input_size, recipe.crop_pct, tuple(recipe.mean),
                              tuple(recipe.std))
    with torch.inference_mode():
        return torch.cat([model(transform(images)) for images, _ in
                          source.batches(torch.arange(len(source)), 8)]).numpy()


def test_an_ema_run_evaluates_with_its_ema_and_loads_back(tiny_tree: Path, tmp_path: Path):
    recipe = load_recipe(write_recipe_file(tmp_path, "ema", tiny_tree, **EMA), "cpu")
    run = train(recipe, runs_root=tmp_path / "runs", progress=False)
    weights = trained_weights(run)
    raw = build_model(recipe, 3)
    assert set(weights) == set(raw.state_dict())  # plain model keys, no `module.` prefix

    ema_model = load_trained_model(recipe, run, 3, CPU)
    raw.load_state_dict(load_checkpoint(run.checkpoint_file)["model"])
    raw.eval()
    saved = run.logits("val").logits
    np.testing.assert_allclose(_logits(ema_model, recipe, "val"), saved, atol=1e-4, rtol=1e-4)
    # The raw weights score otherwise, by far more than that tolerance: the EMA was used.
    assert np.abs(_logits(raw, recipe, "val") - saved).max() > 1e-2
    # Re-scoring the center view at the training size gives the saved test scores again
    # (as log-probabilities: TTA averages probabilities).
    rescored = rescore(run, "center", recipe.input_size)
    expected = torch.log_softmax(torch.from_numpy(run.logits("test").logits), 1).numpy()
    np.testing.assert_allclose(rescored.logits, expected, atol=1e-4, rtol=1e-4)


def test_an_ema_run_serves_as_teacher_init_and_hierarchy(tiny_tree: Path, tmp_path: Path):
    source = write_recipe_file(tmp_path, "ema_source", tiny_tree, **EMA)
    student = write_recipe_file(tmp_path, "student", tiny_tree, teacher=str(source),
                                init_from=str(source), hierarchy_from=str(source),
                                tree_loss_weight=1.0)
    runs = tmp_path / "runs"
    run = train(load_recipe(student, "cpu"), runs_root=runs, progress=False)
    assert run.finished and len(list(runs.iterdir())) == 2
