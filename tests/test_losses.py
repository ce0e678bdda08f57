"""The papers' losses, pinned to values computed by hand."""

import math

import pytest
import torch

from vipnb.losses import distillation_targets, diversity_loss, positive_class_loss

LOG3 = math.log(3.0)


def test_positive_class_loss_on_a_one_hot_target():
    # p = (.5, .5): CE = log 2; cos((1, 0), (.5, .5)) = 1/√2.
    loss = positive_class_loss(torch.zeros(1, 2), torch.tensor([0]))
    assert loss.item() == pytest.approx(math.log(2) + 1 - 1 / math.sqrt(2), abs=1e-6)


def test_positive_class_loss_on_a_soft_target():
    # p = (.75, .25), t = (.5, .5): CE = ½(log 4/3 + log 4); cos = .5 / (√.5 · √.625).
    loss = positive_class_loss(torch.tensor([[LOG3, 0.0]]), torch.tensor([[0.5, 0.5]]))
    expected = 0.5 * (math.log(4 / 3) + math.log(4)) + 1 - 0.5 / math.sqrt(0.5 * 0.625)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_positive_class_loss_indices_equal_one_hot_and_average_the_batch():
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    one_hot = torch.nn.functional.one_hot(labels, 5).float()
    assert positive_class_loss(logits, labels).item() == pytest.approx(
        positive_class_loss(logits, one_hot).item(), abs=1e-6)
    per_row = [positive_class_loss(logits[i:i + 1], labels[i:i + 1]).item() for i in range(6)]
    assert positive_class_loss(logits, labels).item() == pytest.approx(sum(per_row) / 6, abs=1e-6)


def test_diversity_loss_of_two_mirrored_experts():
    # p1 = (.75, .25), p2 = (.25, .75), p̄ = (.5, .5): KL(p_i‖p̄) = .75 log 1.5 + .25 log .5 each.
    logits = torch.tensor([[[LOG3, 0.0]], [[0.0, LOG3]]])
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert diversity_loss(logits).item() == pytest.approx(-2 * kl, abs=1e-6)


def test_diversity_loss_is_zero_for_identical_experts_and_negative_otherwise():
    same = torch.randn(1, 4, 7).expand(3, 4, 7)
    assert diversity_loss(same).item() == pytest.approx(0.0, abs=1e-6)
    assert diversity_loss(torch.randn(3, 4, 7)).item() < 0


def test_diversity_loss_averages_over_the_batch():
    logits = torch.randn(3, 4, 7, generator=torch.Generator().manual_seed(1))
    per_item = [diversity_loss(logits[:, b:b + 1]).item() for b in range(4)]
    assert diversity_loss(logits).item() == pytest.approx(sum(per_item) / 4, abs=1e-6)


def test_distillation_targets_mix_labels_and_teacher():
    targets = distillation_targets(torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2), 0.5)
    assert targets.tolist() == [[0.75, 0.25]]
    teacher_only = distillation_targets(torch.tensor([[1.0, 0.0]]),
                                        torch.tensor([[LOG3, 0.0]]), 0.0)
    assert teacher_only[0].tolist() == pytest.approx([0.75, 0.25])
    with pytest.raises(ValueError, match="label_weight"):
        distillation_targets(torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2), 1.5)


def test_per_sample_values_for_weighting_and_masking():
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2, 3, 0])
    per_sample = positive_class_loss(logits, labels, reduction="none")
    assert per_sample.shape == (5,)
    assert per_sample[2].item() == pytest.approx(
        positive_class_loss(logits[2:3], labels[2:3]).item(), abs=1e-6)
    experts = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(3))
    per_item = diversity_loss(experts, reduction="none")
    assert per_item.shape == (5,)
    assert per_item.sum().item() == pytest.approx(
        diversity_loss(experts, reduction="sum").item(), abs=1e-6)
