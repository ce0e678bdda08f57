"""Mixture of experts: shared trunk, distillation from a finished run, frozen fusion."""

from pathlib import Path

import pytest
import timm
import torch

from tests.conftest import write_recipe_file
from tests.run_checks import assert_summary_and_logits_are_the_models
from vipnb.engine import load_recipe, train
from vipnb.engine.build import trained_weights
from vipnb.engine.objective import Objective
from vipnb.engine.recipe import from_dict
from vipnb.engine.rundir import RunDir
from vipnb.errors import VipnbError
from vipnb.losses import diversity_loss, positive_class_loss
from vipnb.models.moe import MixtureOfExperts


def tiny_moe(num_experts=3, **kwargs):
    torch.manual_seed(0)
    return MixtureOfExperts(lambda: timm.create_model("resnet10t", num_classes=4), num_experts,
                            **kwargs)


def test_experts_share_exactly_the_early_layers():
    moe = tiny_moe(shared_stages=2)
    trunk = {id(p) for p in moe.trunk.parameters()}
    layer = {name.split(".")[0] for name, _ in moe.trunk.named_parameters()}
    assert {"0", "1", "4", "5"} <= layer  # conv1 (stem), bn1, layer1, layer2 by position
    for expert in moe.experts:
        own = dict(expert.named_parameters())
        assert {name.split(".")[0] for name in own} == {"layer3", "layer4", "fc"}
        assert not trunk & {id(p) for p in own.values()}
    first, second = (dict(e.named_parameters()) for e in moe.experts[:2])
    assert not torch.equal(first["layer3.0.conv1.weight"], second["layer3.0.conv1.weight"])
    x = torch.randn(2, 3, 32, 32)
    moe(x)[1].sum().backward()  # expert 1 alone still trains the trunk
    assert all(p.grad is not None for p in moe.trunk.parameters())
    assert not moe.experts[0].fc.weight.grad.any()  # other experts get nothing


def test_evaluation_averages_the_experts_probabilities():
    moe = tiny_moe().eval()
    x = torch.randn(2, 3, 32, 32)
    shared = moe.trunk(x)
    probs = torch.stack([e(shared).softmax(-1) for e in moe.experts]).mean(0)
    assert torch.allclose(moe(x).exp(), probs, atol=1e-6)


def test_fusion_freezes_every_expert_parameter():
    moe = tiny_moe(fusion=True).train()
    trainable = [name for name, p in moe.named_parameters() if p.requires_grad]
    assert trainable == ["fusion.weight", "fusion.bias"]
    assert not moe.trunk.training and not any(e.training for e in moe.experts)
    assert moe.fusion.in_features == 3 * moe.experts[0].num_features
    assert moe(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_shared_stages_out_of_range_names_the_stages():
    with pytest.raises(VipnbError, match="shared_stages=4.*layer1"):
        tiny_moe(shared_stages=4)


def test_objective_sums_experts_and_adds_weighted_diversity():
    logits = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0))
    targets = torch.softmax(torch.randn(5, 4), -1)
    recipe = from_dict({"name": "x", "loss": "positive_class", "diversity_weight": 0.2,
                        "experts": 3})
    expected = sum(positive_class_loss(z, targets) for z in logits) + 0.2 * diversity_loss(logits)
    assert Objective(recipe, 4)(logits, targets).item() == pytest.approx(expected.item(), abs=1e-6)


def test_distilled_experts_then_fusion_through_the_trainer(tiny_tree: Path, tmp_path: Path):
    moe = {"model": "resnet10t", "experts": 2, "diversity_weight": 0.2,
           "loss": "positive_class", "epochs": 2}
    teacher = write_recipe_file(tmp_path, "teacher", tiny_tree, **moe)
    student = write_recipe_file(tmp_path, "student", tiny_tree, **moe, teacher=str(teacher))
    fused = write_recipe_file(tmp_path, "fused", tiny_tree, **moe, init_from=str(student),
                              fusion=True, lr=0.01)
    runs = tmp_path / "runs"
    fused_run = train(load_recipe(fused, "cpu"), runs_root=runs, progress=False)
    names = sorted(p.name.split("-")[0] for p in runs.iterdir())
    assert names == ["fused", "student", "teacher"]  # dependencies trained first
    student_run = RunDir(next(runs.glob("student-*")))
    source, after = trained_weights(student_run), trained_weights(fused_run)
    assert set(after) - set(source) == {"fusion.weight", "fusion.bias"}
    assert all(torch.equal(after[key], value) for key, value in source.items())
    assert_summary_and_logits_are_the_models(fused_run)


def test_a_changed_teacher_changes_the_students_run_name(tiny_tree: Path, tmp_path: Path):
    teacher = write_recipe_file(tmp_path, "teacher", tiny_tree)
    student = write_recipe_file(tmp_path, "student", tiny_tree, teacher=str(teacher))
    before = load_recipe(student, "cpu").run_name
    write_recipe_file(tmp_path, "teacher", tiny_tree, lr=0.5)
    assert load_recipe(student, "cpu").run_name != before
