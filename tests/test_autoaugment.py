"""Batched AutoAugment equals torchvision's AutoAugment image by image, with the right odds."""

import itertools
import time

import pytest
import torch
from torchvision.transforms import v2

from vipnb.data.augment import TrainTransform, crop_and_resize, normalize
from vipnb.data.autoaugment import AutoAugmentDraws, BatchAutoAugment
from vipnb.errors import VipnbError

TORCHVISION = v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)


def images_with_varied_ranges(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Noise over a gradient, each image in its own value range, so that autocontrast,
    equalize and solarize do different things to different images."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randint(0, 128, (n, 1, 1, 1), generator=g)
    span = torch.randint(1, 128, (n, 1, 1, 1), generator=g)
    ramp = torch.linspace(0, 1, width).expand(n, 3, height, width)
    noise = torch.rand(n, 3, height, width, generator=g)
    return (low + span * (0.5 * ramp + 0.5 * noise)).round().clamp(0, 255).to(torch.uint8)


def reference(image: torch.Tensor, policy: int, fire: list[bool], negate: list[bool]):
    """One [3, H, W] image through torchvision's own policy, magnitudes and ops."""
    height, width = image.shape[-2:]
    for slot, (name, _, magnitude_bin) in enumerate(TORCHVISION._policies[policy]):
        if not fire[slot]:
            continue
        magnitudes_fn, signed = TORCHVISION._AUGMENTATION_SPACE[name]
        magnitudes = magnitudes_fn(10, height, width)
        magnitude = 0.0 if magnitudes is None else float(magnitudes[magnitude_bin])
        if signed and negate[slot]:
            magnitude *= -1
        image = TORCHVISION._apply_image_or_video_transform(
            image, name, magnitude, interpolation=TORCHVISION.interpolation,
            fill=TORCHVISION._fill)
    return image


def every_draw() -> AutoAugmentDraws:
    """Each sub-policy with each fire and sign combination once."""
    combos = list(itertools.product(range(25), itertools.product([False, True], repeat=4)))
    return AutoAugmentDraws(torch.tensor([p for p, _ in combos]),
                            torch.tensor([bits[:2] for _, bits in combos]),
                            torch.tensor([bits[2:] for _, bits in combos]))


@pytest.mark.parametrize("height,width", [(32, 32), (24, 40)])
def test_batched_equals_torchvision_image_by_image(height, width):
    draws = every_draw()
    images = images_with_varied_ranges(len(draws), height, width)
    batched = BatchAutoAugment().apply(images, draws)
    assert not torch.equal(batched, images)
    for i in range(len(draws)):
        expected = reference(images[i], int(draws.policy[i]), draws.fire[i].tolist(),
                             draws.negate[i].tolist())
        assert torch.equal(batched[i], expected), f"image {i}, sub-policy {int(draws.policy[i])}"


def test_equals_torchvision_autoaugment_with_its_own_random_stream():
    """Replay the global-RNG draws of v2.AutoAugment.forward as draws of ours."""
    images = images_with_varied_ranges(60, 32, 32, seed=1)
    expected, policies, fires, negates = [], [], [], []
    for i, image in enumerate(images):
        torch.manual_seed(i)
        expected.append(TORCHVISION(image))
        torch.manual_seed(i)
        policy = int(torch.randint(25, ()))
        fire, negate = [False, False], [False, False]
        for slot, (name, probability, _) in enumerate(TORCHVISION._policies[policy]):
            fire[slot] = bool(torch.rand(()) <= probability)
            magnitudes_fn, signed = TORCHVISION._AUGMENTATION_SPACE[name]
            if fire[slot] and signed and magnitudes_fn(10, 32, 32) is not None:
                negate[slot] = bool(torch.rand(()) <= 0.5)
        policies.append(policy), fires.append(fire), negates.append(negate)
    draws = AutoAugmentDraws(torch.tensor(policies), torch.tensor(fires), torch.tensor(negates))
    assert torch.equal(BatchAutoAugment().apply(images, draws), torch.stack(expected))


def test_draw_frequencies_follow_the_policy():
    augment = BatchAutoAugment()
    n = 200_000
    draws = augment.sample(n, torch.Generator().manual_seed(0))
    counts = torch.bincount(draws.policy, minlength=25).float()
    assert len(counts) == 25
    assert (counts / n - 1 / 25).abs().max() < 0.004
    for policy in range(25):
        chosen = draws.policy == policy
        rates = draws.fire[chosen].float().mean(0)
        assert torch.allclose(rates, augment.probabilities[policy], atol=0.03), policy
    assert abs(draws.negate.float().mean().item() - 0.5) < 0.01


def test_draws_reproducible_and_indexable():
    augment = BatchAutoAugment()
    a = augment.sample(100, torch.Generator().manual_seed(3))
    b = augment.sample(100, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(vars(a).values(), vars(b).values(), strict=True))
    images = images_with_varied_ranges(100, 16, 16)
    share = torch.arange(10, 40)
    whole = augment.apply(images, a)
    assert torch.equal(augment.apply(images[share], a[share]), whole[share])
    assert len(a[share]) == 30


def test_apply_rejects_float_images_and_wrong_counts():
    augment = BatchAutoAugment()
    draws = augment.sample(4, torch.Generator().manual_seed(0))
    with pytest.raises(TypeError):
        augment.apply(torch.zeros(4, 3, 8, 8), draws)
    with pytest.raises(ValueError):
        augment.apply(torch.zeros(5, 3, 8, 8, dtype=torch.uint8), draws)


def test_batch_of_256_small_images_is_fast():
    augment = BatchAutoAugment()
    images = images_with_varied_ranges(256, 32, 32)
    draws = augment.sample(256, torch.Generator().manual_seed(0))
    started = time.perf_counter()
    out = augment.apply(images, draws)
    assert time.perf_counter() - started < 5.0  # generous: a shared CPU core
    assert out.shape == images.shape and out.dtype == torch.uint8


# -- TrainTransform -----------------------------------------------------------------------

def test_train_transform_rejects_unknown_policy():
    with pytest.raises(VipnbError, match="'rand'.*'original'"):
        TrainTransform(32, auto_augment="rand")


def test_train_transform_off_draws_nothing_extra():
    """Without AutoAugment the random stream after sample() is as before it existed."""
    transform = TrainTransform(32)
    g = torch.Generator().manual_seed(5)
    transform.sample(8, 40, 40, g)
    assert transform.sample_auto_augment(8, g) is None
    reference_g = torch.Generator().manual_seed(5)
    TrainTransform(32).sample(8, 40, 40, reference_g)
    assert torch.equal(torch.rand(4, generator=g), torch.rand(4, generator=reference_g))


def test_train_transform_applies_auto_augment_on_uint8_crops():
    transform = TrainTransform(24, auto_augment="original")
    batch = images_with_varied_ranges(16, 40, 40)
    g = torch.Generator().manual_seed(0)
    boxes, flips = transform.sample(16, 40, 40, g)
    draws = transform.sample_auto_augment(16, g)
    out = transform.apply(batch, boxes, flips, draws)
    crops = crop_and_resize(batch, boxes, 24)
    crops = torch.where(flips.view(-1, 1, 1, 1), crops.flip(-1), crops)
    pixels = crops.round().clamp(0, 255).to(torch.uint8)
    expected = normalize(BatchAutoAugment().apply(pixels, draws).float(), transform.mean,
                         transform.std)
    assert torch.equal(out, expected)
    share = torch.tensor([3, 7, 11])
    assert torch.equal(transform.apply(batch[share], boxes[share], flips[share], draws[share]),
                       out[share])
    with pytest.raises(ValueError, match="sample_auto_augment"):
        transform.apply(batch, boxes, flips)


def test_train_transform_call_draws_auto_augment_after_the_crops():
    transform = TrainTransform(24, auto_augment="original")
    batch = images_with_varied_ranges(8, 40, 40)
    out = transform(batch, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    boxes, flips = transform.sample(8, 40, 40, g)
    assert torch.equal(out, transform.apply(batch, boxes, flips,
                                            transform.sample_auto_augment(8, g)))
