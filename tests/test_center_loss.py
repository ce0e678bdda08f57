"""Center loss (VIPF eq. 6) and Wen et al.'s centre update, pinned to hand examples."""

import pytest
import torch

from vipnb.errors import VipnbError
from vipnb.losses.center import CenterLoss


def _loss_with_centers(centers):
    loss = CenterLoss(num_classes=2, feature_dim=2, alpha=0.5)
    loss.centers.copy_(torch.tensor(centers))
    return loss


def test_loss_value_on_a_hand_example():
    loss = _loss_with_centers([[0.0, 0.0], [1.0, 1.0]]).eval()
    x = torch.tensor([[3.0, 4.0], [1.0, 2.0]])
    # ½·25 and ½·1, averaged over the batch of 2.
    assert loss(x, torch.tensor([0, 1])).item() == pytest.approx((12.5 + 0.5) / 2)


def test_centre_update_follows_wen_et_al():
    loss = _loss_with_centers([[0.0, 0.0], [1.0, 1.0]]).train()
    x = torch.tensor([[2.0, 0.0], [4.0, 2.0], [1.0, 3.0]])
    value = loss(x, torch.tensor([0, 0, 1]))
    # Loss uses the old centres: ½(4 + 20 + 4) / 3.
    assert value.item() == pytest.approx(28 / 6)
    # Class 0: Δc = ((0,0)−(2,0) + (0,0)−(4,2)) / 3 = (−2, −2/3); c ← c − ½Δc = (1, 1/3).
    # Class 1: Δc = ((1,1)−(1,3)) / 2 = (0, −1); c ← (1, 1.5).
    assert torch.allclose(loss.centers, torch.tensor([[1.0, 1 / 3], [1.0, 1.5]]))


def test_absent_class_keeps_its_centre_and_gradients_reach_features():
    loss = _loss_with_centers([[5.0, 5.0], [1.0, 1.0]]).train()
    x = torch.tensor([[0.0, 1.0]], requires_grad=True)
    loss(x, torch.tensor([1])).backward()
    assert torch.equal(loss.centers[0], torch.tensor([5.0, 5.0]))
    assert torch.allclose(x.grad, torch.tensor([[-1.0, 0.0]]))  # (x − c)/B
    assert not loss.centers.requires_grad


def test_no_update_in_eval_mode():
    loss = _loss_with_centers([[0.0, 0.0], [1.0, 1.0]]).eval()
    before = loss.centers.clone()
    loss(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))
    assert torch.equal(loss.centers, before)


def test_centres_survive_a_state_dict_round_trip():
    loss = CenterLoss(3, 4).train()
    loss(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))
    fresh = CenterLoss(3, 4)
    fresh.load_state_dict(loss.state_dict())
    assert "centers" in loss.state_dict()
    assert torch.equal(fresh.centers, loss.centers)
    assert not any(True for _ in loss.parameters())


def test_soft_targets():
    loss = _loss_with_centers([[0.0, 0.0], [2.0, 0.0]]).train()
    x = torch.tensor([[0.0, 1.0]])
    t = torch.tensor([[0.25, 0.75]])
    # ½(0.25·1 + 0.75·5) = 2.
    assert loss(x, t).item() == pytest.approx(2.0, abs=1e-6)
    # argmax class 1: Δc = ((2,0) − (0,1)) / 2 = (1, −½); c ← (1.5, 0.25); class 0 unchanged.
    assert torch.allclose(loss.centers, torch.tensor([[0.0, 0.0], [1.5, 0.25]]))
    # One-hot soft targets equal indices.
    a, b = _loss_with_centers([[0.0, 0.0], [2.0, 0.0]]), _loss_with_centers([[0.0, 0.0], [2.0, 0.0]])
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    assert a(x, y).item() == pytest.approx(b(x, torch.nn.functional.one_hot(y, 2).float()).item(),
                                           abs=1e-5)
    assert torch.allclose(a.centers, b.centers)


@pytest.mark.parametrize("features, labels", [
    (torch.zeros(2, 3), torch.tensor([0, 1])),        # wrong feature dim
    (torch.zeros(2, 2), torch.tensor([0, 2])),        # label out of range
    (torch.zeros(2, 2), torch.zeros(2, 3)),           # soft targets of wrong width
    (torch.zeros(2, 2), torch.tensor([0])),           # label count
])
def test_user_errors_name_the_value(features, labels):
    with pytest.raises(VipnbError):
        CenterLoss(2, 2)(features, labels)


def test_bad_alpha_is_a_user_error():
    with pytest.raises(VipnbError, match="alpha"):
        CenterLoss(2, 2, alpha=0.0)


def test_per_sample_values_and_centres_move_whatever_the_reduction():
    loss = CenterLoss(2, 2, reduction="none")
    loss.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    values = loss.train()(torch.tensor([[3.0, 4.0], [1.0, 2.0]]), torch.tensor([0, 1]))
    assert values.tolist() == pytest.approx([12.5, 0.5])  # eq. 6 per sample, for weighting
    assert torch.allclose(loss.centers, torch.tensor([[0.75, 1.0], [1.0, 1.25]]))
    assert "reduction='none'" in repr(loss)
    with pytest.raises(VipnbError, match="reduction='batchmean'"):
        CenterLoss(2, 2, reduction="batchmean")
