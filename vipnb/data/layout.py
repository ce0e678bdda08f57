"""The VIPriors on-disk layout, shared by the real challenge data and the built-in datasets.

    <root>/train/<class>/<image>     <root>/val/<class>/<image>
    <root>/test/imgs/img_<i>.<ext>   <root>/test/labels.csv   (Image IDs,Labels)
    <root>/classes.txt               (optional; the sorted class folder names)

Class index = position in the sorted list of training class folders, which for ImageNet
wnids equals timm's `imagenet_synsets.txt` order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vipnb.atomic import write_text_atomic
from vipnb.errors import VipnbError
from vipnb.eval.submission import read_labels_csv

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ImageList:
    """The files of one split: `labels[i]` is the class index of `paths[i]` (-1: unknown)."""

    split: str
    paths: list[Path]
    labels: np.ndarray
    classes: list[str]

    @property
    def ids(self) -> list[str]:
        return [p.name for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)


def class_names(root: Path) -> list[str]:
    train = Path(root) / "train"
    if not train.is_dir():
        raise VipnbError(
            f"{train} does not exist: a dataset root must hold train/<class>/*, val/<class>/* "
            "and test/imgs/*. Build one with `vipnb data fashion50 --out DIR` or "
            "`vipnb data vipriors ...`."
        )
    names = sorted(d.name for d in train.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not names:
        raise VipnbError(f"{train} holds no class folders; expected train/<class>/<image> files")
    return names


def scan_split(root: str | Path, split: str) -> ImageList:
    """List the images of `split` ("train", "val" or "test") under a VIPriors-layout root."""
    root = Path(root)
    if split not in SPLITS:
        raise VipnbError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    classes = class_names(root)
    if split == "test":
        return _scan_test(root, classes)
    split_dir = root / split
    if not split_dir.is_dir():
        raise VipnbError(f"{split_dir} does not exist; expected {split}/<class>/<image> files")
    index = {name: i for i, name in enumerate(classes)}
    paths, labels = [], []
    for folder in sorted(d for d in split_dir.iterdir() if d.is_dir()):
        if folder.name not in index:
            raise VipnbError(
                f"{folder} is a class folder that train/ does not have; every {split} class "
                "must also be a train class"
            )
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(path)
                labels.append(index[folder.name])
    if not paths:
        raise VipnbError(f"{split_dir} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return ImageList(split, paths, np.asarray(labels, dtype=np.int64), classes)


def _scan_test(root: Path, classes: list[str]) -> ImageList:
    imgs = root / "test" / "imgs"
    if not imgs.is_dir():
        raise VipnbError(f"{imgs} does not exist; expected test/imgs/img_<i>.<ext> files")
    paths = sorted(
        (p for p in imgs.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS), key=_test_order
    )
    labels_csv = root / "test" / "labels.csv"
    labels = np.full(len(paths), -1, dtype=np.int64)
    if labels_csv.exists():
        known = read_labels_csv(labels_csv)
        labels = np.asarray([known.get(p.name, -1) for p in paths], dtype=np.int64)
    return ImageList("test", paths, labels, classes)


def _test_order(path: Path) -> tuple[int, str]:
    match = re.fullmatch(r"img_(\d+)", path.stem)
    return (int(match.group(1)) if match else 1 << 62, path.name)


def write_class_list(path: str | Path, classes: list[str]) -> Path:
    return write_text_atomic(path, "".join(f"{name}\n" for name in classes))
