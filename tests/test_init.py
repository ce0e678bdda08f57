"""Xavier initialisation: the right spread on conv and linear weights, zero biases, BN kept."""

import math

import timm
import torch
from torch import nn

from vipnb.models.init import xavier_init_


def xavier_bound(fan_in: int, fan_out: int) -> float:
    return math.sqrt(6 / (fan_in + fan_out))


def test_conv_and_linear_weights_are_xavier_uniform_and_biases_zero():
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 128, kernel_size=3, bias=True)
    linear = nn.Linear(512, 256)
    conv1d, conv3d = nn.Conv1d(8, 16, 5), nn.Conv3d(4, 8, 3)
    bn = nn.BatchNorm2d(128)
    with torch.no_grad():
        bn.weight.fill_(0.3)
        bn.bias.fill_(0.7)
    model = nn.Sequential(conv, bn, nn.Flatten(), linear, conv1d, conv3d)
    assert xavier_init_(model) is model

    for layer, fan_in, fan_out in [(conv, 64 * 9, 128 * 9), (linear, 512, 256)]:
        bound = xavier_bound(fan_in, fan_out)
        weight = layer.weight
        assert weight.abs().max() <= bound
        # U(-a, a) has std a / sqrt(3) = sqrt(2 / (fan_in + fan_out)).
        assert math.isclose(weight.std().item(), bound / math.sqrt(3), rel_tol=0.02)
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
    assert conv1d.weight.abs().max() <= xavier_bound(8 * 5, 16 * 5)
    assert conv3d.weight.abs().max() <= xavier_bound(4 * 27, 8 * 27)
    assert (conv1d.bias == 0).all() and (conv3d.bias == 0).all()
    assert (bn.weight == 0.3).all() and (bn.bias == 0.7).all()


def test_works_on_a_timm_model():
    model = timm.create_model("resnet18", num_classes=10)
    bn_before = {name: p.clone() for name, p in model.named_parameters() if ".bn" in name}
    xavier_init_(model)
    stem = model.conv1.weight  # 64 x 3 x 7 x 7
    bound = xavier_bound(3 * 49, 64 * 49)
    assert stem.abs().max() <= bound
    assert math.isclose(stem.std().item(), bound / math.sqrt(3), rel_tol=0.05)
    assert model.fc.weight.abs().max() <= xavier_bound(512, 10)
    assert torch.equal(model.fc.bias, torch.zeros(10))
    for name, p in model.named_parameters():
        if name in bn_before:
            assert torch.equal(p, bn_before[name]), name
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
