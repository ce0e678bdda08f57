import pytest
import torch

from vipnb.data.box_augment import (
    BoxEvalTransform,
    BoxTrainTransform,
    hflip_boxes,
    keep_visible,
    visible_fraction,
)
from vipnb.errors import VipnbError

SIZE = 40
DARK, BRIGHT = 20, 230
PLAIN = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}  # images come back as x / 255


def planted(rects: list[tuple[int, int, int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Dark uint8 images [B, 3, SIZE, SIZE], each with one bright rectangle (x1, y1, x2, y2 in
    pixels, end exclusive), and those rectangles as fractions of the image."""
    images = torch.full((len(rects), 3, SIZE, SIZE), DARK, dtype=torch.uint8)
    for image, (x1, y1, x2, y2) in zip(images, rects, strict=True):
        image[:, y1:y2, x1:x2] = BRIGHT
    return images, torch.tensor(rects, dtype=torch.float32) / SIZE


def bright_extent(images: torch.Tensor) -> torch.Tensor:
    """Per image, the bright region's (x1, y1, x2, y2) as fractions of the image."""
    out = []
    for image in images:
        bright = image[0] > (DARK + BRIGHT) / 2 / 255
        rows, cols = bright.any(1).nonzero(), bright.any(0).nonzero()
        out.append(torch.tensor([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]))
    return torch.stack(out).float() / images.shape[-1]


def assert_matches_pixels(out: torch.Tensor, boxes: torch.Tensor, pixels: float = 1.0) -> None:
    gap = (bright_extent(out) - boxes).abs().max().item() * out.shape[-1]
    assert gap <= pixels + 1e-4, (bright_extent(out) * out.shape[-1], boxes * out.shape[-1])


def test_crop_shifts_and_scales_the_box():
    images, boxes = planted([(8, 12, 28, 30)])
    transform = BoxTrainTransform(32, **PLAIN)
    out, moved = transform.apply(images, boxes, torch.tensor([[4.0, 6.0, 36.0, 38.0]]),
                                 torch.tensor([False]))
    assert out.shape == (1, 3, 32, 32)
    torch.testing.assert_close(moved, torch.tensor([[4 / 32, 6 / 32, 24 / 32, 24 / 32]]))
    assert_matches_pixels(out, moved, pixels=0)


def test_crop_through_the_box_clips_it_and_resize_keeps_fractions():
    images, boxes = planted([(8, 12, 28, 30)])
    crops = torch.tensor([[14.0, 0.0, 40.0, 26.0]])  # cuts the box on the left and bottom
    out, moved = BoxTrainTransform(20, min_visible=0.0, **PLAIN).apply(
        images, boxes, crops, torch.tensor([False]))
    torch.testing.assert_close(moved, torch.tensor([[0.0, 12 / 26, 14 / 26, 1.0]]))
    assert_matches_pixels(out, moved)


def test_hflip_maps_x_exactly_and_moves_the_pixels_with_it():
    images, boxes = planted([(8, 12, 28, 30), (0, 0, 10, 40)])
    whole = torch.tensor([[0.0, 0.0, SIZE, SIZE]] * 2)
    out, moved = BoxTrainTransform(SIZE, **PLAIN).apply(images, boxes, whole,
                                                        torch.tensor([True, False]))
    torch.testing.assert_close(moved[0],
                               torch.tensor([1 - 28 / 40, 12 / 40, 1 - 8 / 40, 30 / 40]))
    torch.testing.assert_close(moved[1], boxes[1])
    assert_matches_pixels(out, moved, pixels=0)
    x1, y1, x2, y2 = boxes.unbind(1)
    assert torch.equal(hflip_boxes(boxes), torch.stack([1 - x2, y1, 1 - x1, y2], dim=1))


def test_random_crops_and_flips_keep_box_and_pixels_together():
    generator = torch.Generator().manual_seed(0)
    corners = torch.randint(0, 20, (48, 2), generator=generator)
    sides = torch.randint(8, 21, (48, 2), generator=generator)
    rects = [(x, y, x + w, y + h) for (x, y), (w, h) in zip(corners.tolist(), sides.tolist(),
                                                              strict=True)]
    images, boxes = planted(rects)
    transform = BoxTrainTransform(24, scale=(0.3, 1.0), **PLAIN)
    crops, flips = transform.sample(48, SIZE, SIZE, generator)
    assert 0 < flips.sum() < 48 and (crops[:, 2:] - crops[:, :2]).min() > 0
    out, moved = transform.apply(images, boxes, crops, flips)
    assert ((moved >= 0) & (moved <= 1)).all()
    assert (moved[:, 2:] > moved[:, :2]).all()  # never empty, thanks to min_visible
    assert_matches_pixels(out, moved)


def test_crop_keeping_too_little_of_the_box_becomes_the_whole_image():
    images, boxes = planted([(0, 0, 10, 10), (10, 10, 30, 30), (10, 10, 30, 30)])
    crops = torch.tensor([[20.0, 20.0, 40.0, 40.0],  # misses the box
                          [18.0, 10.0, 40.0, 40.0],  # keeps 60 %
                          [22.0, 10.0, 40.0, 40.0]])  # keeps 40 %
    torch.testing.assert_close(visible_fraction(boxes, crops, SIZE, SIZE),
                               torch.tensor([0.0, 0.6, 0.4]))
    kept = keep_visible(boxes, crops, SIZE, SIZE, 0.5)
    assert kept.tolist() == [[0, 0, 40, 40], crops[1].tolist(), [0, 0, 40, 40]]
    transform = BoxTrainTransform(SIZE, **PLAIN)
    out, moved = transform.apply(images, boxes, crops, torch.zeros(3, dtype=torch.bool))
    torch.testing.assert_close(moved[[0, 2]], boxes[[0, 2]])
    torch.testing.assert_close(out[[0, 2]], images[[0, 2]].float() / 255)
    assert_matches_pixels(out, moved)


def test_seeded_draws_are_repeatable():
    images, boxes = planted([(8, 12, 28, 30)] * 6)
    transform = BoxTrainTransform(16)
    first = transform(images, boxes, torch.Generator().manual_seed(7))
    again = transform(images, boxes, torch.Generator().manual_seed(7))
    other = transform(images, boxes, torch.Generator().manual_seed(8))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])


def test_eval_resizes_the_whole_image_and_keeps_boxes():
    images, boxes = planted([(8, 12, 28, 30), (3, 5, 17, 39)])
    out, same = BoxEvalTransform(20, **PLAIN)(images, boxes)
    assert out.shape == (2, 3, 20, 20) and same is boxes
    assert_matches_pixels(out, boxes)
    full = BoxEvalTransform(SIZE)(images)  # images alone; ImageNet mean/std by default
    assert full.shape == (2, 3, SIZE, SIZE) and full.mean() < 0


def test_bad_settings_are_named():
    with pytest.raises(VipnbError, match="min_visible=1.5"):
        BoxTrainTransform(16, min_visible=1.5)
    with pytest.raises(VipnbError, match=r"scale=\(0.0, 1.0\)"):
        BoxTrainTransform(16, scale=(0.0, 1.0))
