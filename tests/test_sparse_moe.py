"""Sparsely-gated mixture of experts (Shazeer et al. 2017) with one gate per task (MMoE)."""

import math
import statistics

import pytest
import torch

from vipnb.errors import VipnbError
from vipnb.models.sparse_moe import (
    NoisyTopKGate,
    SparseMoE,
    cv_squared,
    importance_loss,
    load_loss,
)


def phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def random_gate(in_features=5, num_experts=4, k=2, noise=True, seed=0) -> NoisyTopKGate:
    torch.manual_seed(seed)
    gate = NoisyTopKGate(in_features, num_experts, k, noise)
    torch.nn.init.normal_(gate.w_gate.weight)
    torch.nn.init.normal_(gate.w_noise.weight)
    return gate


@pytest.mark.parametrize("num_experts", [4, 6])
@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("training", [True, False])
def test_exactly_k_experts_per_sample_and_rows_sum_to_one(num_experts, k, training):
    gate = random_gate(num_experts=num_experts, k=k).train(training)
    gates = gate(torch.randn(16, 5)).gates
    assert gates.shape == (16, num_experts)
    assert ((gates > 0).sum(dim=1) == k).all()
    torch.testing.assert_close(gates.sum(dim=1), torch.ones(16))


def test_zero_initialised_gate_routes_uniformly():
    gate = NoisyTopKGate(5, 4, k=2)
    assert not gate.w_gate.weight.any() and not gate.w_noise.weight.any()
    gates = gate.eval()(torch.randn(3, 5)).gates
    assert ((gates > 0).sum(dim=1) == 2).all()
    assert set(gates[gates > 0].tolist()) == {0.5}
    train_gates = gate.train()(torch.randn(3, 5)).gates  # the noise breaks the ties
    assert ((train_gates > 0).sum(dim=1) == 2).all()


def test_noise_only_in_training():
    gate = random_gate()
    x = torch.randn(8, 5)
    gate.eval()
    first, second = gate(x), gate(x)
    assert torch.equal(first.gates, second.gates)
    assert first.noisy_logits is None and first.noise_stddev is None
    top = first.clean_logits.topk(2, dim=1)
    torch.testing.assert_close(first.gates.gather(1, top.indices), top.values.softmax(1))
    gate.train()
    torch.manual_seed(1)
    noisy_a = gate(x)
    torch.manual_seed(2)
    noisy_b = gate(x)
    assert not torch.equal(noisy_a.gates, noisy_b.gates)
    torch.testing.assert_close(noisy_a.noise_stddev,
                               torch.nn.functional.softplus(gate.w_noise(x)) + 1e-2)


def test_noise_off_gives_the_same_gates_in_training():
    gate = random_gate(noise=False).train()
    x = torch.randn(8, 5)
    torch.manual_seed(1)
    first = gate(x)
    torch.manual_seed(2)
    assert torch.equal(first.gates, gate(x).gates) and first.noisy_logits is None


def test_importance_loss_on_planted_gates():
    balanced = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    collapsed = torch.tensor([[1.0, 0.0]] * 4)
    assert importance_loss(balanced).item() == 0.0
    # Importance = [4, 0]: mean 2, variance 4, CV² = 1.
    assert importance_loss(collapsed).item() == pytest.approx(1.0)
    planted = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.75, 0.0, 0.25]])
    # Importance = [1.75, 1.0, 0.25]: mean 1, variance (0.75² + 0 + 0.75²) / 3 = 0.375.
    assert importance_loss(planted).item() == pytest.approx(0.375)
    assert cv_squared(torch.tensor([3.0])).item() == 0.0


def hand_load_cv2(clean, noisy, stddev, k):
    """Load_i = Σ_x Φ((clean_i − kth_excluding(H, k, i)) / σ_i), written out in Python."""
    load = [0.0] * len(clean[0])
    for c_row, h_row, s_row in zip(clean, noisy, stddev, strict=True):
        for i in range(len(h_row)):
            others = sorted((h for j, h in enumerate(h_row) if j != i), reverse=True)
            load[i] += phi((c_row[i] - others[k - 1]) / s_row[i])
    return statistics.pvariance(load) / statistics.fmean(load) ** 2


def test_load_loss_matches_a_hand_computation():
    clean = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    noisy = [[2.5, 0.3, -0.2], [0.1, 1.2, 0.4]]
    stddev = [[1.0, 1.0, 1.0], [0.5, 2.0, 1.0]]
    # By hand (k = 1): Load = [Φ(1.7) + Φ(-2.4), Φ(-2.5) + Φ(0.3), Φ(-2.5) + Φ(-1.2)].
    load = [phi(1.7) + phi(-2.4), phi(-2.5) + phi(0.3), phi(-2.5) + phi(-1.2)]
    expected = statistics.pvariance(load) / statistics.fmean(load) ** 2
    assert hand_load_cv2(clean, noisy, stddev, k=1) == pytest.approx(expected)
    tensors = [torch.tensor(v, dtype=torch.float64) for v in (clean, noisy, stddev)]
    gates = torch.zeros(2, 3)
    assert load_loss(*tensors, gates, k=1).item() == pytest.approx(expected)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_load_loss_matches_the_definition_on_random_logits(k):
    torch.manual_seed(k)
    clean = torch.randn(6, 5, dtype=torch.float64)
    noisy = clean + torch.randn_like(clean)
    stddev = torch.rand_like(clean) + 0.1
    expected = hand_load_cv2(clean.tolist(), noisy.tolist(), stddev.tolist(), k)
    got = load_loss(clean, noisy, stddev, torch.zeros(6, 5), k).item()
    assert got == pytest.approx(expected)


def test_concentrated_load_costs_more_than_balanced_load():
    torch.manual_seed(0)
    stddev = torch.ones(8, 4)
    concentrated = torch.zeros(8, 4)
    concentrated[:, 0] = 5.0
    balanced = 5.0 * torch.eye(4).repeat(2, 1)
    losses = []
    for clean in (concentrated, balanced):
        noisy = clean + 0.1 * torch.randn_like(clean)
        losses.append(load_loss(clean, noisy, stddev, torch.zeros(8, 4), k=1).item())
    assert losses[0] > 1.0 and losses[1] < 1e-3


def test_load_loss_without_noise_counts_the_routed_samples():
    gates = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    # Load = [3, 1]: mean 2, variance 1, CV² = 0.25.
    assert load_loss(torch.zeros(4, 2), None, None, gates, k=1).item() == pytest.approx(0.25)


def test_every_expert_kept_or_a_single_expert_costs_nothing():
    torch.manual_seed(0)
    clean = torch.randn(4, 3)
    assert load_loss(clean, clean, torch.ones(4, 3), torch.ones(4, 3) / 3, k=3).item() == 0.0
    moe = SparseMoE(5, 3, num_experts=1, k=1).train()
    out = moe(torch.randn(4, 5))
    assert torch.equal(out.gates[0], torch.ones(4, 1)) and out.aux_loss.item() == 0.0


def test_invalid_k_is_named():
    with pytest.raises(VipnbError, match="k=3 with num_experts=2"):
        NoisyTopKGate(5, 2, k=3)
    with pytest.raises(VipnbError, match="k=0"):
        SparseMoE(5, 3, num_experts=2, k=0)


def planted_two_gate_moe() -> SparseMoE:
    """Gate 0 sends positive inputs to expert 0, gate 1 to expert 3."""
    torch.manual_seed(0)
    moe = SparseMoE(5, 3, num_experts=4, k=1, num_gates=2, hidden=6)
    with torch.no_grad():
        moe.gates[0].w_gate.weight[0] = 1.0
        moe.gates[1].w_gate.weight[3] = 1.0
    return moe


def test_each_gate_routes_independently_to_its_own_output():
    moe = planted_two_gate_moe().eval()
    x = torch.rand(4, 5) + 0.1
    out = moe(x)
    assert len(out.outputs) == len(out.gates) == 2
    assert (out.gates[0].argmax(1) == 0).all() and (out.gates[1].argmax(1) == 3).all()
    torch.testing.assert_close(out.outputs[0], moe.experts[0](x))
    torch.testing.assert_close(out.outputs[1], moe.experts[3](x))


def test_output_is_the_gate_weighted_sum_of_the_experts():
    torch.manual_seed(0)
    moe = SparseMoE(5, 3, num_experts=4, k=2, num_gates=2).eval()
    for gate in moe.gates:
        torch.nn.init.normal_(gate.w_gate.weight)
    x = torch.randn(6, 5)
    out = moe(x)
    experts = torch.stack([expert(x) for expert in moe.experts], dim=1)
    for output, gates in zip(out.outputs, out.gates, strict=True):
        torch.testing.assert_close(output, (gates.unsqueeze(-1) * experts).sum(1))


def test_gradients_reach_the_gate_through_the_kept_gates_only():
    moe = planted_two_gate_moe()
    moe.k = 2
    for gate in moe.gates:
        gate.k = 2
    moe.train()
    x = torch.rand(8, 5) + 0.1
    moe(x).outputs[0].sum().backward()  # the task loss alone, no auxiliary loss
    assert moe.gates[0].w_gate.weight.grad.abs().sum() > 0
    assert moe.gates[0].w_noise.weight.grad.abs().sum() > 0
    assert moe.gates[1].w_gate.weight.grad is None  # the other task's gate gets nothing


def test_unselected_experts_get_no_gradient():
    moe = planted_two_gate_moe().eval()
    x = torch.rand(4, 5) + 0.1
    out = moe(x)
    (out.outputs[0].sum() + out.outputs[1].sum()).backward()
    for index in (1, 2):
        assert all(not p.grad.any() for p in moe.experts[index].parameters())
    assert moe.experts[0][0].weight.grad.abs().sum() > 0


def test_auxiliary_loss_trains_the_gate_even_with_k_1():
    torch.manual_seed(0)
    moe = SparseMoE(5, 3, num_experts=4, k=1).train()
    torch.nn.init.normal_(moe.gates[0].w_gate.weight)
    out = moe(torch.randn(16, 5))
    assert out.aux_loss.item() > 0
    out.aux_loss.backward()
    assert moe.gates[0].w_gate.weight.grad.abs().sum() > 0
