"""A fifth paper extends vipnb without editing it: the toy paper of tests/fifth_paper registers
a loss and an architecture and a recipe folder, and its recipes train, reload and name their
runs like the shipped ones."""

from __future__ import annotations

import fifth_paper  # noqa: F401  (registers the toy paper's loss, model and recipes)
import pytest
import torch

from vipnb.engine import load_recipe, train
from vipnb.engine.build import build_model, trained_weights
from vipnb.errors import VipnbError


def toy(name: str, tree, **overrides):
    return load_recipe(name, "smoke", {"data_root": str(tree), **overrides})


def test_the_toy_papers_recipes_train_with_its_loss_and_architecture(tiny_tree, tmp_path):
    plain = train(toy("toy_plain", tiny_tree), runs_root=tmp_path, progress=False)
    margin = train(toy("toy_margin", tiny_tree), runs_root=tmp_path, progress=False)
    assert plain.finished and margin.finished
    # The same seed, data order and initial weights: the margin raises the first epoch's loss.
    assert margin.metrics()[0]["train_loss"] > plain.metrics()[0]["train_loss"]

    # The run reloads as the toy network and scores as its saved logits say.
    recipe = toy("toy_margin", tiny_tree)
    model = build_model(recipe, num_classes=3)
    assert type(model).__name__ == "TinyNet"
    model.load_state_dict(trained_weights(margin))
    saved = margin.logits("val")
    assert saved.logits.shape == (len(saved.labels), 3)


def test_a_loss_setting_enters_the_run_name(tiny_tree):
    assert (toy("toy_margin", tiny_tree).run_name
            != toy("toy_margin", tiny_tree, loss_kwargs={"margin": 0.25}).run_name)


def test_a_setting_the_chosen_loss_does_not_read_is_refused(tiny_tree):
    with pytest.raises(VipnbError, match=r"marign set, but loss='toy_margin_ce' does not read "
                                         r"them \(it reads: margin\)"):
        toy("toy_margin", tiny_tree, loss_kwargs={"marign": 0.5})
    with pytest.raises(VipnbError, match="taylor_order set, but loss='toy_margin_ce'"):
        toy("toy_margin", tiny_tree, taylor_order=3)


def test_the_margin_loss_is_the_papers_equation(tiny_tree):
    loss = fifth_paper.build_margin_cross_entropy(toy("toy_margin", tiny_tree), 3)
    logits, targets = torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]])
    expected = -torch.log_softmax(torch.tensor([[1.5, 1.0, 0.0]]), dim=1)[0, 0]
    assert loss(logits, targets).item() == pytest.approx(expected.item(), abs=1e-6)
