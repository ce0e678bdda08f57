"""Reader for CUB-200-2011 (Wah et al. 2011) in the dataset's own file format.

The MTL-MoE paper (`mtl-moe-cub.txt`) trains on CUB's images with two targets: the class and
the bird's bounding box. Its release holds, under one folder (`CUB_200_2011/`):

    images.txt              <image_id> <path under images/>
    image_class_labels.txt  <image_id> <class_id>
    train_test_split.txt    <image_id> <is_training_image: 1 | 0>
    bounding_boxes.txt      <image_id> <x> <y> <width> <height>   (pixels, floats)
    classes.txt             <class_id> <class name>
    images/<class folder>/<image>.jpg

Ids are 1-based. `read_cub` checks that the five files agree with each other (and, with
`check_images`, with the image files) and returns a `CubIndex`; `decode_cub` loads the images
into one uint8 tensor with boxes scaled to the resize. `vipnb.data.fashion_boxes` writes a small
stand-in in the same format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vipnb.data.decode import decode_image
from vipnb.errors import VipnbError

FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt",
         "classes.txt")
# A box may overshoot the image's right or bottom edge by this much (rounding in the
# annotation) and is then clipped to the image; a larger overshoot is an error.
EDGE_TOLERANCE_PX = 1.0
_SHOW = 5  # ids named in an error message before "and N more"


@dataclass(frozen=True)
class CubIndex:
    """CUB's annotations, one entry per image in `images.txt` order.

    `labels` are 0-based class indices into `classes` (classes.txt sorted by class id);
    `boxes` are (x1, y1, x2, y2) in pixels of the original image.
    """

    root: Path
    image_ids: list[int]
    paths: list[Path]
    labels: np.ndarray  # int64 [N]
    boxes: np.ndarray  # float32 [N, 4]
    is_train: np.ndarray  # bool [N]
    classes: list[str]
    image_sizes: np.ndarray | None = None  # int64 [N, 2] (width, height); read by check_images

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, mask) -> CubIndex:
        """The images where boolean `mask` [N] is true (or the integer indices it lists)."""
        keep = np.asarray(mask)
        keep = np.flatnonzero(keep) if keep.dtype == bool else keep.astype(np.int64)
        sizes = None if self.image_sizes is None else self.image_sizes[keep]
        return CubIndex(self.root, [self.image_ids[i] for i in keep],
                        [self.paths[i] for i in keep], self.labels[keep], self.boxes[keep],
                        self.is_train[keep], self.classes, sizes)

    def split(self, name: str) -> CubIndex:
        """The official `train` or `test` images (train_test_split.txt)."""
        if name not in ("train", "test"):
            raise VipnbError(f"CUB split {name!r} is not known; use 'train' or 'test'")
        return self.subset(self.is_train if name == "train" else ~self.is_train)


def read_cub(root: str | Path, check_images: bool = True) -> CubIndex:
    """Read CUB-200-2011's annotation files under `root` (the folder holding images.txt).

    With `check_images`, every image file must exist and every box must lie inside its image
    (sizes read from the file headers only); without it, only the text files are read.
    """
    root = Path(root)
    _require_files(root)
    images = _read_table(root / "images.txt", "<image_id> <path>", [str])
    labels = _read_table(root / "image_class_labels.txt", "<image_id> <class_id>", [int])
    split = _read_table(root / "train_test_split.txt", "<image_id> <is_training_image 1|0>",
                        [_flag])
    boxes = _read_table(root / "bounding_boxes.txt", "<image_id> <x> <y> <width> <height>",
                        [float] * 4)
    classes = _read_table(root / "classes.txt", "<class_id> <name>", [str])
    for file, table in (("images.txt", images), ("classes.txt", classes)):
        if not table:
            raise VipnbError(f"{root / file} lists nothing; re-download CUB_200_2011")
    for other, table in (("image_class_labels.txt", labels), ("train_test_split.txt", split),
                         ("bounding_boxes.txt", boxes)):
        _same_ids(root, images, other, table)
    class_ids = sorted(classes)
    class_index = {class_id: i for i, class_id in enumerate(class_ids)}
    for image_id, (class_id,) in labels.items():
        if class_id not in class_index:
            raise VipnbError(
                f"{root / 'image_class_labels.txt'} line {labels.line(image_id)}: class id "
                f"{class_id} of image {image_id} is not in {root / 'classes.txt'} (class ids "
                f"{class_ids[0]}..{class_ids[-1]}); the two files come from different "
                "releases — re-download CUB_200_2011"
            )
    ids = list(images)
    paths = [root / "images" / images[i][0] for i in ids]
    xywh = np.array([boxes[i] for i in ids], dtype=np.float64).reshape(-1, 4)
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    _check_boxes(root, boxes, ids, paths, xyxy)
    sizes = None
    if check_images:
        _check_files(root, ids, paths)
        sizes = np.array([_image_size(path) for path in paths], dtype=np.int64).reshape(-1, 2)
        xyxy = _check_inside(root, boxes, ids, paths, xyxy, sizes)
    return CubIndex(root, ids, paths,
                    np.array([class_index[labels[i][0]] for i in ids], dtype=np.int64),
                    xyxy.astype(np.float32), np.array([split[i][0] for i in ids], dtype=bool),
                    [classes[c][0] for c in class_ids], sizes)


def cub_summary(index: CubIndex) -> str:
    """A few lines for `vipnb data cub`: counts, and box sizes in pixels and as image shares."""
    n_train = int(index.is_train.sum())
    per_class = np.bincount(index.labels, minlength=len(index.classes))
    width = index.boxes[:, 2] - index.boxes[:, 0]
    height = index.boxes[:, 3] - index.boxes[:, 1]

    def stats(values: np.ndarray, form: str) -> str:
        if not len(values):
            return "-"
        low, mid, high = np.min(values), np.median(values), np.max(values)
        return f"min {low:{form}} · median {mid:{form}} · max {high:{form}}"

    lines = [
        f"CUB-200-2011 at {index.root}: {len(index)} images, {len(index.classes)} classes "
        f"(train {n_train}, test {len(index) - n_train}); images per class "
        f"{per_class.min() if len(per_class) else 0}–{per_class.max() if len(per_class) else 0}",
        f"  box width (px)   {stats(width, '.0f')}",
        f"  box height (px)  {stats(height, '.0f')}",
    ]
    if index.image_sizes is not None:
        share = width * height / np.prod(index.image_sizes, axis=1).clip(min=1)
        lines.append(f"  box area / image {stats(100 * share, '.0f')} %")
    return "\n".join(lines)


def decode_cub(index: CubIndex, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of `index` squashed to `size`×`size` (bilinear, PIL): uint8 [N, 3, size, size],
    and their boxes as (x1, y1, x2, y2) fractions of the image in [0, 1].

    The resize does not keep the aspect ratio, so x is scaled by size/width and y by
    size/height; as fractions of the image the box is the same before and after it.
    Everything is held in memory: meant for the small subsets a notebook trains on.
    """
    images = torch.empty(len(index), 3, size, size, dtype=torch.uint8)
    boxes = torch.empty(len(index), 4, dtype=torch.float32)
    for i, path in enumerate(index.paths):
        width, height = _image_size(path) if index.image_sizes is None else index.image_sizes[i]
        images[i] = torch.from_numpy(decode_image(path, size))
        scale = np.array([width, height, width, height], dtype=np.float32)
        boxes[i] = torch.from_numpy(index.boxes[i] / scale)
    return images, boxes.clamp(0.0, 1.0)


class _Table(dict):
    """image or class id → parsed fields, remembering the line each id came from."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.lines: dict[int, int] = {}

    def line(self, key: int) -> int:
        return self.lines[key]


def _flag(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError(text)
    return text == "1"


def _require_files(root: Path) -> None:
    missing = [name for name in FILES if not (root / name).is_file()]
    if not missing:
        return
    hint = ""
    if (root / "CUB_200_2011" / "images.txt").is_file():
        hint = f" ({root / 'CUB_200_2011'} holds them: pass that folder)"
    raise VipnbError(
        f"{root} is not a CUB-200-2011 folder: missing {', '.join(missing)}{hint}. Download "
        "CUB_200_2011 (https://www.vision.caltech.edu/datasets/cub_200_2011/) and pass its "
        "folder, the one holding images.txt and images/."
    )


def _read_table(path: Path, form: str, kinds: list) -> _Table:
    """Parse `<id> <field> ...` lines; a path or name field takes the rest of the line."""
    table = _Table(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise VipnbError(f"{path} is not a text file ({e}); re-download CUB_200_2011") from None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split(maxsplit=len(kinds))
        try:
            if len(parts) != len(kinds) + 1:
                raise ValueError(line)
            key = int(parts[0])
            fields = tuple(kind(part) for kind, part in zip(kinds, parts[1:], strict=True))
        except ValueError:
            raise VipnbError(
                f"{path} line {number}: expected '{form}', got {line!r}; fix the line or "
                "re-download CUB_200_2011"
            ) from None
        if key in table:
            raise VipnbError(f"{path} line {number}: id {key} already given on line "
                             f"{table.line(key)}; remove one of the two lines")
        table[key] = fields
        table.lines[key] = number
    return table


def _some(ids) -> str:
    ids = sorted(ids)
    more = f" and {len(ids) - _SHOW} more" if len(ids) > _SHOW else ""
    return ", ".join(map(str, ids[:_SHOW])) + more


def _same_ids(root: Path, images: _Table, other: str, table: _Table) -> None:
    only_images = images.keys() - table.keys()
    only_other = table.keys() - images.keys()
    problems = []
    if only_images:
        problems.append(f"image ids {_some(only_images)} are in images.txt but not in {other}")
    if only_other:
        problems.append(f"image ids {_some(only_other)} are in {other} but not in images.txt")
    if problems:
        raise VipnbError(f"{root}: {'; '.join(problems)}. Every image needs one line in each of "
                         f"{', '.join(FILES[:4])}; re-download CUB_200_2011 or restore the lines.")


def _describe(boxes: _Table, image_id: int, path: Path) -> str:
    x, y, w, h = boxes[image_id]
    return (f"image {image_id} ({path}, {boxes.path.name} line {boxes.line(image_id)}: "
            f"x={x:g} y={y:g} width={w:g} height={h:g})")


def _check_boxes(root: Path, boxes: _Table, ids: list[int], paths: list[Path],
                 xyxy: np.ndarray) -> None:
    """Boxes that are empty or start left of or above the image, found without the images."""
    bad = np.flatnonzero(~np.isfinite(xyxy).all(1) | (xyxy[:, 2] <= xyxy[:, 0])
                         | (xyxy[:, 3] <= xyxy[:, 1]) | (xyxy[:, 0] < 0) | (xyxy[:, 1] < 0))
    if len(bad):
        shown = "; ".join(_describe(boxes, ids[i], paths[i]) for i in bad[:_SHOW])
        raise VipnbError(
            f"{root / 'bounding_boxes.txt'}: {len(bad)} box(es) are not numbers, empty "
            f"(width or height <= 0) or start outside the image (x < 0 or y < 0): {shown}. "
            "Fix those lines or re-download CUB_200_2011."
        )


def _check_files(root: Path, ids: list[int], paths: list[Path]) -> None:
    missing = [i for i, path in enumerate(paths) if not path.is_file()]
    if missing:
        shown = ", ".join(f"{ids[i]} ({paths[i]})" for i in missing[:_SHOW])
        raise VipnbError(
            f"{len(missing)} of {len(paths)} images listed in {root / 'images.txt'} are missing "
            f"under {root / 'images'}: {shown}. Extract the whole CUB_200_2011 archive, or "
            "pass check_images=False to read only the annotations."
        )


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:  # reads the header only
            return image.size
    except (UnidentifiedImageError, OSError) as e:
        raise VipnbError(f"cannot read image {path}: {e}. Replace the file from the "
                         "CUB_200_2011 archive.") from e


def _check_inside(root: Path, boxes: _Table, ids: list[int], paths: list[Path],
                  xyxy: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Boxes past the right or bottom edge are an error beyond EDGE_TOLERANCE_PX; within
    it they are clipped to the image."""
    over = np.maximum(xyxy[:, 2] - sizes[:, 0], xyxy[:, 3] - sizes[:, 1])
    bad = np.flatnonzero(over > EDGE_TOLERANCE_PX)
    if len(bad):
        shown = "; ".join(
            f"{_describe(boxes, ids[i], paths[i])} but the image is "
            f"{int(sizes[i, 0])}x{int(sizes[i, 1])} (width x height)" for i in bad[:_SHOW])
        raise VipnbError(
            f"{root / 'bounding_boxes.txt'}: {len(bad)} box(es) reach past their image "
            f"(x + width > image width or y + height > image height): {shown}. Fix those "
            "lines, or check that images/ and bounding_boxes.txt come from the same release."
        )
    clipped = xyxy.copy()
    clipped[:, 2] = np.minimum(xyxy[:, 2], sizes[:, 0])
    clipped[:, 3] = np.minimum(xyxy[:, 3], sizes[:, 1])
    return clipped
