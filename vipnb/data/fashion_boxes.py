"""`fashion-boxes`: a small CUB-200-2011 stand-in with real bounding boxes, from Fashion-MNIST.

The MTL-MoE paper (`mtl-moe-cub.txt`) learns a class and the object's box together. For a run
on a laptop without CUB, each sample here is one Fashion-MNIST item (grayscale, shown as RGB)
scaled to a random size (by default 24–48 px on a 64 px canvas, square like its 28×28 source)
and placed at a random position on a cluttered canvas: a dark, tinted, noisy background under
(by default 2–4) faint patches cut from other Fashion-MNIST images (8–14 px crops). The item
is pasted last, blended by its own brightness, so no square edge betrays where it is. Its box
is the tight box of the item's pixels brighter than 20/255 after scaling and placement — the
object's extent, not the pasted square. Train items come from Fashion-MNIST's train set, test
items from its test set. The item sizes, the number of patches and the counts are build
options (`OPTIONS`), so a recipe chooses how hard the task is (`dataset_options`); each choice
builds into its own folder.

It is written in CUB's own format (images.txt, image_class_labels.txt, train_test_split.txt,
bounding_boxes.txt, classes.txt, images/<class>/<image>.png), so `vipnb.data.cub.read_cub`
reads it like the real dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from vipnb.atomic import replace_folder
from vipnb.data.build_folder import check_build_folder
from vipnb.data.fashion50 import CLASS_NAMES, FashionMnist, find_fashion_mnist, load_fashion_mnist
from vipnb.errors import VipnbError

STAMP = ".fashion_boxes.json"
VERSION = 2  # bump when the rendering changes, so old builds are rebuilt
THRESHOLD = 20  # an item pixel brighter than this (of 255) is part of the object
# Sizes at a 64 px canvas; other canvases scale them.
ITEM_SIDE = (24, 48)
PATCH_SIDE = (8, 14)  # crop of the 28 px source image
DISTRACTORS = (2, 4)
# The build options a recipe's `dataset_options` may set, with their defaults; the range
# options are (low, high), both included.
OPTIONS = {"canvas": 64, "train_per_class": 100, "test_per_class": 50,
           "item_side": ITEM_SIDE, "distractors": DISTRACTORS}
MIN_ITEM_PIXELS = 30  # items with fewer bright pixels (none in Fashion-MNIST) are not drawn
NAMES = [name.split("-", 1)[1] for name in CLASS_NAMES]  # "0-tshirt_top" → "tshirt_top"


def build_fashion_boxes(out: str | Path, canvas: int = OPTIONS["canvas"],
                        train_per_class: int = OPTIONS["train_per_class"],
                        test_per_class: int = OPTIONS["test_per_class"], seed: int = 0,
                        item_side: tuple[int, int] = ITEM_SIDE,
                        distractors: tuple[int, int] = DISTRACTORS,
                        source: FashionMnist | tuple | None = None, rebuild: bool = False) -> Path:
    """Write fashion-boxes under `out` in CUB's format; returns `out`.

    `item_side` is the (smallest, largest) side of the scaled item in pixels of a 64 px
    canvas, `distractors` the (fewest, most) patches of other items under it.

    `source` is the Fashion-MNIST arrays (a `FashionMnist`, or a tuple train_images,
    train_labels, test_images, test_labels); by default they are found as `fashion50` finds
    them (Debian's dataset-fashion-mnist, torchvision's download).
    A complete build with the same settings is reused. A build of other settings is refused
    unless `rebuild`, and a non-empty folder that is no fashion-boxes build is always refused.
    Builds happen in a temporary folder beside `out`, renamed into place, so `out` is never
    half written.
    """
    out = Path(out)
    options = check_options({"canvas": canvas, "train_per_class": train_per_class,
                             "test_per_class": test_per_class, "item_side": item_side,
                             "distractors": distractors}, str(out))
    settings = {"dataset": "fashion-boxes", "version": VERSION, "seed": seed, **options}
    # Builds from before item_side and distractors were options used their defaults.
    assumed = {"item_side": list(ITEM_SIDE), "distractors": list(DISTRACTORS)}
    verdict = partial(check_build_folder, out, settings, markers=((STAMP, "complete"),),
                      assumed=assumed)
    if verdict(rebuild) == "reuse":
        return out
    data = _source(source, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        os.chmod(work, 0o755)  # mkdtemp makes 0700 folders; data is meant to be shared
        counts = _write_tree(work, data, options, seed)
        digest = hashlib.sha256(data.train_labels.tobytes() + data.test_labels.tobytes())
        record = {**settings, "source": data.source, "labels_sha256": digest.hexdigest(),
                  "counts": counts}
        (work / STAMP).write_text(json.dumps(record, indent=1))
        # Another process (a second run started beside this one) may have built the same
        # settings meanwhile and be reading it: keep that build rather than swap it away.
        if not rebuild and verdict(False) == "reuse":
            shutil.rmtree(work)
            return out
        replace_folder(out, work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out


def check_options(options: dict, where: str) -> dict:
    """`options` (a subset of `OPTIONS`) completed with the defaults and checked; range
    options come back as [low, high] lists, as the build's stamp records them. `where` names
    the options' source in the error."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise VipnbError(f"{where}: fashion-boxes has no build option {', '.join(unknown)}; "
                         f"the options are {', '.join(OPTIONS)}")
    checked = {**OPTIONS, **options}
    if not (isinstance(checked["canvas"], int) and checked["canvas"] >= 16):
        raise VipnbError(f"{where}: fashion-boxes canvas={checked['canvas']} is too small; use "
                         "16 px or more (the default 64 is CUB-like at a laptop's scale)")
    for key in ("train_per_class", "test_per_class"):
        if not (isinstance(checked[key], int) and checked[key] >= 1):
            raise VipnbError(f"{where}: fashion-boxes {key}={checked[key]!r}; give a whole "
                             "number of images, 1 or more")
    for key, lowest, highest in (("item_side", 4, 64), ("distractors", 0, 16)):
        value = checked[key]
        if not (isinstance(value, (list, tuple)) and len(value) == 2
                and all(isinstance(v, int) for v in value)
                and lowest <= value[0] <= value[1] <= highest):
            raise VipnbError(f"{where}: fashion-boxes {key}={value!r}; give [low, high], whole "
                             f"numbers with {lowest} <= low <= high <= {highest}")
        checked[key] = list(value)
    return checked


def folder_name(options: dict) -> str:
    """The built-in folder of a build with `options` (set away from their defaults):
    `fashion_boxes`, or e.g. `fashion_boxes-distractors0-1-item_side32-56`."""
    changed = sorted(key for key in options if _slug(options[key]) != _slug(OPTIONS[key]))
    return "-".join(["fashion_boxes", *(key + _slug(options[key]) for key in changed)])


def _slug(value) -> str:
    return "-".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def render(item: np.ndarray, others: list[np.ndarray], canvas: int,
           rng: np.random.Generator, item_side: tuple[int, int] = ITEM_SIDE,
           ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """One sample: RGB uint8 [canvas, canvas, 3] and the item's box (x, y, width, height)
    in pixels. `others` are the 28×28 images the distractor patches are cut from; the item's
    side is drawn from `item_side` (pixels of a 64 px canvas)."""
    unit = canvas / 64
    image = rng.uniform(10, 45, size=3) + rng.normal(0, 8, size=(canvas, canvas, 3))
    for source in others:
        side = int(rng.integers(PATCH_SIDE[0], PATCH_SIDE[1] + 1))
        top, left = rng.integers(0, source.shape[0] - side + 1, size=2)
        patch = _resize(source[top : top + side, left : left + side], max(2, round(side * unit)))
        _blend(image, patch, rng.uniform(0.35, 0.7), rng)
    low, high = round(item_side[0] * unit), min(canvas, round(item_side[1] * unit))
    scaled = _resize(item, int(rng.integers(low, high + 1)))
    x0, y0 = (int(v) for v in rng.integers(0, canvas - len(scaled) + 1, size=2))
    alpha = np.clip(scaled / 64.0, 0.0, 1.0)[..., None]
    region = image[y0 : y0 + len(scaled), x0 : x0 + len(scaled)]
    region[:] = alpha * scaled[..., None] + (1 - alpha) * region
    rows, cols = np.nonzero(scaled > THRESHOLD)
    if len(rows) == 0:  # an item too faint to keep a pixel after scaling: its square
        rows, cols = np.array([0, len(scaled) - 1]), np.array([0, len(scaled) - 1])
    box = (x0 + int(cols.min()), y0 + int(rows.min()), int(cols.max() - cols.min()) + 1,
           int(rows.max() - rows.min()) + 1)
    return np.clip(image, 0, 255).round().astype(np.uint8), box


def _resize(pixels: np.ndarray, side: int) -> np.ndarray:
    image = Image.fromarray(np.ascontiguousarray(pixels)).resize((side, side),
                                                                 Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float64)


def _blend(image: np.ndarray, patch: np.ndarray, alpha: float, rng: np.random.Generator) -> None:
    """Paste `patch` (gray) at a random place, `alpha` opaque."""
    side = len(patch)
    top, left = rng.integers(0, len(image) - side + 1, size=2)
    region = image[top : top + side, left : left + side]
    region[:] = alpha * patch[..., None] + (1 - alpha) * region


def _source(source, out: Path) -> FashionMnist:
    if source is None:
        return load_fashion_mnist(find_fashion_mnist(download_to=out.parent / ".fashion-mnist"))
    if isinstance(source, FashionMnist):
        return source
    train_images, train_labels, test_images, test_labels = source
    return FashionMnist(np.asarray(train_images), np.asarray(train_labels),
                        np.asarray(test_images), np.asarray(test_labels), source="arrays")


def _draw(labels: np.ndarray, images: np.ndarray, per_class: int, rng: np.random.Generator,
          split: str) -> list[np.ndarray]:
    """Per class, `per_class` distinct indices of items with enough bright pixels."""
    visible = (images > THRESHOLD).sum(axis=(1, 2)) >= MIN_ITEM_PIXELS
    chosen = []
    for label, name in enumerate(NAMES):
        pool = np.flatnonzero((labels == label) & visible)
        if len(pool) < per_class:
            raise VipnbError(
                f"fashion-boxes: Fashion-MNIST's {split} set has {len(pool)} usable images of "
                f"class {name}, fewer than {split}_per_class={per_class}; ask for fewer"
            )
        chosen.append(np.sort(rng.choice(pool, size=per_class, replace=False)))
    return chosen


def _write_tree(work: Path, data: FashionMnist, options: dict, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    fewest, most = options["distractors"]
    splits = {"train": (data.train_images, data.train_labels, options["train_per_class"]),
              "test": (data.test_images, data.test_labels, options["test_per_class"])}
    drawn = {split: _draw(labels, images, per_class, rng, split)
             for split, (images, labels, per_class) in splits.items()}
    lines = {name: [] for name in ("images", "labels", "split", "boxes")}
    image_id = 0
    for label, name in enumerate(NAMES):
        folder = f"{label + 1:03d}.{name}"
        (work / "images" / folder).mkdir(parents=True)
        for split, (images, _, _) in splits.items():
            for index in drawn[split][label]:
                others = [images[_other(rng, len(images), index)]
                          for _ in range(int(rng.integers(fewest, most + 1)))]
                pixels, (x, y, w, h) = render(images[index], others, options["canvas"], rng,
                                              options["item_side"])
                image_id += 1
                relative = f"{folder}/{name}_{split}_{index:05d}.png"
                Image.fromarray(pixels).save(work / "images" / relative)
                lines["images"].append(f"{image_id} {relative}")
                lines["labels"].append(f"{image_id} {label + 1}")
                lines["split"].append(f"{image_id} {int(split == 'train')}")
                lines["boxes"].append(f"{image_id} {x:.1f} {y:.1f} {w:.1f} {h:.1f}")
    for name, file in (("images", "images.txt"), ("labels", "image_class_labels.txt"),
                       ("split", "train_test_split.txt"), ("boxes", "bounding_boxes.txt")):
        (work / file).write_text("\n".join(lines[name]) + "\n")
    (work / "classes.txt").write_text(
        "".join(f"{i + 1} {i + 1:03d}.{name}\n" for i, name in enumerate(NAMES)))
    return {split: per_class * len(NAMES) for split, (_, _, per_class) in splits.items()}


def _other(rng: np.random.Generator, n: int, index: int) -> int:
    """A random image index other than `index`."""
    pick = int(rng.integers(n - 1))
    return pick + 1 if pick >= index else pick
