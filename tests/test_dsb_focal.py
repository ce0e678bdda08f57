"""Semantic scale (Ma et al. 2023), its per-class store, and the DSB focal loss
(fusion-coverage eq. 7–8), pinned to hand-computed values."""

import math

import pytest
import torch
import torch.nn.functional as F

from vipnb.errors import VipnbError
from vipnb.losses import SemanticScaleStore, dsb_focal_loss, semantic_scale

LOG3 = math.log(3.0)


# --- semantic scale -------------------------------------------------------------------------

def test_semantic_scale_of_orthonormal_features_by_hand():
    # m = 4 orthonormal features in d = 4: the centred Gram matrix I − 11ᵀ/4 has eigenvalues
    # 1, 1, 1, 0, so S = ½·3·log₂(1 + d/m) = 1.5.
    assert semantic_scale(torch.eye(4)).item() == pytest.approx(1.5, abs=1e-9)
    # With d = 1 (the authors' package default): ½·3·log₂(1 + 1/4).
    assert semantic_scale(torch.eye(4), d=1.0).item() == pytest.approx(
        1.5 * math.log2(1.25), abs=1e-9)


def test_semantic_scale_grows_as_features_spread():
    g = torch.Generator().manual_seed(0)
    direction = torch.randn(1, 16, generator=g)
    identical = direction.expand(8, 16)
    close = direction + 0.05 * torch.randn(8, 16, generator=g)
    spread = torch.randn(8, 16, generator=g)
    scales = [semantic_scale(z).item() for z in (identical, close, spread)]
    assert scales[0] == pytest.approx(0.0, abs=1e-9)
    assert scales[0] < scales[1] < scales[2]


def test_semantic_scale_ignores_order_and_norms_of_the_features():
    z = torch.randn(10, 6, generator=torch.Generator().manual_seed(1))
    scale = semantic_scale(z).item()
    assert semantic_scale(z[torch.randperm(10)]).item() == pytest.approx(scale, abs=1e-6)
    norms = torch.linspace(0.5, 5.0, 10).unsqueeze(1)
    assert semantic_scale(z * norms).item() == pytest.approx(scale, abs=1e-6)


def test_semantic_scale_rejects_a_batch_of_classes():
    with pytest.raises(VipnbError, match=r"\[m, dim\]"):
        semantic_scale(torch.zeros(2, 3, 4))


# --- the store ------------------------------------------------------------------------------

def test_store_keeps_only_the_last_features_of_each_class():
    store = SemanticScaleStore(num_classes=3, store_size=4)
    features = torch.arange(14, dtype=torch.float32).repeat(2, 1).T  # row i = (i, i)
    labels = torch.tensor([0, 1] * 7)
    store.update(features[:6], labels[:6])
    store.update(features[6:], labels[6:])
    assert sorted(store.features(0)[:, 0].tolist()) == [6.0, 8.0, 10.0, 12.0]
    assert sorted(store.features(1)[:, 0].tolist()) == [7.0, 9.0, 11.0, 13.0]
    assert store.features(2).shape == (0, 2)
    # One batch with more than store_size rows of a class keeps its last ones.
    store.update(torch.arange(20.0, 26.0).repeat(2, 1).T, torch.zeros(6, dtype=torch.long))
    assert sorted(store.features(0)[:, 0].tolist()) == [22.0, 23.0, 24.0, 25.0]


def test_store_scales_match_semantic_scale_and_need_two_features():
    g = torch.Generator().manual_seed(2)
    store = SemanticScaleStore(num_classes=3, store_size=6)
    store.update(torch.randn(9, 5, generator=g), torch.tensor([0] * 8 + [1]))
    scales = store.scales()
    assert scales[0].item() == pytest.approx(semantic_scale(store.features(0)).item(), abs=1e-9)
    assert scales[1].isnan() and scales[2].isnan()


def test_class_with_more_spread_features_gets_lower_weight():
    g = torch.Generator().manual_seed(3)
    direction = torch.randn(1, 8, generator=g)
    tight = direction + 0.1 * torch.randn(6, 8, generator=g)
    spread = torch.randn(6, 8, generator=g)
    store = SemanticScaleStore(3, 6, feature_dim=8)
    store.update(torch.cat([tight, spread]), torch.tensor([0] * 6 + [1] * 6))
    weights = store.class_weights()
    assert weights.dtype == torch.float32 and weights.shape == (3,)
    assert weights[0] > weights[1]
    # Known classes have mean weight 1; the class without features gets that mean.
    assert weights[:2].mean().item() == pytest.approx(1.0, abs=1e-6)
    assert weights[2].item() == 1.0
    # w ∝ 1/S.
    s = store.scales()
    assert (weights[0] / weights[1]).item() == pytest.approx((s[1] / s[0]).item(), rel=1e-5)


def test_empty_store_gives_uniform_weights_and_state_dict_round_trips():
    store = SemanticScaleStore(num_classes=4, store_size=5)
    assert store.class_weights().tolist() == [1.0] * 4
    store.update(torch.randn(10, 3), torch.tensor([0, 1] * 5))
    copy = SemanticScaleStore(num_classes=4, store_size=5)  # sized from the state dict
    copy.load_state_dict(store.state_dict())
    assert torch.equal(copy.bank, store.bank)
    assert torch.equal(copy.class_weights(), store.class_weights())
    with pytest.raises(VipnbError, match="features have 2 dimensions, the store holds 3"):
        store.update(torch.randn(2, 2), torch.tensor([0, 1]))
    with pytest.raises(VipnbError, match="store_size=1"):
        SemanticScaleStore(num_classes=2, store_size=1)


# --- DSB focal loss -------------------------------------------------------------------------

def test_dsb_focal_uniform_weights_gamma_zero_is_summed_bce():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(6, 5, generator=g)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    bce = F.binary_cross_entropy_with_logits(logits, F.one_hot(labels, 5).float(),
                                             reduction="none").sum(-1)
    loss = dsb_focal_loss(logits, labels, torch.ones(5), gamma=0.0)
    assert loss.item() == pytest.approx(bce.mean().item(), abs=1e-6)


def test_dsb_focal_by_hand_on_two_classes():
    # p = sigmoid(0, log 3) = (.5, .75), label 1: class 0 is a negative (p_t = .5), class 1
    # a positive (p_t = .75). γ = 2: .5²·log 2 + .25²·log(4/3); the weight of class 1 is 2.
    logits, label = torch.tensor([[0.0, LOG3]]), torch.tensor([1])
    expected = 0.25 * math.log(2) + 0.0625 * math.log(4 / 3)
    weights = torch.tensor([1.0, 2.0])
    assert dsb_focal_loss(logits, label, weights).item() == pytest.approx(2 * expected, abs=1e-6)
    # A soft target (.5, .5) is the binary target .5 of both outputs, weight (1 + 2)/2.
    soft = torch.tensor([[0.5, 0.5]])
    p_t = torch.tensor([0.5, 0.5 * 0.75 + 0.5 * 0.25])
    bce = F.binary_cross_entropy_with_logits(logits[0], soft[0], reduction="none")
    expected_soft = 1.5 * (bce * (1 - p_t) ** 2).sum().item()
    assert dsb_focal_loss(logits, soft, weights).item() == pytest.approx(expected_soft, abs=1e-6)


def test_dsb_focal_weights_the_sample_by_its_true_class():
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(5))
    labels = torch.tensor([0, 1, 2, 1])
    weights = torch.tensor([0.5, 1.0, 3.0])
    plain = dsb_focal_loss(logits, labels, torch.ones(3), reduction="none")
    weighted = dsb_focal_loss(logits, labels, weights, reduction="none")
    assert weighted.shape == (4,)
    assert torch.allclose(weighted, plain * weights[labels])
    assert dsb_focal_loss(logits, labels, weights, reduction="sum").item() == pytest.approx(
        weighted.sum().item(), abs=1e-6)
    assert torch.allclose(weighted, dsb_focal_loss(logits, F.one_hot(labels, 3).float(), weights,
                                                   reduction="none"))


def test_dsb_focal_gradient_finite_bf16_and_errors():
    logits = torch.randn(4, 3).bfloat16().requires_grad_()
    loss = dsb_focal_loss(logits, torch.tensor([0, 1, 2, 0]), torch.ones(3))
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(logits.grad.float()).all()
    with pytest.raises(VipnbError, match=r"class_weights has shape \(2,\), expected \(3,\)"):
        dsb_focal_loss(torch.zeros(1, 3), torch.tensor([0]), torch.ones(2))
    with pytest.raises(VipnbError, match="reduction='avg'"):
        dsb_focal_loss(torch.zeros(1, 3), torch.tensor([0]), torch.ones(3), reduction="avg")
    with pytest.raises(VipnbError, match="gamma=-1"):
        dsb_focal_loss(torch.zeros(1, 3), torch.tensor([0]), torch.ones(3), gamma=-1)
