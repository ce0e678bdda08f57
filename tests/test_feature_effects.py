"""Each recipe feature changes the outcome as it should, checked against a computation made
here in float64, with tolerances far below the effect: a feature that silently does nothing
(or does something else) fails. Unit level, no training run (see
test_feature_effects_training.py for those)."""

import numpy as np
import pytest
import torch
from torch import nn

from vipnb.engine.objective import Objective
from vipnb.engine.recipe import from_dict
from vipnb.eval.coverage import (
    cover,
    coverage_class_names,
    coverage_classes,
    coverage_labels,
    coverage_training_index,
)
from vipnb.eval.metrics import hard_classes
from vipnb.eval.tta import tta_predict
from vipnb.losses import Hierarchy, tree_supervision_loss


def recipe(**values):
    return from_dict({"name": "r", **values})


def softmax64(logits: torch.Tensor) -> np.ndarray:
    z = logits.detach().double().numpy()
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def soft_ce64(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return float(-(targets.double().numpy() * np.log(softmax64(logits))).sum(-1).mean())


LOGITS = torch.tensor([[3.0, -1.0, 0.5], [-2.0, 2.5, 0.0], [0.3, 0.2, 4.0], [1.0, 1.0, -3.0]])
LABELS = torch.eye(3)[torch.tensor([0, 1, 2, 1])]


# -- teacher (MoE eq. 2) ---------------------------------------------------------------------
def fixed_teacher() -> nn.Module:
    teacher = nn.Linear(4, 3)
    with torch.no_grad():
        teacher.weight.copy_(torch.tensor([[2.0, 0, 0, -1], [0, 3, 0, 0], [-1, 0, 2, 1]]))
        teacher.bias.copy_(torch.tensor([0.5, -0.5, 0.0]))
    return teacher.eval()


INPUTS = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 1, -1, 2]])


@pytest.mark.parametrize("label_weight", [0.0, 0.25, 1.0])
def test_distillation_targets_mix_the_labels_with_the_teachers_softmax(label_weight):
    teacher = fixed_teacher()
    labels = LABELS.roll(1, dims=1)  # labels the teacher disagrees with
    objective = Objective(recipe(distill_label_weight=label_weight, teacher="moe_regnety160"), 3, teacher=teacher)
    expected = (label_weight * labels.double().numpy()
                + (1 - label_weight) * softmax64(teacher(INPUTS)))
    targets = objective.targets(INPUTS, labels)
    np.testing.assert_allclose(targets.double().numpy(), expected, atol=1e-6)
    # The teacher's share moves the targets far more than that tolerance.
    if label_weight < 1:
        assert np.abs(expected - labels.numpy()).max() > 0.3


def test_without_a_teacher_the_targets_are_the_labels():
    assert torch.equal(Objective(recipe(), 3).targets(INPUTS, LABELS), LABELS)


# -- experts and their diversity (MoE eq. 5, 6-8) --------------------------------------------
def diversity64(expert_logits: torch.Tensor) -> float:
    """−Σ_i KL(p_i ‖ p̄), averaged over the batch."""
    p = softmax64(expert_logits)  # [N, B, C]
    mean = p.mean(0)
    return float(-(p * (np.log(p) - np.log(mean))).sum(-1).sum(0).mean())


def test_the_loss_sums_over_experts():
    experts = torch.stack([LOGITS, LOGITS.flip(-1), 2 * LOGITS])
    loss = Objective(recipe(), 3)(experts, LABELS)
    assert loss.item() == pytest.approx(sum(soft_ce64(z, LABELS) for z in experts), abs=1e-5)


@pytest.mark.parametrize("weight", [0.1, 0.5])
def test_the_diversity_weight_rewards_experts_that_disagree(weight):
    experts = torch.stack([LOGITS, LOGITS.flip(-1)])
    plain = Objective(recipe(), 3)(experts, LABELS).item()
    diverse = Objective(recipe(diversity_weight=weight, experts=3), 3)(experts, LABELS).item()
    assert diversity64(experts) < -0.5  # these experts disagree a lot
    assert diverse - plain == pytest.approx(weight * diversity64(experts), abs=1e-5)
    # Experts that agree have no diversity to reward.
    same = torch.stack([LOGITS, LOGITS])
    assert Objective(recipe(diversity_weight=weight, experts=3), 3)(same, LABELS).item() == pytest.approx(
        Objective(recipe(), 3)(same, LABELS).item(), abs=1e-6)


# -- VIPF eq. 3: center and tree terms -------------------------------------------------------
FEATURES = torch.tensor([[1.0, 2.0], [0.0, -3.0], [2.0, 2.0], [1.0, -1.0]])


@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_the_center_term_is_beta_times_half_the_squared_distance_and_shrinks(beta):
    plain = Objective(recipe(), 3)(LOGITS, LABELS).item()
    objective = Objective(recipe(center_loss_weight=beta, center_loss_alpha=0.5), 3,
                          feature_dim=2)
    first = objective(LOGITS, LABELS, FEATURES).item()
    # The centres start at zero: ½‖x‖² averaged over the batch.
    half_norms = 0.5 * (FEATURES.double() ** 2).sum(1).mean().item()
    assert first - plain == pytest.approx(beta * half_norms, abs=1e-5)
    # The centres moved towards the features: the same batch again costs less.
    second = objective(LOGITS, LABELS, FEATURES).item()
    assert plain < second < first


@pytest.mark.parametrize("gamma", [0.25, 3.0])
def test_the_tree_term_is_gamma_times_the_tree_loss(gamma):
    hierarchy = Hierarchy.from_nested([[0, 1], 2])
    plain = Objective(recipe(), 3)(LOGITS, LABELS).item()
    tree = Objective(recipe(tree_loss_weight=gamma), 3, hierarchy=hierarchy)(LOGITS, LABELS)
    term = tree_supervision_loss(LOGITS, LABELS, hierarchy).item()
    assert term > 0.1
    assert tree.item() - plain == pytest.approx(gamma * term, abs=1e-5)


# -- TTA: the arithmetic mean of the views' probabilities ------------------------------------
class LeftVersusRight(nn.Module):
    """Logits from how much brighter the left half is than the right: a mirror image gets
    the opposite prediction."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        d = x[..., :half].mean((1, 2, 3)) - x[..., half:].mean((1, 2, 3))
        return torch.stack([4 * d, -4 * d, torch.zeros_like(d)], -1)


def test_flip_tta_averages_probabilities_arithmetically():
    images = torch.zeros(2, 3, 8, 8)
    images[0, :, :, :4] = 1.0  # left bright
    images[1, :, :, 4:] = 0.5  # right a little bright
    model = LeftVersusRight()
    center, mirrored = model(images), model(images.flip(-1))
    arithmetic = np.log((softmax64(center) + softmax64(mirrored)) / 2)
    scores = tta_predict(model, images, "flip", crop_size=8)
    np.testing.assert_allclose(scores.double().numpy(), arithmetic, atol=1e-5)
    # A geometric mean (normalised or not) is far from it: the tolerance is well below that.
    log_p = np.log(softmax64(torch.stack([center, mirrored])))
    geometric = log_p.mean(0)
    normalised = geometric - np.log(np.exp(geometric).sum(-1, keepdims=True))
    assert np.abs(geometric - arithmetic).max() > 1.0
    assert np.abs(normalised - arithmetic).max() > 1.0
    mean_logit = tta_predict(model, images, "flip", crop_size=8, reduce="mean_logit")
    np.testing.assert_allclose(mean_logit.numpy(), ((center + mirrored) / 2).numpy(), atol=1e-6)


# -- thresholds: "below" means strictly below ------------------------------------------------
def test_a_class_exactly_at_the_threshold_is_not_hard():
    accuracy = np.array([0.5, 0.5 - 1e-9, 0.9, 0.25])
    rows = hard_classes(accuracy, None, threshold=0.5, k_worst=0)
    assert [row["class_index"] for row in rows] == [3, 1]
    listed = hard_classes(accuracy, None, threshold=0.5, k_worst=4)
    assert {row["class_index"]: row["below_threshold"] for row in listed} == {
        3: True, 1: True, 0: False, 2: False}
    assert coverage_classes(accuracy, threshold=0.5) == [1, 3]
    assert coverage_classes(accuracy, threshold=0.25) == []


# -- coverage: the hard classes in sorted order, whatever order the caller gives -------------
@pytest.mark.parametrize("rule", ["literal", "replace"])
def test_cover_maps_coverage_labels_to_the_sorted_hard_classes(rule):
    fused = np.array([5, 2, 5, 0, 2])
    prediction = np.array([0, 1, 2, 0, 0])  # coverage space: 0 → class 2, 1 → class 5, 2: other
    expected = {"literal": [2, 5, 5, 0, 2], "replace": [2, 5, 5, 2, 2]}[rule]
    for order in ([2, 5], [5, 2]):
        assert cover(fused, prediction, order, rule=rule).tolist() == expected


def test_every_coverage_step_sorts_the_hard_classes():
    labels = np.array([0, 1, 2, 3, 4, 5, 5, 2, -1])
    assert coverage_labels(labels, [5, 2]).tolist() == coverage_labels(labels, [2, 5]).tolist()
    assert coverage_labels(labels, [5, 2]).tolist() == [2, 2, 0, 2, 2, 1, 1, 0, -1]
    names = [f"c{i}" for i in range(6)]
    assert coverage_class_names(names, [5, 2]) == ["c2", "c5", "other"]
    train = np.repeat(np.arange(6), 3)
    index, new = coverage_training_index(train, [5, 2], per_hard=4, per_other=1)
    assert (train[index[new == 0]] == 2).all() and (train[index[new == 1]] == 5).all()
