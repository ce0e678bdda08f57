"""The paper's photometric augmentations batched: equal to torchvision's ops image by image,
deterministic, and each part doing only what it says."""

import itertools

import pytest
import torch
from torchvision.transforms.v2 import functional as F

from vipnb.data.photometric import (
    JITTER_OPS,
    PAPER_COLOR_JITTER,
    BatchPhotometric,
    PhotometricDraws,
)
from vipnb.errors import VipnbError

TORCHVISION_OPS = {"brightness": F.adjust_brightness, "contrast": F.adjust_contrast,
                   "saturation": F.adjust_saturation, "hue": F.adjust_hue}


def colourful_images(n: int, height: int = 10, width: int = 12, seed: int = 0) -> torch.Tensor:
    """uint8-range floats with saturated and grey pixels, dark and bright images."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(n, 1, 1, 1, generator=g) * 255
    return (torch.rand(n, 3, height, width, generator=g) * scale).clamp(0, 255)


def every_order(n_per_order: int = 2, seed: int = 0) -> PhotometricDraws:
    """Each of the 24 orders of the four ops, with factors from the paper's ranges."""
    orders = torch.tensor(list(itertools.permutations(range(4)))).repeat(n_per_order, 1)
    n = len(orders)
    g = torch.Generator().manual_seed(seed)
    factors = torch.cat([0.5 + torch.rand(n, 3, generator=g),
                         0.2 * torch.rand(n, 1, generator=g) - 0.1], dim=1)
    return PhotometricDraws(torch.zeros(n, dtype=torch.bool), factors, orders,
                            torch.zeros(n, dtype=torch.int64))


def test_jitter_equals_torchvision_image_by_image():
    draws = every_order()
    images = colourful_images(len(draws))
    batched = BatchPhotometric(color_jitter=PAPER_COLOR_JITTER).apply(images, draws)
    assert batched.shape == images.shape
    for i in range(len(draws)):
        expected = images[i] / 255  # torchvision's float convention
        for op in draws.order[i].tolist():
            expected = TORCHVISION_OPS[JITTER_OPS[op]](expected, float(draws.factors[i, op]))
        torch.testing.assert_close(batched[i], expected * 255, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("op", range(4))
def test_each_jitter_op_alone_equals_torchvision(op):
    strengths = [0.0] * 4
    strengths[op] = PAPER_COLOR_JITTER[op]
    transform = BatchPhotometric(color_jitter=tuple(strengths))
    images = colourful_images(6, seed=op)
    draws = transform.sample(6, torch.Generator().manual_seed(op))
    batched = transform.apply(images, draws)
    for i in range(6):
        expected = TORCHVISION_OPS[JITTER_OPS[op]](images[i] / 255, float(draws.factors[i, op]))
        torch.testing.assert_close(batched[i], expected * 255, rtol=1e-3, atol=1e-3)


def test_draws_follow_the_ranges_and_orders_are_permutations():
    transform = BatchPhotometric(vflip=0.5, color_jitter=PAPER_COLOR_JITTER, gaussian_noise=20)
    draws = transform.sample(2000, torch.Generator().manual_seed(0))
    low, high = draws.factors.min(0).values, draws.factors.max(0).values
    assert (low[:3] >= 0.5).all() and (high[:3] <= 1.5).all()
    assert low[3] >= -0.1 and high[3] <= 0.1
    assert (draws.order.sort(dim=1).values == torch.arange(4)).all()
    assert len({tuple(order) for order in draws.order.tolist()}) == 24
    assert 0.45 < draws.vflip.float().mean() < 0.55


def test_seeded_generator_gives_the_same_result_and_shares_match_the_batch():
    transform = BatchPhotometric(vflip=0.5, color_jitter=PAPER_COLOR_JITTER, gaussian_noise=20)
    images = colourful_images(8)
    first = transform(images, torch.Generator().manual_seed(3))
    torch.testing.assert_close(transform(images, torch.Generator().manual_seed(3)), first,
                               rtol=0, atol=0)
    assert not torch.equal(transform(images, torch.Generator().manual_seed(4)), first)
    draws = transform.sample(8, torch.Generator().manual_seed(3))
    share = transform.apply(images[4:], draws[4:])  # one process's share of the global batch
    torch.testing.assert_close(share, first[4:], rtol=0, atol=0)


def test_vflip_flags_are_honoured():
    transform = BatchPhotometric(vflip=0.5)
    images = colourful_images(16)
    draws = transform.sample(16, torch.Generator().manual_seed(0))
    assert 0 < draws.vflip.sum() < 16
    out = transform.apply(images, draws)
    for i, flipped in enumerate(draws.vflip.tolist()):
        assert torch.equal(out[i], images[i].flip(-2) if flipped else images[i])


def test_noise_is_shared_by_the_channels_and_clamped():
    transform = BatchPhotometric(gaussian_noise=20.0)
    grey = torch.full((4, 3, 32, 32), 128.0)
    draws = transform.sample(4, torch.Generator().manual_seed(0))
    noisy = transform.apply(grey, draws)
    assert torch.equal(noisy[:, 0], noisy[:, 1]) and torch.equal(noisy[:, 1], noisy[:, 2])
    assert 17 < (noisy - 128).std() < 23  # amplitude 20 times N(0, 1)
    assert not torch.equal(noisy[0], noisy[1])  # each image its own noise
    extremes = torch.stack([torch.zeros(3, 32, 32), torch.full((3, 32, 32), 255.0)])
    clamped = transform.apply(extremes, draws[:2])
    assert clamped.min() == 0 and clamped.max() == 255
    assert (clamped[0] > 0).any() and (clamped[1] < 255).any()


def test_disabled_is_identity_and_not_enabled():
    transform = BatchPhotometric()
    assert not transform.enabled
    images = colourful_images(3)
    assert torch.equal(transform.apply(images, transform.sample(3, torch.Generator())), images)
    for on in (BatchPhotometric(vflip=0.5), BatchPhotometric(color_jitter=(0, 0, 0, 0.1)),
               BatchPhotometric(gaussian_noise=1.0)):
        assert on.enabled


def test_bad_settings_name_the_value():
    with pytest.raises(VipnbError, match="vflip 1.5"):
        BatchPhotometric(vflip=1.5)
    with pytest.raises(VipnbError, match=r"hue in \[0, 0.5\]"):
        BatchPhotometric(color_jitter=(0.5, 0.5, 0.5, 0.7))
    with pytest.raises(VipnbError, match="four values"):
        BatchPhotometric(color_jitter=(0.5, 0.5))
    with pytest.raises(VipnbError, match="gaussian_noise -1"):
        BatchPhotometric(gaussian_noise=-1)
