"""Test-time augmentation on a tiny fixed model: views, flip averaging, reductions, errors."""

import pytest
import torch
from torch import nn

from vipnb.data.augment import IMAGENET_MEAN, IMAGENET_STD, normalize
from vipnb.errors import VipnbError
from vipnb.eval.tta import TTA_ROTATION_DEGREES, VIEW_NAMES, tta_predict, tta_views

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
        tta_views(images, "sharpen", crop_size=8)
    with pytest.raises(VipnbError, match="multi_scale:192,224,256"):
        tta_views(images, "multi_scale:big", crop_size=8)
    with pytest.raises(VipnbError, match="at least 16x16"):
        tta_views(images, "ten_crop", crop_size=16)
    with pytest.raises(VipnbError, match="mean_prob, mean_logit"):
        tta_predict(tiny_model(False), images, "center", crop_size=8, reduce="vote")


# -- the fusion-coverage paper's views: jitter, noise, rotate, paper_tta ---------------------


def normalised(pixels: torch.Tensor) -> torch.Tensor:
    return normalize(pixels, IMAGENET_MEAN, IMAGENET_STD)


@pytest.fixture
def photos() -> torch.Tensor:
    """Normalised images with uint8-range pixels well inside [0, 255]."""
    g = torch.Generator().manual_seed(2)
    return normalised(40 + 170 * torch.rand(3, 3, 16, 16, generator=g))


@pytest.mark.parametrize("view,count", [("jitter", 1), ("noise", 1), ("rotate", 1),
                                        ("paper_tta", 5)])
def test_paper_views_count_shape_and_determinism(photos, view, count):
    first = tta_views(photos, view, crop_size=12)
    assert len(first) == count
    assert all(v.shape == (3, 3, 12, 12) for v in first)
    again = tta_views(photos, view, crop_size=12)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)


def test_paper_tta_is_center_mirror_jitter_noise_rotate(photos):
    views = tta_views(photos, "paper_tta", crop_size=12)
    singles = tta_views(photos, ["flip", "jitter", "noise", "rotate"], crop_size=12)
    for a, b in zip(views, singles, strict=True):
        assert torch.equal(a, b)
    assert "paper_tta" in VIEW_NAMES


@pytest.mark.parametrize("view", ["jitter", "noise"])
def test_photometric_views_change_the_pixels_within_range(photos, view):
    center = tta_views(photos, "center", crop_size=16)[0]
    changed = tta_views(photos, view, crop_size=16)[0]
    assert changed.shape == center.shape
    assert (changed - center).abs().mean() > 0.05
    low, high = normalised(torch.zeros(1, 3, 1, 1)), normalised(torch.full((1, 3, 1, 1), 255.0))
    assert (changed >= low - 1e-5).all() and (changed <= high + 1e-5).all()


def test_photometric_views_use_the_given_normalisation():
    """A mid-grey image normalised with other statistics: the noise view must still add noise
    of amplitude ~20 pixel values, which it only does when it un-normalises with them."""
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    grey = normalize(torch.full((2, 3, 32, 32), 128.0), mean, std)
    noisy = tta_views(grey, "noise", crop_size=32, mean=mean, std=std)[0]
    pixels = (noisy * 0.25 + 0.5) * 255
    assert 17 < (pixels - 128).std() < 23
    with pytest.raises(VipnbError, match="one value per channel"):
        tta_views(grey, "noise", crop_size=32, mean=(0.5,), std=std)


def bar_orientation(view: torch.Tensor, threshold: float) -> float:
    """Angle in degrees of the principal axis of the pixels above `threshold` (second moments)."""
    ys, xs = torch.nonzero(view > threshold, as_tuple=True)
    xs, ys = xs.float() - xs.float().mean(), ys.float() - ys.float().mean()
    angle = 0.5 * torch.atan2(2 * (xs * ys).mean(), (xs * xs).mean() - (ys * ys).mean())
    return angle.rad2deg().item()


def test_rotate_turns_a_planted_bar_by_a_small_angle_per_image():
    pixels = torch.full((4, 3, 33, 33), 128.0)
    pixels[:, :, 15:18, 4:29] = 255.0  # a horizontal white bar through the centre, grey around
    views = tta_views(normalised(pixels), "rotate", crop_size=33)[0]
    assert views.shape == pixels.shape
    white, grey, black = (normalised(torch.full((1, 3, 1, 1), value))[0, :, 0, 0]
                          for value in (255.0, 128.0, 0.0))
    angles = [bar_orientation(view[0], 0.5 * (white[0] + grey[0]).item()) for view in views]
    assert all(abs(angle) <= TTA_ROTATION_DEGREES + 1 for angle in angles), angles
    assert max(angles) - min(angles) > 2, angles  # each image its own angle, some turned
    torch.testing.assert_close(views[:, :, 16, 16], white.expand(4, 3))  # the centre stays
    for view, angle in zip(views, angles, strict=True):
        if abs(angle) > 2:  # the corner came from outside the image: filled with black
            torch.testing.assert_close(view[:, 0, 0], black)
