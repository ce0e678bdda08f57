"""DSK-net (VIPF paper §3.1): SK unit (eq. 1), three-branch residual (eq. 2), anti-aliasing."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.layers import BlurPool2d, SelectiveKernel
from torch import nn
from torch.nn import functional as F

from vipnb.models import dsk
from vipnb.models.dsk import DualResidualBottleneck, draw_lambda, dsk_selective_kernel

NAMES = [
    "resnext50_32x4d_dsk", "d_resnext50_32x4d", "sk_resnext50_32x4d_dsk",
    "sk_resnext50_32x4d_dsk_noaa", "dsk_resnext50_32x4d", "dsk_resnext50_32x4d_noaa",
    "dsk_resnext101_32x4d",
]
AA_NAMES = [n for n in NAMES if not n.endswith("_noaa")]
NARROW = dict(channels=(16, 32, 64, 128), stem_width=16, cardinality=4, layers=(1, 2, 1, 1))


def _narrow(name: str, **kwargs) -> nn.Module:
    return timm.create_model(name, num_classes=7, **{**NARROW, **kwargs})


def _randomize_bn(module: nn.Module, gen: torch.Generator) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def test_sk_unit_is_the_papers_configuration():
    sk = dsk_selective_kernel(16)
    assert isinstance(sk, SelectiveKernel)
    assert not sk.split_input
    k3, k5 = (p.conv for p in sk.paths)
    assert (k3.kernel_size, k5.kernel_size) == ((3, 3), (5, 5))
    assert k3.dilation == k5.dilation == (1, 1)
    for conv in (k3, k5):  # depthwise over all input channels
        assert conv.groups == conv.in_channels == conv.out_channels == 16


def test_sk_unit_matches_equation_1_by_hand():
    gen = torch.Generator().manual_seed(0)
    sk = dsk_selective_kernel(16)
    _randomize_bn(sk, gen)
    with torch.no_grad():
        for p in sk.parameters():
            if p.dim() == 4:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    sk.eval()
    x = torch.randn(3, 16, 9, 9, generator=gen)
    with torch.no_grad():
        u_hat, u_tilde = sk.paths[0](x), sk.paths[1](x)
        # attention by hand: GAP(U) -> FC -> BN -> ReLU -> one FC per branch -> softmax
        s = (u_hat + u_tilde).mean((2, 3))
        bn = sk.attn.bn
        z = s @ sk.attn.fc_reduce.weight[:, :, 0, 0].T
        z = (z - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        z = z.relu()
        w_sel = sk.attn.fc_select.weight[:, :, 0, 0]
        logits = torch.stack([z @ w_sel[:16].T, z @ w_sel[16:].T], dim=1)  # [B, 2, C]
        w = logits.softmax(dim=1)
        expected = w[:, 0, :, None, None] * u_hat + w[:, 1, :, None, None] * u_tilde
        attn = sk.attn(torch.stack([u_hat, u_tilde], dim=1))
        out = sk(x)
    torch.testing.assert_close(attn.sum(1), torch.ones_like(attn.sum(1)))
    torch.testing.assert_close(attn[:, :, :, 0, 0], w)
    assert not torch.allclose(w[:, 0], w[:, 1])  # the weights really differ per channel
    torch.testing.assert_close(out, expected)


def _block(**kwargs) -> DualResidualBottleneck:
    torch.manual_seed(1)
    block = DualResidualBottleneck(32, 8, cardinality=4, base_width=16, **kwargs)
    _randomize_bn(block, torch.Generator().manual_seed(2))
    return block


@pytest.mark.parametrize("sk", [False, True])
def test_three_branch_block_eval_is_half_and_half(sk):
    block = _block(sk=sk).eval()
    x = torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        f1, f2 = (f(x) for f in block.functions)
        out = block(x)
    assert not torch.allclose(f1, f2)
    torch.testing.assert_close(out, F.relu(x + 0.5 * f1 + 0.5 * f2))
    assert block.last_lambda == 0.5


@pytest.mark.parametrize("sk", [False, True])
def test_three_branch_block_training_picks_one_function(sk):
    block = _block(sk=sk).train()
    x = torch.randn(2, 32, 8, 8)
    seen = set()
    for seed in range(8):
        torch.manual_seed(seed)
        lam = int(torch.randint(2, ()).item())
        torch.manual_seed(seed)
        with torch.no_grad():
            out = block(x)
            f1, f2 = (f(x) for f in block.functions)  # batch-stat BN: same outputs again
        assert block.last_lambda == lam
        chosen, other = (f1, f2) if lam == 1 else (f2, f1)
        torch.testing.assert_close(out, F.relu(x + chosen))
        assert not torch.allclose(out, F.relu(x + other))
        seen.add(lam)
    assert seen == {0, 1}


def test_lambda_is_one_draw_from_torchs_global_rng():
    torch.manual_seed(5)
    expected = [int(torch.randint(2, ()).item()) for _ in range(6)]
    torch.manual_seed(5)
    assert [int(draw_lambda(torch.empty(0))) for _ in range(6)] == expected


@pytest.mark.parametrize("sk", [False, True])
def test_weighted_mode_gives_the_sampled_outputs_and_every_gradient(sk):
    """branch_mode="weighted" computes λ·F1 + (1−λ)·F2 with both functions (eq. 2): same λ,
    same output, same gradient on the chosen function, zero (not none) on the other."""
    x = torch.randn(2, 32, 8, 8)
    sampled, weighted = _block(sk=sk).train(), _block(sk=sk, branch_mode="weighted").train()
    for seed in range(4):
        outs = []
        for block in (sampled, weighted):
            block.zero_grad(set_to_none=True)
            torch.manual_seed(seed)
            out = block(x)
            out.square().sum().backward()
            outs.append(out)
        torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)
        assert weighted.last_lambda == sampled.last_lambda
        chosen = 0 if sampled.last_lambda == 1 else 1
        for p, q in zip(sampled.functions[chosen].parameters(),
                        weighted.functions[chosen].parameters(), strict=True):
            torch.testing.assert_close(q.grad, p.grad)
        assert all(p.grad is None for p in sampled.functions[1 - chosen].parameters())
        assert all(torch.count_nonzero(p.grad) == 0
                   for p in weighted.functions[1 - chosen].parameters())


@pytest.mark.parametrize("branch_mode", ["sample", "weighted"])
def test_ddp_as_timm_wraps_it_needs_the_weighted_mode(branch_mode, tmp_path):
    """timm's train.py wraps in DDP without find_unused_parameters: the sampled block fails
    its second step there ("Expected to have finished reduction"), the weighted one trains."""
    dist = torch.distributed
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(_narrow("dsk_resnext50_32x4d",
                                                          branch_mode=branch_mode))

        def train(steps: int) -> None:
            for seed in range(steps):
                torch.manual_seed(seed)
                ddp(torch.randn(2, 3, 32, 32)).sum().backward()

        if branch_mode == "sample":
            with pytest.raises(RuntimeError, match="finished reduction"):
                train(2)
        else:
            train(4)
    finally:
        dist.destroy_process_group()


def test_unknown_branch_mode_is_refused():
    with pytest.raises(ValueError, match="branch_mode"):
        _narrow("dsk_resnext50_32x4d", branch_mode="mean")


@pytest.mark.parametrize("branch_mode", ["sample", "weighted"])
def test_scripted_block_draws_like_the_eager_one(branch_mode):
    block = _block(sk=True, branch_mode=branch_mode).train()
    scripted = torch.jit.script(block)
    x = torch.randn(2, 32, 8, 8)
    for seed in range(4):
        torch.manual_seed(seed)
        with torch.no_grad():
            expected = block(x)
        torch.manual_seed(seed)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), expected)
        assert scripted.last_lambda == block.last_lambda
    scripted.eval()
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), block.eval()(x))


def test_fx_graph_traced_in_training_draws_lambda_when_it_runs():
    block = _block(sk=False).train()
    graph = torch.fx.symbolic_trace(block)
    assert any(n.target is draw_lambda for n in graph.graph.nodes)
    x = torch.randn(2, 32, 8, 8)
    outs = set()
    for seed in range(6):
        torch.manual_seed(seed)
        with torch.no_grad():
            out = graph(x)
        torch.manual_seed(seed)
        with torch.no_grad():
            torch.testing.assert_close(out, block(x))
        outs.add(out.sum().item())
    assert len(outs) == 2  # both functions were picked, at run time


def test_training_step_updates_only_the_chosen_function():
    block = _block(sk=True).train()
    torch.manual_seed(3)
    lam = int(torch.randint(2, ()).item())
    torch.manual_seed(3)
    block(torch.randn(2, 32, 8, 8)).sum().backward()
    chosen, other = (0, 1) if lam == 1 else (1, 0)
    assert all(p.grad is not None for p in block.functions[chosen].parameters())
    assert all(p.grad is None for p in block.functions[other].parameters())


def test_all_names_registered():
    registered = set(timm.list_models())
    assert set(NAMES) <= registered
    assert set(NAMES) == set(dsk._VARIANTS)


@pytest.mark.parametrize("name", NAMES)
def test_models_build_and_classify(name):
    model = _narrow(name, drop_rate=0.2, drop_path_rate=0.1)
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 7)
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 512, 1, 1)
        assert model.forward_head(feats).shape == (2, 7)
    assert model.get_classifier().out_features == 7
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    assert any(getattr(b, "drop_path", None) is not None for b in model.modules()
               if isinstance(b, DualResidualBottleneck))


def test_in_chans_and_global_pool():
    model = _narrow("dsk_resnext50_32x4d", in_chans=1, global_pool="max")
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)


def test_variant_structure():
    blocks = lambda m: [b for b in m.modules() if isinstance(b, DualResidualBottleneck)]  # noqa: E731
    for name, n_fn, sk in [("dsk_resnext50_32x4d", 2, True), ("d_resnext50_32x4d", 2, False),
                           ("sk_resnext50_32x4d_dsk", 1, True), ("resnext50_32x4d_dsk", 1, False)]:
        model = _narrow(name)
        for b in blocks(model):
            assert len(b.functions) == n_fn
            assert all(isinstance(f.conv2, SelectiveKernel) == sk for f in b.functions)


def _stride(m: nn.Module) -> int:
    s = m.stride
    return s if isinstance(s, int) else max(s)


@pytest.mark.parametrize("name", AA_NAMES)
def test_anti_aliased_models_blur_every_downsampling(name):
    model = _narrow(name)
    blurs = [m for m in model.modules() if isinstance(m, BlurPool2d)]
    assert blurs and all(b.filt_size == 3 and b.stride == 2 for b in blurs)
    for mod_name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)) and _stride(m) > 1:
            assert mod_name == "conv1", f"{mod_name} is strided"  # Zhang keeps the 7x7 stem strided
    # stem max pool -> max pool stride 1 + BlurPool
    assert isinstance(model.maxpool[0], nn.MaxPool2d) and _stride(model.maxpool[0]) == 1
    assert isinstance(model.maxpool[1], BlurPool2d)
    # every down-sampling block: each residual function's 3x3 / SK branch and the shortcut blur
    for stage in (model.layer2, model.layer3, model.layer4):
        first = stage[0]
        assert isinstance(first.downsample[0], BlurPool2d)
        for f in first.functions:
            paths = f.conv2.paths if isinstance(f.conv2, SelectiveKernel) else [f.conv2]
            assert all(isinstance(p.aa, BlurPool2d) for p in paths)
    # total down-sampling is still 32x
    assert model.forward_features(torch.randn(2, 3, 64, 64)).shape[-2:] == (2, 2)


@pytest.mark.parametrize("name", ["dsk_resnext50_32x4d_noaa", "sk_resnext50_32x4d_dsk_noaa"])
def test_no_aa_variants_have_no_blur(name):
    model = _narrow(name)
    assert not any(isinstance(m, BlurPool2d) for m in model.modules())
    assert _stride(model.maxpool) == 2
    assert model.forward_features(torch.randn(2, 3, 64, 64)).shape[-2:] == (2, 2)


def test_aa_kwarg_switches_anti_aliasing():
    off = _narrow("dsk_resnext50_32x4d", aa=False)
    on = _narrow("dsk_resnext50_32x4d_noaa", aa=True)
    assert not any(isinstance(m, BlurPool2d) for m in off.modules())
    assert any(isinstance(m, BlurPool2d) for m in on.modules())


def test_parameter_counts_full_size():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    base = count(timm.create_model("resnext50_32x4d"))
    ours_plain = count(timm.create_model("resnext50_32x4d_dsk"))
    dsk50 = count(timm.create_model("dsk_resnext50_32x4d"))
    d50 = count(timm.create_model("d_resnext50_32x4d"))
    sk50 = count(timm.create_model("sk_resnext50_32x4d_dsk"))
    print(f"timm resnext50_32x4d {base / 1e6:.2f}M, resnext50_32x4d_dsk {ours_plain / 1e6:.2f}M, "
          f"d_resnext50 {d50 / 1e6:.2f}M, sk_resnext50_dsk {sk50 / 1e6:.2f}M, "
          f"dsk_resnext50 {dsk50 / 1e6:.2f}M")
    assert ours_plain == base  # our block without SK / 3 branches is exactly timm's ResNeXt
    assert 0.95 * base < sk50 < 1.05 * base  # depthwise SK costs about what grouped 3x3 did
    assert 1.6 * base < dsk50 < 1.9 * base  # two residual functions, one stem and head
    assert 1.6 * base < d50 < 1.9 * base


def test_pretrained_loads_own_weights_through_timm(tmp_path):
    """No weights are published (VIPriors trains from scratch): timm's RuntimeError; a local
    file loads through timm's ``pretrained_cfg_overlay``."""
    with pytest.raises(RuntimeError, match="No pretrained weights exist"):
        _narrow("dsk_resnext50_32x4d", pretrained=True)
    model = _narrow("dsk_resnext50_32x4d")
    torch.save(model.state_dict(), tmp_path / "dsk.pth")
    loaded = _narrow("dsk_resnext50_32x4d", pretrained=True,
                     pretrained_cfg_overlay=dict(file=str(tmp_path / "dsk.pth"), num_classes=7))
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
