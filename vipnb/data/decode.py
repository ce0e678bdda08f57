"""Decode one image file into a fixed-size uint8 array, with a clear error for a bad file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vipnb.errors import VipnbError

INTERPOLATIONS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


class BadImageError(VipnbError):
    """An image file that cannot be decoded; names the file."""


def decode_image(path: Path, size: int, interpolation: str = "bilinear") -> np.ndarray:
    """Decode `path` to RGB and resize it to `size`×`size`: uint8 array [3, size, size].

    Every image is squashed to one square size so a whole split fits one tensor; the random
    crops of training then act on that square, as "resize to 352, random crop 320" recipes do.
    """
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.size != (size, size):
                image = image.resize((size, size), INTERPOLATIONS[interpolation])
            return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise BadImageError(
            f"cannot decode image {path}: {e}. Replace or delete the file, or set the recipe "
            "key `skip_bad_images: true` to skip unreadable files (they are counted in the log)."
        ) from e
