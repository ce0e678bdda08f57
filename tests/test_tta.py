"""Test-time augmentation on a tiny fixed model: views, flip averaging, reductions, errors."""

import pytest
import torch
from torch import nn

from vipnb.errors import VipnbError
from vipnb.eval.tta import tta_predict, tta_views

NUM_CLASSES = 5


def tiny_model(mirror_symmetric: bool) -> nn.Module:
    """Conv -> global average pool -> linear, with fixed weights.

    With left-right symmetric kernels (and symmetric zero padding) the feature map of a mirrored
    image is the mirrored feature map, and global pooling forgets where things are, so the
    model is flip-invariant by construction.
    """
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
    if mirror_symmetric:
        with torch.no_grad():
            conv.weight.copy_((conv.weight + conv.weight.flip(-1)) / 2)
    return nn.Sequential(
        conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, NUM_CLASSES)
    ).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))


def test_view_counts_and_shapes(images):
    ten = tta_views(images, "ten_crop", crop_size=8)
    assert len(ten) == 10
    assert all(view.shape == (2, 3, 8, 8) for view in ten)
    assert len(tta_views(images, "five_crop", crop_size=8)) == 5
    assert tta_views(images, "center", crop_size=12)[0] is images
    scales = tta_views(images, "multi_scale:8,16", crop_size=8)
    assert [tuple(view.shape[-2:]) for view in scales] == [(8, 8), (16, 16)]
    assert len(tta_views(images, ["flip", "multi_scale:10"], crop_size=8)) == 3


def test_flip_on_a_mirror_symmetric_model_equals_plain_prediction(images):
    model = tiny_model(mirror_symmetric=True)
    plain = model(images).log_softmax(dim=-1)
    flipped = tta_predict(model, images, "flip", crop_size=12)
    torch.testing.assert_close(flipped, plain, atol=1e-5, rtol=1e-5)


def test_flip_averages_probabilities_of_both_views(images):
    model = tiny_model(mirror_symmetric=False)
    center, mirrored = model(images), model(images.flip(-1))
    assert not torch.allclose(center, mirrored), "the test model should not be flip-invariant"

    mean_prob = (center.softmax(-1) + mirrored.softmax(-1)) / 2
    scores = tta_predict(model, images, "flip", crop_size=12)
    torch.testing.assert_close(scores, mean_prob.log(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores.softmax(-1), mean_prob, atol=1e-5, rtol=1e-5)

    mean_logit = tta_predict(model, images, "flip", crop_size=12, reduce="mean_logit")
    torch.testing.assert_close(mean_logit, (center + mirrored) / 2, atol=1e-5, rtol=1e-5)


def test_model_mode_is_restored(images):
    model = tiny_model(mirror_symmetric=False).train()
    tta_predict(model, images, "center", crop_size=8)
    assert model.training


def test_bad_views_and_reductions_name_the_valid_ones(images):
    with pytest.raises(VipnbError, match="valid views: center, flip, five_crop, ten_crop"):
        tta_views(images, "rotate", crop_size=8)
    with pytest.raises(VipnbError, match="multi_scale:192,224,256"):
        tta_views(images, "multi_scale:big", crop_size=8)
    with pytest.raises(VipnbError, match="at least 16x16"):
        tta_views(images, "ten_crop", crop_size=16)
    with pytest.raises(VipnbError, match="mean_prob, mean_logit"):
        tta_predict(tiny_model(False), images, "center", crop_size=8, reduce="vote")
