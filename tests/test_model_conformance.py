"""timm's per-model checks (its tests/test_models.py) over every model vipnb registers.

Each check follows timm's: default config complete and consistent, forward, backward with a
gradient for every parameter, ``num_classes=0`` and ``reset_classifier``,
``forward_features``/``forward_head``, ``features_only`` and ``feature_info``,
``forward_intermediates``, TorchScript, FX (torchvision's feature extraction, train and eval),
grad checkpointing, drop rates, and a checkpoint round trip through timm's
``pretrained_cfg_overlay=dict(file=...)``. To fit 2 CPU cores, inputs are 32-64 px and the
ResNet-family models are built narrow and shallow through their own kwargs (same blocks, stem
and flags); the ``*_quarter`` models are small already and keep their defaults. The three-branch
DSK models run the backward checks with ``branch_mode="weighted"``: with the default
``"sample"`` one residual function per block gets no gradient in a step (by design, eq. 2).
"""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models import model_entrypoint
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import vipnb  # noqa: F401  (registers the models)

NAMES = sorted(n for n in timm.list_models()
               if model_entrypoint(n).__module__.startswith("vipnb.models."))
SMALL = {
    "vipnb.models.dsk": dict(channels=(16, 32, 64, 128), stem_width=16, cardinality=4,
                             layers=(1, 2, 1, 1)),
    "vipnb.models.aa_resnest": dict(channels=(8, 16, 32, 64), stem_width=8, layers=(1, 2, 1, 1)),
    "vipnb.models.scaled": {},
}
BATCH, SIZE = 2, 32


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: a second thread waits more than it computes on busy cores (100x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _kwargs(name: str, **kwargs) -> dict:
    return {**SMALL[model_entrypoint(name).__module__], **kwargs}


def _create(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, **_kwargs(name, **kwargs))


def _all_gradient(name: str) -> dict:
    """kwargs under which every parameter gets a gradient in each training step (DSK: eq. 2
    with both residual functions computed; all DSK models accept it)."""
    return {"branch_mode": "weighted"} if model_entrypoint(name).__module__.endswith(".dsk") else {}


def _live_residuals(model: torch.nn.Module) -> torch.nn.Module:
    """BatchNorm weights drawn in [0.5, 1.5): timm zero-initialises each residual branch's last
    BN, which would hide which of DSK's functions ran (and a λ frozen by tracing)."""
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
    return model


def _x(size: int = SIZE) -> torch.Tensor:
    return torch.randn(BATCH, 3, size, size, generator=torch.Generator().manual_seed(1))


def _assert_every_parameter_has_a_gradient(model: torch.nn.Module) -> None:
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"


def test_every_vipnb_model_is_checked():
    assert len(NAMES) == 22
    assert {model_entrypoint(n).__module__ for n in NAMES} == set(SMALL)


@pytest.mark.parametrize("name", NAMES)
def test_default_cfg_is_complete_and_matches_the_model(name):
    model = _create(name).eval()
    cfg = model.pretrained_cfg
    for key in ("url", "num_classes", "input_size", "pool_size", "crop_pct", "interpolation",
                "mean", "std", "first_conv", "classifier"):
        assert cfg.get(key) is not None, f"{name}: default cfg lacks {key}"
    state = model.state_dict()
    assert f"{cfg['first_conv']}.weight" in state and f"{cfg['classifier']}.weight" in state
    reduction = model.feature_info[-1]["reduction"]
    assert tuple(cfg["pool_size"]) == tuple(s // reduction for s in cfg["input_size"][1:])
    with torch.no_grad():
        assert model.forward_features(_x(64)).shape[-2:] == (64 // reduction,) * 2
        model.reset_classifier(0, "")  # no pooling: the unpooled map
        assert model(_x(64)).shape[-2:] == (64 // reduction,) * 2
        unpooled = _create(name, num_classes=0, global_pool="").eval()
        assert unpooled(_x(64)).dim() == 4


@pytest.mark.parametrize("name", NAMES)
def test_forward(name):
    model = _create(name).eval()
    with torch.no_grad():
        out = model(_x())
    assert out.shape == (BATCH, 1000) and not out.isnan().any()


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_every_parameter(name):
    model = _create(name, num_classes=42, **_all_gradient(name)).train()
    out = model(_x())
    out.mean().backward()
    assert out.shape == (BATCH, 42) and not out.isnan().any()
    _assert_every_parameter_has_a_gradient(model)


@pytest.mark.parametrize("name", NAMES)
def test_classifier_removal_and_reset(name):
    x = _x()
    model = _create(name, num_classes=0).eval()
    with torch.no_grad():
        assert model(x).shape == (BATCH, model.num_features)
        model.reset_classifier(5)
        assert model(x).shape == (BATCH, 5)
        assert model.get_classifier().out_features == 5
        model.reset_classifier(0)
        assert model(x).shape == (BATCH, model.num_features)


@pytest.mark.parametrize("name", NAMES)
def test_forward_features_then_head_is_forward(name):
    model = _create(name, num_classes=7).eval()
    x = _x()
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape[1] == model.num_features
        torch.testing.assert_close(model.forward_head(features), model(x))
        assert model.forward_head(features, pre_logits=True).shape == (BATCH, model.num_features)


@pytest.mark.parametrize("name", NAMES)
def test_features_only_matches_feature_info(name):
    model = _create(name, features_only=True).eval()
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    assert len(channels) >= 4
    with torch.no_grad():
        outputs = model(_x(64))
    assert [o.shape[1] for o in outputs] == channels
    assert [o.shape[-1] for o in outputs] == [64 // r for r in reductions]


@pytest.mark.parametrize("name", NAMES)
def test_forward_intermediates_match_feature_info(name):
    model = _create(name).eval()
    if not hasattr(model, "forward_intermediates"):
        pytest.skip(f"{type(model).__name__} has no forward_intermediates")
    x = _x(64)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        features = model.forward_features(x)
    torch.testing.assert_close(final, features)
    info = model.feature_info  # a list of dicts on the model (a FeatureInfo on features_only)
    assert [t.shape[1] for t in intermediates] == [i["num_chs"] for i in info]
    assert [t.shape[-1] for t in intermediates] == [64 // i["reduction"] for i in info]


@pytest.mark.parametrize("name", NAMES)
def test_torchscript(name):
    with timm.set_scriptable(True):
        model = _create(name).eval()
    scripted = torch.jit.script(model)
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))


def _fx(model: torch.nn.Module) -> torch.nn.Module:
    """torchvision's feature extractor returning the model's output, traced in its current mode."""
    train_nodes, eval_nodes = get_graph_node_names(model)
    nodes = train_nodes if model.training else eval_nodes
    return create_feature_extractor(model, return_nodes={nodes[-1]: "out"})


@pytest.mark.parametrize("name", NAMES)
def test_fx_eval_matches_eager(name):
    model = _create(name).eval()
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(_fx(model)(x)["out"], model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_fx_train_matches_eager_and_reaches_every_parameter(name):
    """A graph traced in training mode draws DSK's λ when it runs (not once while tracing)."""
    model = _live_residuals(_create(name, num_classes=42)).train()
    graph = _fx(model)
    x = _x()
    for seed in (3, 4):  # two seeds: with DSK models, two different sets of λ
        torch.manual_seed(seed)
        out = graph(x)["out"]
        torch.manual_seed(seed)
        with torch.no_grad():
            torch.testing.assert_close(out, model(x))
    out.mean().backward()
    _assert_every_parameter_has_a_gradient(graph)


@pytest.mark.parametrize("name", NAMES)
def test_grad_checkpointing_gives_the_same_outputs_and_gradients(name):
    x = _x()
    runs = []
    for checkpointing in (False, True):
        model = _live_residuals(_create(name, num_classes=10)).train()
        model.set_grad_checkpointing(checkpointing)
        torch.manual_seed(3)  # checkpointing replays the RNG: DSK redraws the same λ
        out = model(x)
        out.sum().backward()
        runs.append((out, {n: p.grad for n, p in model.named_parameters()}))
    (out, grads), (out_ckpt, grads_ckpt) = runs
    torch.testing.assert_close(out_ckpt, out)
    assert [n for n, g in grads.items() if g is None] == [n for n, g in grads_ckpt.items() if g is None]
    for n, g in grads.items():
        if g is not None:
            torch.testing.assert_close(grads_ckpt[n], g, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.parametrize("name", NAMES)
def test_drop_rates(name):
    model = _create(name, num_classes=10, drop_rate=0.3, drop_path_rate=0.2)
    assert any(isinstance(m, timm.layers.DropPath) for m in model.modules())
    x = _x()
    model.train()
    assert model(x).shape == (BATCH, 10)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # no dropping at inference


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip_through_timm(name, tmp_path):
    """Own weights load through timm's usual arguments; no weights: timm's RuntimeError."""
    model = _create(name, num_classes=10).eval()
    path = tmp_path / "weights.pth"
    torch.save(model.state_dict(), path)
    overlay = dict(file=str(path), num_classes=10)
    loaded = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay,
                               **_kwargs(name, num_classes=10)).eval()
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items(),
                                strict=True):
        assert k == k2 and torch.equal(v, v2), k
    with torch.no_grad():
        assert torch.equal(loaded(_x()), model(_x()))
    # timm adapts the first conv and drops the classifier, as for its own weights
    adapted = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay,
                                **_kwargs(name, num_classes=5, in_chans=1))
    assert adapted(torch.randn(BATCH, 1, SIZE, SIZE)).shape == (BATCH, 5)
    with pytest.raises(RuntimeError, match="No pretrained weights exist"):
        timm.create_model(name, pretrained=True, **_kwargs(name))
