"""Every public loss in vipnb.losses keeps the promises of `torch.nn.functional`'s losses:
class-index and probability targets, `reduction` "none" | "mean" | "sum", bf16/fp16 inputs,
the empty batch, and float64 inputs that `torch.autograd.gradcheck` can check.

Decided here: the losses compute (and return) float32 at least, so bf16/fp16 inputs give a
float32 loss close to the float32 one; an empty batch gives what `F.cross_entropy` gives —
"none" an empty tensor, "sum" 0, "mean" nan.
"""

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

import vipnb.losses as losses
from vipnb.errors import VipnbError
from vipnb.losses import (
    CenterLoss,
    Hierarchy,
    bi_tempered_logistic_loss,
    diversity_loss,
    dsb_focal_loss,
    positive_class_loss,
    soft_cross_entropy,
    taylor_cross_entropy,
    tree_supervision_loss,
)

B, C, D, EXPERTS = 3, 4, 3, 2
# Public names that are not losses (helpers the losses use or feed).
NOT_LOSSES = {"Hierarchy", "SemanticScaleStore", "distillation_targets", "induce_hierarchy",
              "semantic_scale", "tempered_softmax"}
HIERARCHY = Hierarchy.from_nested([[0, 1], [2, 3]])
CLASS_WEIGHTS = torch.tensor([0.5, 1.0, 1.5, 1.0])
CENTERS = torch.randn(C, D, generator=torch.Generator().manual_seed(1))


def _center_loss(features, targets, reduction):
    loss = CenterLoss(C, D, reduction=reduction).eval()  # eval: the centres stay put
    loss.centers.copy_(CENTERS)
    return loss(features, targets)


@dataclass
class Case:
    name: str  # the public name it covers
    loss: Callable  # (input, targets or None, reduction) → loss
    shape: tuple = (B, C)  # the differentiable input's shape, batch at `batch_dim`
    batch_dim: int = 0
    takes_targets: bool = True

    def input(self, dtype=torch.float64, batch=B):
        shape = list(self.shape)
        shape[self.batch_dim] = batch
        g = torch.Generator().manual_seed(0)
        return (torch.randn(shape, generator=g, dtype=torch.float64) * 1.5).to(dtype)


CASES = [
    Case("soft_cross_entropy", lambda x, t, r: soft_cross_entropy(x, t, reduction=r)),
    Case("positive_class_loss", lambda x, t, r: positive_class_loss(x, t, reduction=r)),
    Case("taylor_cross_entropy",
         lambda x, t, r: taylor_cross_entropy(x, t, order=3, reduction=r)),
    Case("bi_tempered_logistic_loss",  # the recipes' temperatures
         lambda x, t, r: bi_tempered_logistic_loss(x, t, 0.8, 1.2, num_iters=60, reduction=r)),
    Case("bi_tempered_logistic_loss",  # finite support (binary search)
         lambda x, t, r: bi_tempered_logistic_loss(x, t, 0.5, 0.8, num_iters=60, reduction=r)),
    Case("bi_tempered_logistic_loss",  # the t = 1 limit
         lambda x, t, r: bi_tempered_logistic_loss(x, t, 1.0, 1.0, label_smoothing=0.1,
                                                   reduction=r)),
    Case("dsb_focal_loss", lambda x, t, r: dsb_focal_loss(x, t, CLASS_WEIGHTS, reduction=r)),
    Case("tree_supervision_loss",
         lambda x, t, r: tree_supervision_loss(x, t, HIERARCHY, reduction=r)),
    Case("CenterLoss", _center_loss, shape=(B, D)),
    Case("diversity_loss", lambda x, t, r: diversity_loss(x, reduction=r),
         shape=(EXPERTS, B, C), batch_dim=1, takes_targets=False),
]
IDS = [f"{case.name}-{i}" for i, case in enumerate(CASES)]
WITH_TARGETS = [case for case in CASES if case.takes_targets]
TARGET_IDS = [i for i, case in zip(IDS, CASES, strict=True) if case.takes_targets]


def _indices(batch=B):
    return torch.arange(batch) % C


def _probabilities(dtype=torch.float64, batch=B):
    g = torch.Generator().manual_seed(2)
    return torch.softmax(torch.randn(batch, C, generator=g, dtype=torch.float64), -1).to(dtype)


def _targets(case, kind, dtype=torch.float64, batch=B):
    if not case.takes_targets:
        return None
    return _indices(batch) if kind == "index" else _probabilities(dtype, batch)


def test_every_public_loss_is_covered():
    covered = {case.name for case in CASES}
    assert covered | NOT_LOSSES == set(losses.__all__), "add the new loss to CASES"


@pytest.mark.parametrize("case", WITH_TARGETS, ids=TARGET_IDS)
def test_index_targets_equal_one_hot_targets(case):
    x = case.input()
    one_hot = F.one_hot(_indices(), C).double()
    assert torch.allclose(case.loss(x, _indices(), "none"), case.loss(x, one_hot, "none"))


@pytest.mark.parametrize("kind", ["index", "probability"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_mean_and_sum_reduce_the_per_sample_values(case, kind):
    x, t = case.input(torch.float32), _targets(case, kind, torch.float32)
    per_sample = case.loss(x, t, "none")
    assert per_sample.shape == (B,)
    assert torch.allclose(case.loss(x, t, "mean"), per_sample.mean(), rtol=1e-6, atol=1e-7)
    assert torch.allclose(case.loss(x, t, "sum"), per_sample.sum(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_an_unknown_reduction_is_a_user_error(case):
    with pytest.raises(VipnbError, match=r"reduction='batchmean' is not one of"):
        case.loss(case.input(), _targets(case, "index"), "batchmean")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_half_precision_inputs_give_a_float32_loss_close_to_float32(case, dtype):
    x32, t = case.input(torch.float32), _targets(case, "probability", torch.float32)
    x16 = x32.to(dtype).requires_grad_()
    try:
        loss = case.loss(x16, t, "none")
        loss.sum().backward()
    except RuntimeError as error:  # an op without a CPU kernel for this dtype
        if "not implemented for" not in str(error):
            raise
        pytest.skip(f"{dtype} on CPU: {error}")
    assert loss.dtype == torch.float32 and x16.grad.dtype == dtype
    assert torch.isfinite(x16.grad.float()).all()
    # Computed in float32 from the rounded input; the rounding itself moves it by ~1%.
    assert torch.allclose(loss, case.loss(x16.detach().float(), t, "none"), atol=1e-5)
    assert torch.allclose(loss, case.loss(x32, t, "none"), rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_empty_batch_behaves_like_cross_entropy(case):
    assert F.cross_entropy(torch.zeros(0, C), _indices(0), reduction="none").shape == (0,)
    assert F.cross_entropy(torch.zeros(0, C), _indices(0), reduction="sum").item() == 0
    assert F.cross_entropy(torch.zeros(0, C), _indices(0)).isnan()
    for kind in ("index", "probability"):
        x, t = case.input(torch.float32, batch=0), _targets(case, kind, torch.float32, batch=0)
        assert case.loss(x, t, "none").shape == (0,)
        assert case.loss(x, t, "sum").item() == 0
        assert case.loss(x, t, "mean").isnan()


@pytest.mark.parametrize("kind", ["index", "probability"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float64_stays_float64_and_passes_gradcheck(case, kind):
    x, t = case.input().requires_grad_(), _targets(case, kind)
    assert case.loss(x, t, "none").dtype == torch.float64
    assert torch.autograd.gradcheck(lambda inp: case.loss(inp, t, "none"), (x,),
                                    eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("case", WITH_TARGETS, ids=TARGET_IDS)
def test_probability_targets_get_gradients_like_cross_entropy(case):
    x, t = case.input(), _probabilities().requires_grad_()
    assert torch.autograd.gradcheck(lambda target: case.loss(x, target, "none"), (t,),
                                    eps=1e-6, atol=1e-5)
