"""Taylor cross-entropy and the bi-tempered loss, pinned to hand-computed values and to the
expected numbers of Google's reference tests (google/bi-tempered-loss, tensorflow/loss_test.py)."""

import math

import pytest
import torch
import torch.nn.functional as F

from vipnb.errors import VipnbError
from vipnb.losses import bi_tempered_logistic_loss, taylor_cross_entropy, tempered_softmax
from vipnb.losses.bi_tempered import _normalization_fixed_point, exp_t, log_t

LOG3 = math.log(3.0)
# The reference tests' activations and soft labels.
ACTIVATIONS = torch.tensor([[-0.5, 0.1, 2.0], [0.1, 1.5, -5.0], [4.0, -3.0, -6.0]])
SOFT_LABELS = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.2, 0.8, 0.0]])


# --- Taylor cross-entropy (fusion-coverage eq. 3) -------------------------------------------

def test_taylor_on_a_uniform_prediction():
    # p_y = .5: order 1 → .5; order 2 → .5 + .25/2; order 3 adds .125/3.
    logits, target = torch.zeros(1, 2), torch.tensor([0])
    assert taylor_cross_entropy(logits, target, order=1).item() == pytest.approx(0.5)
    assert taylor_cross_entropy(logits, target).item() == pytest.approx(0.625)
    assert taylor_cross_entropy(logits, target, order=3).item() == pytest.approx(
        0.625 + 0.125 / 3)


def test_taylor_soft_target_uses_the_mass_on_the_targets():
    # p = (.75, .25), t = (.5, .5): p_y = .5 → the same .625; t = (0, 1): p_y = .25.
    logits = torch.tensor([[LOG3, 0.0]])
    assert taylor_cross_entropy(logits, torch.tensor([[0.5, 0.5]])).item() == pytest.approx(0.625)
    assert taylor_cross_entropy(logits, torch.tensor([[0.0, 1.0]])).item() == pytest.approx(
        0.75 + 0.75 ** 2 / 2)


def test_taylor_tends_to_cross_entropy_as_the_order_grows():
    logits = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(8) % 5
    ce = F.cross_entropy(logits, labels, reduction="none")
    taylor = taylor_cross_entropy(logits, labels, order=400, reduction="none")
    assert torch.allclose(taylor, ce, atol=1e-3)
    assert (taylor_cross_entropy(logits, labels, order=2, reduction="none") < ce).all()


def test_taylor_reductions_and_indices_equal_one_hot():
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    per_sample = taylor_cross_entropy(logits, labels, reduction="none")
    assert per_sample.shape == (6,)
    assert taylor_cross_entropy(logits, labels).item() == pytest.approx(per_sample.mean().item())
    assert taylor_cross_entropy(logits, labels, reduction="sum").item() == pytest.approx(
        per_sample.sum().item(), rel=1e-6)
    assert torch.allclose(per_sample, taylor_cross_entropy(
        logits, F.one_hot(labels, 4).float(), reduction="none"))


def test_taylor_gradient_is_finite_and_bf16_is_computed_in_float32():
    logits = torch.randn(4, 3, requires_grad=True)
    taylor_cross_entropy(logits, torch.tensor([0, 1, 2, 0]), order=4).backward()
    assert torch.isfinite(logits.grad).all()
    half = taylor_cross_entropy(logits.detach().bfloat16(), torch.tensor([0, 1, 2, 0]))
    assert half.dtype == torch.float32


@pytest.mark.parametrize("order", [0, -1, 2.5, True])
def test_taylor_rejects_a_bad_order(order):
    with pytest.raises(VipnbError, match=rf"order={order!r}.*integer >= 1"):
        taylor_cross_entropy(torch.zeros(1, 2), torch.tensor([0]), order=order)


def test_taylor_rejects_a_bad_reduction():
    with pytest.raises(VipnbError, match=r"reduction='avg'.*'mean', 'sum', 'none'"):
        taylor_cross_entropy(torch.zeros(1, 2), torch.tensor([0]), reduction="avg")


# --- Bi-tempered loss: the reference's own expected values ---------------------------------

def test_tempered_log_and_exp_are_inverse_and_reduce_to_log_exp():
    u = torch.tensor([0.1, 0.5, 1.0, 3.0])
    assert torch.allclose(log_t(u, 1.0), torch.log(u))
    assert torch.allclose(exp_t(u, 1.0), torch.exp(u))
    for t in (0.5, 1.5):
        assert torch.allclose(exp_t(log_t(u, t), t), u, atol=1e-6)
    assert log_t(torch.tensor(2.0), 0.5).item() == pytest.approx(2 * (math.sqrt(2) - 1))


def test_loss_values_of_the_reference():
    # loss_test.py test_loss_value: t1 = .5 with t2 = 1.5 (fixed point) and t2 = .8 (binary search).
    loss = bi_tempered_logistic_loss(ACTIVATIONS, SOFT_LABELS, 0.5, 1.5, reduction="none")
    assert loss.tolist() == pytest.approx([0.02301914, 0.18972909, 0.93874922], abs=1e-5)
    loss = bi_tempered_logistic_loss(ACTIVATIONS, SOFT_LABELS, 0.5, 0.8, num_iters=20,
                                     reduction="none")
    assert loss.tolist() == pytest.approx([0.21646356, 0.41836615, 1.33997854], abs=1e-5)


def test_label_smoothing_of_the_reference():
    # loss_test.py test_label_smoothing.
    loss = bi_tempered_logistic_loss(ACTIVATIONS, torch.eye(3), 0.5, 1.5, label_smoothing=0.1,
                                     reduction="none")
    assert loss.tolist() == pytest.approx([0.76652711, 0.08627685, 1.35443510], abs=1e-5)


def test_dynamic_temperatures_of_the_reference():
    # jax/loss_test.py test_dynamic_temperatures (and TF's before December 2020): at t1 = t2 = 1
    # the Bregman divergence KL(y ‖ p) = 0.628705; TF now returns the cross-entropy 1.6583576,
    # which jumps away from the t1 = .9 value. The other three are the same in every version.
    labels, activations = torch.tensor([[0.2, 0.5, 0.3]]), torch.tensor([[-0.5, 0.1, 2.0]])
    expected = [0.628705, 0.45677936, 0.34298314, 0.26295574]
    for (t1, t2), value in zip([(1.0, 1.0), (0.9, 1.1), (0.8, 1.2), (0.7, 1.3)], expected,
                                 strict=True):
        assert bi_tempered_logistic_loss(activations, labels, t1, t2).item() == pytest.approx(
            value, abs=1e-5)
    entropy = -(labels * labels.log()).sum()
    assert (1.6583576 - entropy).item() == pytest.approx(0.628705, abs=1e-5)


@pytest.mark.parametrize(("t1", "t2"), [(1.0, 1.0), (1.0, 1.2), (0.8, 1.0)])
def test_loss_is_continuous_at_temperature_one(t1, t2):
    # Soft targets: no jump as t1 and t2 approach 1 (float64: log_t near t = 1 cancels).
    labels = SOFT_LABELS.double()
    at_one = bi_tempered_logistic_loss(ACTIVATIONS.double(), labels, t1, t2, num_iters=30,
                                       reduction="none")
    near = bi_tempered_logistic_loss(ACTIVATIONS.double(), labels, t1 - 1e-6 * (t1 == 1.0),
                                     t2 + 1e-6 * (t2 == 1.0), num_iters=30, reduction="none")
    assert torch.allclose(at_one, near, atol=1e-4)


def test_tempered_softmax_of_the_reference():
    # loss_test.py test_tempered_softmax: t = 1 is softmax; t = 4 has pinned values.
    assert torch.allclose(tempered_softmax(ACTIVATIONS, 1.0), F.softmax(ACTIVATIONS, -1))
    expected = torch.tensor([[0.3205458, 0.32714278, 0.3523402],
                             [0.3430056, 0.36491093, 0.29220778],
                             [0.41369352, 0.30534995, 0.28299212]])
    assert torch.allclose(tempered_softmax(ACTIVATIONS, 4.0), expected, atol=1e-6)


def test_tempered_sigmoid_of_the_reference():
    # loss_test.py test_tempered_sigmoid: the reference's sigmoid is the softmax of (0, a).
    a = torch.tensor([0.0, 3.0, 6.0])
    pairs = torch.stack([torch.zeros(3), a], dim=1)
    assert torch.allclose(tempered_softmax(pairs, 1.0)[:, 1], torch.sigmoid(a))
    assert tempered_softmax(pairs, 4.0)[:, 1].tolist() == pytest.approx(
        [0.5, 0.58516014, 0.6421035], abs=1e-6)


def test_binary_logistic_loss_of_the_reference():
    # loss_test.py test_binary_logistic_loss: logits (0, 0) cost log 2 at t1 = t2 = 1.
    loss = bi_tempered_logistic_loss(torch.zeros(2, 2), torch.tensor([1, 0]), 1.0, 1.0,
                                     reduction="none")
    assert loss.tolist() == pytest.approx([0.69314718, 0.69314718], abs=1e-5)


@pytest.mark.parametrize("t", [0.1, 0.99, 1.01, 2.0, 4.0])
def test_tempered_softmax_rows_sum_to_one(t):
    # loss_test.py test_normalization (20 rows of 50 000 classes instead of 100, for time).
    activations = torch.randn(20, 50000, generator=torch.Generator().manual_seed(0))
    probs = tempered_softmax(activations, t, num_iters=20)
    assert (probs >= 0).all()
    assert torch.allclose(probs.sum(-1), torch.ones(20), atol=1e-5)


def test_indices_equal_one_hot_like_the_reference_sparse_loss():
    # loss_test.py test_sparse_loss.
    labels = torch.tensor([0, 2, 1, 0])
    activations = torch.cat([ACTIVATIONS, torch.tensor([[-1.5, 0.7, 5.2]])])
    assert torch.allclose(
        bi_tempered_logistic_loss(activations, labels, 0.5, 1.5, reduction="none"),
        bi_tempered_logistic_loss(activations, F.one_hot(labels, 3).float(), 0.5, 1.5,
                                  reduction="none"))


@pytest.mark.parametrize("t2", [0.8, 1.2])
def test_adding_a_constant_to_a_row_changes_nothing(t2):
    # loss_test.py test_constant_shift.
    g = torch.Generator().manual_seed(2)
    labels = torch.tensor([[0.2, 0.3, 0.5], [0.4, 0.4, 0.2], [0.7, 0.2, 0.1]])
    activations, bias = torch.randn(3, 3, generator=g), torch.randn(3, 1, generator=g)
    assert torch.allclose(
        bi_tempered_logistic_loss(activations, labels, 0.5, t2, reduction="none"),
        bi_tempered_logistic_loss(activations + bias, labels, 0.5, t2, reduction="none"),
        atol=1e-5)


# --- Bi-tempered loss: limits, gradients, dtypes -------------------------------------------

def test_t1_t2_one_is_cross_entropy_for_labels_and_kl_for_smoothed_targets():
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 1, 2, 3, 1])
    assert bi_tempered_logistic_loss(logits, labels, 1.0, 1.0).item() == pytest.approx(
        F.cross_entropy(logits, labels).item(), abs=1e-6)
    # Reference smoothing: 1 − .1 on the label, .1/3 elsewhere — torch's is 1 − .1 + .1/4.
    smoothed = F.one_hot(labels, 4).float() * (0.9 - 0.1 / 3) + 0.1 / 3
    expected = F.kl_div(F.log_softmax(logits, -1), smoothed, reduction="batchmean")
    assert bi_tempered_logistic_loss(logits, labels, 1.0, 1.0, label_smoothing=0.1).item() == (
        pytest.approx(expected.item(), abs=1e-6))


def _reference_internal_loss(activations, labels, t1, t2):
    """loss.py `_internal_bi_tempered_logistic_loss`, differentiated by autograd: an
    independent form of the same loss (t2 >= 1, where autograd through λ is right)."""
    if t2 == 1.0:
        shifted = torch.exp(activations - torch.logsumexp(activations, -1, keepdim=True))
        one_minus_t2 = 1.0
    else:
        one_minus_t2 = 1.0 - t2
        lam = _normalization_fixed_point(activations, t2, num_iters=50)
        shifted = torch.relu(1.0 + one_minus_t2 * (activations - lam))
    if t1 == 1.0:
        return ((torch.log(labels + 1e-10) - torch.log(shifted.pow(1.0 / one_minus_t2)))
                * labels).sum(-1)
    beta = 2.0 - t1
    logt_probs = (shifted.pow((1.0 - t1) / one_minus_t2) - 1.0) / (1.0 - t1)
    return ((log_t(labels, t1) - logt_probs) * labels
            - (labels.pow(beta) - shifted.pow(beta / one_minus_t2)) / beta).sum(-1)


@pytest.mark.parametrize(("t1", "t2"), [(0.5, 1.0), (1.0, 1.5), (0.5, 1.5), (1.0, 1.0)])
def test_explicit_gradient_matches_autograd_of_the_reference_form(t1, t2):
    # loss_test.py test_gradient_error, in float64 with a converged fixed point.
    labels = torch.tensor([[0.4, 0.3, 0.3], [0.8, 0.1, 0.1], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]],
                          dtype=torch.float64)
    base = torch.randn(4, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ours, theirs = base.clone().requires_grad_(), base.clone().requires_grad_()
    loss = bi_tempered_logistic_loss(ours, labels, t1, t2, num_iters=50, reduction="sum")
    reference = _reference_internal_loss(theirs, labels, t1, t2).sum()
    loss.backward()
    reference.backward()
    assert loss.item() == pytest.approx(reference.item(), abs=1e-8)
    assert torch.allclose(ours.grad, theirs.grad, atol=1e-8)


@pytest.mark.parametrize(("t1", "t2"), [(0.5, 0.8), (0.2, 0.9), (0.8, 1.3)])
def test_explicit_gradient_passes_gradcheck(t1, t2):
    # t2 < 1 included: there autograd through the binary search would be wrong.
    labels = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]], dtype=torch.float64)
    logits = torch.tensor([[-0.5, 0.1, 0.7], [0.3, 0.2, -0.4]], dtype=torch.float64,
                          requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: bi_tempered_logistic_loss(x, labels, t1, t2, num_iters=60, reduction="none"),
        (logits,), eps=1e-6, atol=1e-5)


def test_gradients_finite_and_bf16_computed_in_float32():
    logits = (torch.randn(8, 10, generator=torch.Generator().manual_seed(5)) * 5).bfloat16()
    logits.requires_grad_()
    labels = torch.arange(8)
    loss = bi_tempered_logistic_loss(logits, labels, 0.7, 1.3, label_smoothing=0.1)
    assert loss.dtype == torch.float32
    loss.backward()
    assert logits.grad.dtype == torch.bfloat16 and torch.isfinite(logits.grad.float()).all()
    assert loss.item() == pytest.approx(
        bi_tempered_logistic_loss(logits.detach().float(), labels, 0.7, 1.3,
                                  label_smoothing=0.1).item(), abs=1e-6)
    for t2 in (0.8, 1.0):
        x = torch.randn(8, 10, requires_grad=True)
        bi_tempered_logistic_loss(x, labels, 0.8, t2).backward()
        assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize(("t1", "t2", "smoothing"),
                         [(0.8, 1.2, 0.0), (0.5, 0.8, 0.1), (1.0, 1.0, 0.0), (1.0, 1.0, 0.1),
                          (0.7, 1.0, 0.0), (1.0, 1.3, 0.0)])
def test_soft_targets_get_the_gradient_of_the_formula(t1, t2, smoothing):
    # Like F.cross_entropy, soft targets are differentiated (the reference returns None).
    logits = torch.tensor([[-0.5, 0.1, 0.7], [0.3, 0.2, -0.4]], dtype=torch.float64)
    labels = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]], dtype=torch.float64,
                          requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda y: bi_tempered_logistic_loss(logits, y, t1, t2, label_smoothing=smoothing,
                                            num_iters=60, reduction="none"),
        (labels,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("t", [0.3, 0.8, 0.95])
def test_tempered_softmax_below_one_passes_gradcheck(t):
    # The binary search is flat in the logits; the gradient is the implicit one of the exact
    # normaliser (autograd through the search was about 2.5x off).
    logits = torch.randn(3, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    logits[0, 0] = -40.0  # outside the support: probability 0, gradient 0
    assert torch.autograd.gradcheck(lambda x: tempered_softmax(x, t, num_iters=60),
                                    (logits.requires_grad_(),), eps=1e-6, atol=1e-6)


def test_bi_tempered_reductions():
    per_sample = bi_tempered_logistic_loss(ACTIVATIONS, SOFT_LABELS, 0.5, 1.5, reduction="none")
    assert per_sample.shape == (3,)
    assert bi_tempered_logistic_loss(ACTIVATIONS, SOFT_LABELS, 0.5, 1.5).item() == pytest.approx(
        per_sample.mean().item())
    assert bi_tempered_logistic_loss(ACTIVATIONS, SOFT_LABELS, 0.5, 1.5,
                                     reduction="sum").item() == pytest.approx(
        per_sample.sum().item())
    with pytest.raises(VipnbError, match="reduction='batchmean'"):
        bi_tempered_logistic_loss(ACTIVATIONS, SOFT_LABELS, 0.5, 1.5, reduction="batchmean")
    with pytest.raises(VipnbError, match="label_smoothing=1.0"):
        bi_tempered_logistic_loss(ACTIVATIONS, SOFT_LABELS, 0.5, 1.5, label_smoothing=1.0)
