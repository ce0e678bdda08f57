"""DSK-net: dual selective kernel ResNeXt (VIPF paper §3.1), registered in timm.

Three ideas, each switchable so the rows of the paper's Table 1 can be built:

* **SK unit** (eq. 1): the bottleneck's 3x3 grouped convolution becomes a selective-kernel unit
  with two *depthwise* branches (3x3 and 5x5, each conv + BN + ReLU), attention from
  GAP(Û + Ũ) -> FC + BN + ReLU -> one FC per branch -> softmax over the branches, and
  V = ω̂·Û + ω̃·Ũ. This is timm's ``SelectiveKernel`` configured with ``kernel_size=[3, 5]``,
  ``keep_3x3=False`` (a true 5x5, not a dilated 3x3), ``split_input=False`` (both branches see
  all of X) and ``groups=channels`` (depthwise); its ``fc_select`` is the two per-branch FCs
  stacked into one 1x1 conv. No hand-written SK unit is needed (see :func:`dsk_selective_kernel`).
* **Three-branch residual** (eq. 2): X + λ·F(X, W1) + (1−λ)·F(X, W2), λ ∈ {0, 1} drawn once per
  block per training forward pass from torch's RNG, λ = 0.5 at inference
  (:class:`DualResidualBottleneck`, hand-written: timm has no such block).
* **Anti-aliasing** (BlurPool, Zhang 2019, 3x3 binomial filter): stem max pool -> max pool
  stride 1 + BlurPool stride 2 (timm's ``ResNet``); strided 3x3 / SK conv -> stride-1 conv + BN +
  ReLU + BlurPool (timm's ``ConvNormAct``); strided 1x1 shortcut conv (no activation) -> BlurPool
  + stride-1 conv, as in Zhang's antialiased ResNets. As there, the first 7x7 stem convolution
  stays strided; the paper does not say otherwise.

Registered models (``timm.create_model(name, ...)`` after ``import vipnb.models.dsk``):

==============================  ===========================  =========  ====  ===
name                            Table 1 row                  branches   SK    AA
==============================  ===========================  =========  ====  ===
``resnext50_32x4d_dsk``         ResNeXt50_32x4d (our block)  2 (plain)  no    yes
``d_resnext50_32x4d``           D-ResNeXt50_32x4d            3          no    yes
``sk_resnext50_32x4d_dsk``      SK-ResNeXt50_32x4d           2 (plain)  yes   yes
``sk_resnext50_32x4d_dsk_noaa`` SK-ResNeXt50 without AA      2 (plain)  yes   no
``dsk_resnext50_32x4d``         DSK-ResNeXt50_32x4d          3          yes   yes
``dsk_resnext50_32x4d_noaa``    (ablation, not in Table 1)   3          yes   no
``dsk_resnext101_32x4d``        DSK-ResNeXt101_32x4d         3          yes   yes
==============================  ===========================  =========  ====  ===

"branches" counts the identity: 2 = X + F(X), 3 = X + λF1 + (1−λ)F2. Every constructor also
takes ``aa`` (bool) to switch anti-aliasing, ``branch_mode`` (``"sample"``, the default, or
``"weighted"``: see :class:`DualResidualBottleneck`), ``layers``, ``channels``, ``stem_width``,
``cardinality``, ``base_width`` overrides (for narrow CPU variants), and timm's usual
``num_classes``, ``in_chans``, ``global_pool``, ``drop_rate``, ``drop_path_rate``,
``features_only``, ``pretrained_cfg_overlay``. The models are timm ``ResNet`` instances, so
``get_classifier``, ``reset_classifier``, ``forward_features``, ``forward_head``,
``forward_intermediates`` and ``set_grad_checkpointing`` are timm's; they script with
``torch.jit.script`` and trace with FX. The paper's ResNeXt baseline without anti-aliasing is
timm's own ``resnext50_32x4d``.

DDP: in training with the default ``branch_mode="sample"`` only the λ-selected residual function
runs, so the other one's parameters get no gradient in that step; wrap in DDP with
``find_unused_parameters=True`` (vipnb's trainer does), or create the model with
``branch_mode="weighted"`` (timm's train.py: ``--model-kwargs branch_mode=weighted``).
"""

import torch
from timm.layers import BlurPool2d, ConvNormAct, SelectiveKernel
from timm.models import generate_default_cfgs, register_model
from timm.models._builder import build_model_with_cfg
from timm.models.resnet import ResNet
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from vipnb.models._default_cfg import untrained_cfg

__all__ = ["BRANCH_MODES", "DualResidualBottleneck", "ResidualFunction", "draw_lambda",
           "dsk_selective_kernel"]


def dsk_selective_kernel(
    channels: int,
    stride: int = 1,
    dilation: int = 1,
    act_layer: type[nn.Module] = nn.ReLU,
    norm_layer: type[nn.Module] = nn.BatchNorm2d,
    aa_layer: type[nn.Module] | None = None,
    drop_layer: type[nn.Module] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> SelectiveKernel:
    """The paper's SK unit (eq. 1) as timm's ``SelectiveKernel``: depthwise 3x3 and true 5x5.

    With ``aa_layer`` and ``stride > 1`` each branch is stride-1 conv + BN + ReLU + BlurPool.
    """
    return SelectiveKernel(
        channels, channels, kernel_size=[3, 5], stride=stride, dilation=dilation,
        groups=channels, keep_3x3=False, split_input=False, act_layer=act_layer,
        norm_layer=norm_layer, aa_layer=aa_layer, drop_layer=drop_layer,
        device=device, dtype=dtype,
    )


class ResidualFunction(nn.Module):
    """One ResNeXt bottleneck residual function F(X, W): 1x1 -> 3x3 grouped (or SK) -> 1x1.

    No shortcut and no final activation; :class:`DualResidualBottleneck` adds those.
    """

    def __init__(
        self,
        inplanes: int,
        width: int,
        outplanes: int,
        stride: int = 1,
        cardinality: int = 1,
        first_dilation: int = 1,
        sk: bool = False,
        act_layer: type[nn.Module] = nn.ReLU,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
        aa_layer: type[nn.Module] | None = None,
        drop_block: type[nn.Module] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.conv1 = ConvNormAct(inplanes, width, 1, act_layer=act_layer,
                                 norm_layer=norm_layer, **dd)
        if sk:
            self.conv2 = dsk_selective_kernel(
                width, stride=stride, dilation=first_dilation, act_layer=act_layer,
                norm_layer=norm_layer, aa_layer=aa_layer, drop_layer=drop_block, **dd)
        else:
            self.conv2 = ConvNormAct(
                width, width, 3, stride=stride, dilation=first_dilation, groups=cardinality,
                act_layer=act_layer, norm_layer=norm_layer, aa_layer=aa_layer,
                drop_layer=drop_block, **dd)
        self.conv3 = ConvNormAct(width, outplanes, 1, apply_act=False, norm_layer=norm_layer, **dd)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2(self.conv1(x)))


def _anti_alias_shortcut(
    downsample: nn.Module | None, aa_layer: type[nn.Module], dd: dict
) -> nn.Module | None:
    """Strided shortcut (timm's conv or avg-down) -> BlurPool(stride) + stride-1 ops (Zhang 2019)."""
    if not isinstance(downsample, nn.Sequential):
        return downsample
    layers: list[nn.Module] = []
    for m in downsample:
        if isinstance(m, nn.Conv2d) and max(m.stride) > 1:
            layers.append(aa_layer(channels=m.in_channels, stride=m.stride[0], **dd))
            m.stride = (1, 1)
            layers.append(m)
        elif isinstance(m, nn.AvgPool2d) and m.stride not in (1, (1, 1)):
            stride = m.stride if isinstance(m.stride, int) else m.stride[0]
            nxt = next(c for c in downsample if isinstance(c, nn.Conv2d))
            layers.append(aa_layer(channels=nxt.in_channels, stride=stride, **dd))
        else:
            layers.append(m)
    return nn.Sequential(*layers)


BRANCH_MODES = ("sample", "weighted")


@torch.fx.wrap
def draw_lambda(x: torch.Tensor) -> torch.Tensor:
    """λ ∈ {0, 1} of eq. 2 for one training pass: a 0-d int64 tensor from torch's global CPU RNG.

    ``x`` is unused; as an argument it makes FX record the call (``torch.fx.wrap``), so a traced
    graph draws λ each time it runs instead of freezing the value drawn while tracing.
    """
    return torch.randint(2, [])


def _fx_tracing() -> bool:
    """Whether FX is tracing (never under TorchScript, which cannot compile FX's check)."""
    if torch.jit.is_scripting():
        return False
    return is_fx_symbolic_tracing()


class DualResidualBottleneck(nn.Module):
    """Residual block X + λ·F(X, W1) + (1−λ)·F(X, W2), then ReLU (VIPF paper eq. 2).

    ``num_functions=2`` gives the paper's three-branch block: in training λ ∈ {0, 1} is drawn
    once per block and forward pass (:func:`draw_lambda`); in eval λ = 0.5. ``branch_mode``
    says how training computes eq. 2 (both modes draw the same λ and give the same outputs and
    gradients; the unselected function's gradient is none or zero):

    * ``"sample"`` (default): only the λ-selected function runs; the other one's parameters get
      no gradient that step, so DDP needs ``find_unused_parameters=True``.
    * ``"weighted"``: both functions run and are weighted by λ, so every parameter gets a
      gradient (zero for the unselected function): DDP without ``find_unused_parameters``,
      timm's backward test. Costs 1.9x the forward+backward time of ``"sample"``
      (``dsk_resnext50_32x4d``, 64 and 96 px, batch 2, one CPU thread; 1.45x for a narrow
      CPU variant, where the stem weighs more). Differs in training only in that the
      unselected function's BatchNorm running statistics are updated too, and optimizers apply
      momentum and weight decay to its zero gradient where ``"sample"`` leaves it untouched.

    An FX graph traced in training mode draws λ at run time and computes eq. 2 as
    ``"weighted"`` does (a graph cannot branch on a run-time value). ``last_lambda`` records
    the last λ (eager and TorchScript). ``num_functions=1`` is a plain ResNeXt/SK bottleneck
    X + F(X).
    ``sk=True`` replaces each function's 3x3 grouped conv by the SK unit (eq. 1). A drop-in
    block for timm's ``ResNet`` (same constructor arguments as timm's ``Bottleneck``).
    """

    expansion = 4
    # Read by vipnb's trainer: DDP must look for parameters without a gradient ("sample").
    leaves_parameters_unused = True
    last_lambda: float | None  # evaluated (no __future__ annotations): TorchScript reads it

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        cardinality: int = 1,
        base_width: int = 64,
        reduce_first: int = 1,
        dilation: int = 1,
        first_dilation: int | None = None,
        act_layer: type[nn.Module] = nn.ReLU,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
        attn_layer: type[nn.Module] | None = None,
        aa_layer: type[nn.Module] | None = None,
        drop_block: type[nn.Module] | None = None,
        drop_path: nn.Module | None = None,
        *,
        num_functions: int = 2,
        sk: bool = True,
        branch_mode: str = "sample",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if num_functions not in (1, 2):
            raise ValueError(f"num_functions must be 1 or 2, got {num_functions}")
        if branch_mode not in BRANCH_MODES:
            raise ValueError(f"branch_mode must be one of {BRANCH_MODES}, got {branch_mode!r}")
        if attn_layer is not None:
            raise ValueError("DualResidualBottleneck does not take attn_layer")
        dd = {"device": device, "dtype": dtype}
        width = int(planes * (base_width / 64)) * cardinality
        outplanes = planes * self.expansion
        self.functions = nn.ModuleList([
            ResidualFunction(
                inplanes, width, outplanes, stride=stride, cardinality=cardinality,
                first_dilation=first_dilation or dilation, sk=sk, act_layer=act_layer,
                norm_layer=norm_layer, aa_layer=aa_layer, drop_block=drop_block, **dd)
            for _ in range(num_functions)
        ])
        self.downsample = (
            _anti_alias_shortcut(downsample, aa_layer, dd) if aa_layer is not None else downsample)
        self.drop_path = drop_path
        self.act = act_layer(inplace=True)
        self.branch_mode = branch_mode
        self.last_lambda = None

    def zero_init_last(self) -> None:
        for f in self.functions:
            f.zero_init_last()

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """λ·F1 + (1−λ)·F2 (eq. 2); λ random in {0, 1} in training, 0.5 in eval."""
        if len(self.functions) == 1:
            return self._function(x, 0)
        if not self.training:
            self.last_lambda = 0.5
            return 0.5 * self._function(x, 0) + 0.5 * self._function(x, 1)
        lam = draw_lambda(x)
        if _fx_tracing():  # a graph cannot branch on a λ drawn at run time
            return self._weighted(x, lam)
        chosen = float(lam.item())
        self.last_lambda = chosen
        if self.branch_mode == "weighted":
            return self._weighted(x, lam)
        return self._function(x, 0 if chosen == 1.0 else 1)

    def _weighted(self, x: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """λ·F1 + (1−λ)·F2 with both functions computed (eq. 2)."""
        return lam * self._function(x, 0) + (1 - lam) * self._function(x, 1)

    def _function(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """F(x, W_{index+1}) of eq. 2; a loop: TorchScript indexes a ModuleList by literals only."""
        for i, f in enumerate(self.functions):
            if i == index:
                return f(x)
        raise IndexError(f"no residual function {index}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ReLU(shortcut + drop_path(residual)) (eq. 2)."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.residual(x)
        if self.drop_path is not None:
            out = self.drop_path(out)
        return self.act(out + shortcut)


def _cfg(**kwargs) -> dict:
    """timm's ResNeXt defaults, without weights."""
    return untrained_cfg("conv1", **kwargs)


_VARIANTS: dict[str, dict] = {
    # name: (layers, residual functions, SK, anti-aliasing)
    "resnext50_32x4d_dsk": dict(layers=(3, 4, 6, 3), num_functions=1, sk=False, aa=True),
    "d_resnext50_32x4d": dict(layers=(3, 4, 6, 3), num_functions=2, sk=False, aa=True),
    "sk_resnext50_32x4d_dsk": dict(layers=(3, 4, 6, 3), num_functions=1, sk=True, aa=True),
    "sk_resnext50_32x4d_dsk_noaa": dict(layers=(3, 4, 6, 3), num_functions=1, sk=True, aa=False),
    "dsk_resnext50_32x4d": dict(layers=(3, 4, 6, 3), num_functions=2, sk=True, aa=True),
    "dsk_resnext50_32x4d_noaa": dict(layers=(3, 4, 6, 3), num_functions=2, sk=True, aa=False),
    "dsk_resnext101_32x4d": dict(layers=(3, 4, 23, 3), num_functions=2, sk=True, aa=True),
}

default_cfgs = generate_default_cfgs({name: _cfg() for name in _VARIANTS})


def _create_dsk(variant: str, pretrained: bool, user_kwargs: dict) -> ResNet:
    """Build ``variant`` on timm's ``ResNet`` with :class:`DualResidualBottleneck` (eq. 1-2);
    user kwargs win. ``pretrained=True`` loads what timm's ``pretrained_cfg_overlay`` names
    (e.g. ``dict(file=...)``); with nothing named timm raises its RuntimeError (no weights exist)."""
    spec = dict(_VARIANTS[variant])
    kwargs = dict(user_kwargs)
    aa = kwargs.pop("aa", spec["aa"])
    block_args = {"num_functions": spec["num_functions"], "sk": spec["sk"],
                  "branch_mode": kwargs.pop("branch_mode", "sample"),
                  **kwargs.pop("block_args", {})}
    model_kwargs = dict(
        block=DualResidualBottleneck, layers=spec["layers"], cardinality=32, base_width=4,
        aa_layer=BlurPool2d if aa else None, block_args=block_args,
    )
    return build_model_with_cfg(ResNet, variant, pretrained, **{**model_kwargs, **kwargs})


@register_model
def resnext50_32x4d_dsk(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNeXt50_32x4d with this module's block and anti-aliasing (Table 1 baseline row)."""
    return _create_dsk("resnext50_32x4d_dsk", pretrained, kwargs)


@register_model
def d_resnext50_32x4d(pretrained: bool = False, **kwargs) -> ResNet:
    """D-ResNeXt50_32x4d: three-branch residual (eq. 2), grouped 3x3, anti-aliased."""
    return _create_dsk("d_resnext50_32x4d", pretrained, kwargs)


@register_model
def sk_resnext50_32x4d_dsk(pretrained: bool = False, **kwargs) -> ResNet:
    """SK-ResNeXt50_32x4d: the paper's depthwise SK unit (eq. 1), plain residual, anti-aliased."""
    return _create_dsk("sk_resnext50_32x4d_dsk", pretrained, kwargs)


@register_model
def sk_resnext50_32x4d_dsk_noaa(pretrained: bool = False, **kwargs) -> ResNet:
    """SK-ResNeXt50_32x4d without anti-aliasing (Table 1)."""
    return _create_dsk("sk_resnext50_32x4d_dsk_noaa", pretrained, kwargs)


@register_model
def dsk_resnext50_32x4d(pretrained: bool = False, **kwargs) -> ResNet:
    """DSK-ResNeXt50_32x4d: three branches (eq. 2) + SK unit (eq. 1) + anti-aliasing."""
    return _create_dsk("dsk_resnext50_32x4d", pretrained, kwargs)


@register_model
def dsk_resnext50_32x4d_noaa(pretrained: bool = False, **kwargs) -> ResNet:
    """DSK-ResNeXt50_32x4d without anti-aliasing (ablation)."""
    return _create_dsk("dsk_resnext50_32x4d_noaa", pretrained, kwargs)


@register_model
def dsk_resnext101_32x4d(pretrained: bool = False, **kwargs) -> ResNet:
    """DSK-ResNeXt101_32x4d: three branches + SK unit + anti-aliasing."""
    return _create_dsk("dsk_resnext101_32x4d", pretrained, kwargs)
