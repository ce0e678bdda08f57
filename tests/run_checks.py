"""Checks of a finished run against computations made here: its summary's accuracy from its
saved logits, and its saved logits from its reloaded model (so a test asserts more than that
a run finished)."""

import numpy as np
import pytest
import torch

from vipnb.data.augment import EvalTransform
from vipnb.data.sources import load_run_data
from vipnb.engine.build import load_trained_model
from vipnb.engine.rundir import RunDir


def assert_summary_and_logits_are_the_models(run: RunDir, atol: float = 1e-4) -> None:
    """`test_top1` in the summary is the argmax accuracy of the saved test logits, and those
    are the reloaded model's scores of the test images (center view, as the trainer scores
    them)."""
    recipe, test = run.recipe, run.logits("test")
    accuracy = float(np.mean(test.logits.argmax(1) == test.labels))
    assert run.summary()["test_top1"] == pytest.approx(accuracy)
    source = load_run_data(recipe).test
    model = load_trained_model(recipe, run, len(source.classes), torch.device("cpu"))
    transform = EvalTransform(recipe.input_size, recipe.crop_pct, tuple(recipe.mean),
                              tuple(recipe.std))
    with torch.inference_mode():
        scores = torch.cat([model(transform(images)) for images, _ in
                            source.batches(torch.arange(len(source)), 16)]).numpy()
    np.testing.assert_allclose(test.logits, scores, atol=atol, rtol=1e-4)
    assert np.ptp(test.logits) > 100 * atol  # the scores vary by far more than the tolerance
