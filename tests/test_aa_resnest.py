"""The anti-aliased ResNeSt backbone (MoE paper §2.1): registration, BlurPool placement, drop path
on the residual branch, and weight-layout parity with timm's ResNeSt."""

import pytest
import timm
import torch
from timm.layers import BlurPool2d, DropPath
from timm.models.resnet import downsample_avg
from torch import nn

import vipnb  # noqa: F401  (registers the resnest*_aa models)
from vipnb.models.aa_resnest import AntiAliasedResNestBottleneck

AA_TO_TIMM = {
    "resnest14d_aa": "resnest14d",
    "resnest26d_aa": "resnest26d",
    "resnest50d_aa": "resnest50d",
    "resnest101e_aa": "resnest101e",
    "resnest200e_aa": "resnest200e",
}
NARROW = dict(channels=(8, 16, 32, 64), stem_width=8)


def test_import_vipnb_registers_every_variant_without_weights():
    assert set(timm.list_models("resnest*_aa")) == set(AA_TO_TIMM)
    assert timm.list_pretrained("resnest*_aa") == []
    assert timm.models.get_pretrained_cfg("resnest50d_aa").interpolation == "bilinear"


@pytest.mark.parametrize("name", sorted(AA_TO_TIMM))
def test_weights_layout_matches_timm_resnest(name):
    """Same layers and stem as timm's model; BlurPool adds no parameters or state-dict keys."""
    with torch.device("meta"):
        ours = timm.create_model(name)
        theirs = timm.create_model(AA_TO_TIMM[name])
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


@pytest.mark.parametrize("channels", [(16, 32, 64, 128), [16, 32, 64, 128]])
def test_user_kwargs_override_defaults(channels):
    model = timm.create_model(
        "resnest14d_aa", num_classes=10, channels=channels, stem_width=16, drop_path_rate=0.2
    )
    assert model.num_features == 128 * 4
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_every_downsampling_is_blurred():
    model = timm.create_model("resnest50d_aa", num_classes=3, **NARROW)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)

    strided_pools = [
        name for name, m in model.named_modules()
        if isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)) and m.stride not in (1, (1, 1))
    ]
    assert strided_pools == []
    blurred = {name for name, m in model.named_modules() if isinstance(m, BlurPool2d)}
    stages = ("layer2", "layer3", "layer4")
    assert blurred == {"maxpool.1"} | {f"{s}.0.avd_last" for s in stages} | {
        f"{s}.0.downsample.0" for s in stages
    }
    assert model.conv1[0].stride == (2, 2)  # first stem conv stays strided, as in Zhang 2019


def test_avd_first_is_blurred_too():
    block = AntiAliasedResNestBottleneck(16, 4, stride=2, radix=2, avd=True, avd_first=True)
    assert isinstance(block.avd_first, BlurPool2d) and block.avd_last is None
    assert block.avd_first.channels == 4 and block.avd_first.stride == 2


@pytest.mark.parametrize("stride", [1, 2])
def test_drop_path_drops_the_residual_branch(stride):
    """With every sample's branch dropped, the block output is act(shortcut)."""
    downsample = downsample_avg(16, 16, kernel_size=1, stride=2) if stride == 2 else None
    block = AntiAliasedResNestBottleneck(
        16, 4, stride, downsample, radix=2, avd=True, drop_path=DropPath(1.0)
    ).train()
    x = torch.randn(4, 16, 8, 8)
    shortcut = x if downsample is None else block.downsample(x)
    assert torch.equal(block(x.clone()), torch.relu(shortcut))
    if stride == 2:
        assert isinstance(block.downsample[0], BlurPool2d)


def test_eval_is_deterministic_despite_drop_path():
    model = timm.create_model("resnest14d_aa", num_classes=5, drop_path_rate=0.9, **NARROW)
    assert any(isinstance(m, DropPath) for m in model.modules())
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_pretrained_loads_own_weights_through_timm(tmp_path):
    """No weights are published: timm's RuntimeError; a local file loads as timm loads one."""
    with pytest.raises(RuntimeError, match="No pretrained weights exist"):
        timm.create_model("resnest14d_aa", pretrained=True, **NARROW)
    model = timm.create_model("resnest14d_aa", num_classes=5, **NARROW)
    torch.save(model.state_dict(), tmp_path / "aa.pth")
    loaded = timm.create_model(
        "resnest14d_aa", num_classes=5, pretrained=True,
        pretrained_cfg_overlay=dict(file=str(tmp_path / "aa.pth"), num_classes=5), **NARROW)
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
