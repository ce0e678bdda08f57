"""Anti-aliased ResNeSt with working stochastic depth, registered in timm as ``resnest*_aa``.

The MoE paper's backbone (§2.1) is ResNeSt with drop path and BlurPool (Zhang, "Making
Convolutional Networks Shift-Invariant Again", ICML 2019) on every spatial down-sampling.
timm's ResNeSt block refuses ``aa_layer``, so this module provides one, built on timm's ``ResNet``.
"""

from __future__ import annotations

import torch
from timm.layers import BlurPool2d
from timm.models import generate_default_cfgs, register_model
from timm.models._builder import build_model_with_cfg
from timm.models.resnest import ResNestBottleneck
from timm.models.resnet import ResNet
from torch import nn

from vipnb.models._default_cfg import untrained_cfg

__all__ = ["AntiAliasedResNestBottleneck"]


def _pool_stride(pool: nn.AvgPool2d) -> int:
    stride = pool.stride
    return stride if isinstance(stride, int) else stride[0]


class AntiAliasedResNestBottleneck(ResNestBottleneck):
    """ResNeSt bottleneck that blurs before every stride (MoE paper §2.1; BlurPool, Zhang 2019).

    The strided average pools, in the split-attention branch (``avd_first``/``avd_last``) and in
    the avg-down shortcut, become ``aa_layer`` (BlurPool2d) of the same stride. Blur-pools have no
    parameters, so weights and state-dict keys match timm's ResNeSt. As in Zhang's antialiased
    ResNets, the network's first stem convolution stays strided (timm's ``ResNet`` handles the stem).

    ``forward`` drops the residual branch; timm 1.0.31's ``ResNestBottleneck`` drops the block
    input ``x`` instead, which is a no-op without a downsample shortcut.
    """

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        aa_layer: type[nn.Module] | None = BlurPool2d,
        drop_path: nn.Module | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **kwargs,
    ) -> None:
        super().__init__(
            inplanes, planes, stride, downsample, aa_layer=None, drop_path=drop_path,
            device=device, dtype=dtype, **kwargs,
        )
        if aa_layer is None:
            return
        blur_kwargs = {"device": device, "dtype": dtype} if aa_layer is BlurPool2d else {}
        # The avd pool sits on the group-width features, before or after the 3x3 split-attention.
        for name in ("avd_first", "avd_last"):
            pool = getattr(self, name)
            if isinstance(pool, nn.AvgPool2d) and _pool_stride(pool) > 1:
                group_width = self.conv1.out_channels
                setattr(self, name, aa_layer(
                    channels=group_width, stride=_pool_stride(pool), **blur_kwargs))
        shortcut = self.downsample
        if (
            isinstance(shortcut, nn.Sequential)
            and isinstance(shortcut[0], nn.AvgPool2d)
            and _pool_stride(shortcut[0]) > 1
        ):
            shortcut[0] = aa_layer(channels=inplanes, stride=_pool_stride(shortcut[0]), **blur_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)

        out = self.act1(self.bn1(self.conv1(x)))
        if self.avd_first is not None:
            out = self.avd_first(out)
        out = self.act2(self.drop_block(self.bn2(self.conv2(out))))
        if self.avd_last is not None:
            out = self.avd_last(out)
        out = self.bn3(self.conv3(out))

        if self.drop_path is not None:
            out = self.drop_path(out)
        out += shortcut
        return self.act3(out)


def _cfg(**kwargs) -> dict:
    """timm's ResNeSt defaults, without weights."""
    return untrained_cfg("conv1.0", **kwargs)


default_cfgs = generate_default_cfgs({
    "resnest14d_aa": _cfg(),
    "resnest26d_aa": _cfg(),
    "resnest50d_aa": _cfg(),
    "resnest101e_aa": _cfg(input_size=(3, 256, 256), pool_size=(8, 8)),
    "resnest200e_aa": _cfg(input_size=(3, 320, 320), pool_size=(10, 10), crop_pct=0.909),
})


def _create_aa_resnest(
    variant: str, pretrained: bool, layers: list[int], stem_width: int, user_kwargs: dict
) -> ResNet:
    """timm's ResNeSt recipe for ``variant`` with our block and BlurPool; user kwargs win.
    ``pretrained=True`` loads what timm's ``pretrained_cfg_overlay`` names (e.g. ``dict(file=...)``);
    with nothing named timm raises its RuntimeError (no weights exist)."""
    model_kwargs = dict(
        block=AntiAliasedResNestBottleneck, layers=layers, aa_layer=BlurPool2d,
        stem_type="deep", stem_width=stem_width, avg_down=True, base_width=64, cardinality=1,
        block_args=dict(radix=2, avd=True, avd_first=False),
    )
    return build_model_with_cfg(ResNet, variant, pretrained, **{**model_kwargs, **user_kwargs})


@register_model
def resnest14d_aa(pretrained: bool = False, **kwargs) -> ResNet:
    """timm's resnest14d, anti-aliased, with working drop path."""
    return _create_aa_resnest("resnest14d_aa", pretrained, [1, 1, 1, 1], 32, kwargs)


@register_model
def resnest26d_aa(pretrained: bool = False, **kwargs) -> ResNet:
    """timm's resnest26d, anti-aliased, with working drop path."""
    return _create_aa_resnest("resnest26d_aa", pretrained, [2, 2, 2, 2], 32, kwargs)


@register_model
def resnest50d_aa(pretrained: bool = False, **kwargs) -> ResNet:
    """timm's resnest50d, anti-aliased, with working drop path."""
    return _create_aa_resnest("resnest50d_aa", pretrained, [3, 4, 6, 3], 32, kwargs)


@register_model
def resnest101e_aa(pretrained: bool = False, **kwargs) -> ResNet:
    """timm's resnest101e, anti-aliased, with working drop path."""
    return _create_aa_resnest("resnest101e_aa", pretrained, [3, 4, 23, 3], 64, kwargs)


@register_model
def resnest200e_aa(pretrained: bool = False, **kwargs) -> ResNet:
    """timm's resnest200e, anti-aliased, with working drop path."""
    return _create_aa_resnest("resnest200e_aa", pretrained, [3, 24, 36, 3], 64, kwargs)
