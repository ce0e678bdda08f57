"""`fashion50`: a VIPriors-style split of Fashion-MNIST, the project's built-in real dataset.

Like the VIPriors challenge (50 train + 50 val images per class drawn from ImageNet's training
set, test = ImageNet's validation set), it draws 50 train and 50 val images per class from the
official Fashion-MNIST training set with a fixed seed, and uses the official 10k test set as the
test set. It is written in the VIPriors on-disk layout so one loader serves both.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vipnb.atomic import write_text_atomic
from vipnb.data.build_folder import BUILDING, COMPLETE, check_build_folder, empty_folder
from vipnb.data.idx import read_idx
from vipnb.data.layout import write_class_list
from vipnb.errors import VipnbError
from vipnb.eval.submission import write_labels_csv

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
VERSION = 1  # bump when the images change, so earlier builds are refused until rebuilt
DOWNLOAD = ".download"  # torchvision's copy of the source: the same whatever the settings
# Folder-safe names; the digit prefix makes sorted order equal the official label order.
CLASS_NAMES = [
    "0-tshirt_top", "1-trouser", "2-pullover", "3-dress", "4-coat",
    "5-sandal", "6-shirt", "7-sneaker", "8-bag", "9-ankle_boot",
]  # fmt: skip
_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


@dataclass(frozen=True)
class FashionMnist:
    train_images: np.ndarray  # [60000, 28, 28] uint8
    train_labels: np.ndarray
    test_images: np.ndarray  # [10000, 28, 28] uint8
    test_labels: np.ndarray
    source: str


def find_fashion_mnist(given: str | Path | None = None,
                       download_to: Path | None = None) -> Path:
    """The directory holding the four IDX files: `given` (the CLI's --fashion-mnist or
    $VIPNB_FASHION_MNIST, read there), Debian's `dataset-fashion-mnist`, or (where a network
    allows it) torchvision's download."""
    candidates = [Path(given)] if given else []
    candidates.append(DEBIAN_DIR)
    for directory in candidates:
        if all((directory / name).exists() for name in _FILES.values()):
            return directory
    if download_to is not None:
        outcome = _download(Path(download_to))
        if isinstance(outcome, Path):
            return outcome
        download_error = f" torchvision's download failed: {outcome}."
    else:
        download_error = ""
    raise VipnbError(
        "Fashion-MNIST not found: looked in "
        + ", ".join(str(c) for c in candidates)
        + f".{download_error} Install it with `apt-get install dataset-fashion-mnist`, or "
        f"build with `vipnb data fashion50 --fashion-mnist DIR` (or VIPNB_FASHION_MNIST=DIR) "
        f"where DIR holds {', '.join(_FILES.values())}."
    )


def _download(target: Path) -> Path | str:
    """torchvision's download (where a network allows it): the raw folder, or why it failed."""
    try:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(target), train=True, download=True)
        FashionMNIST(str(target), train=False, download=True)
        return target / "FashionMNIST" / "raw"
    except Exception as e:  # noqa: BLE001 - any network failure means "not available here"
        return str(e)


def load_fashion_mnist(directory: Path) -> FashionMnist:
    arrays = {key: read_idx(directory / name) for key, name in _FILES.items()}
    return FashionMnist(**arrays, source=str(directory))


def draw_split(labels: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of `per_class` train and `per_class` val images per class, disjoint, seeded."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in range(len(CLASS_NAMES)):
        chosen = rng.choice(np.flatnonzero(labels == label), size=2 * per_class, replace=False)
        train.extend(sorted(chosen[:per_class]))
        val.extend(sorted(chosen[per_class:]))
    return np.asarray(train), np.asarray(val)


def build_fashion50(out_dir: str | Path, per_class: int = 50, seed: int = 0,
                    source_dir: str | Path | None = None, rebuild: bool = False) -> Path:
    """Write fashion50 under `out_dir` (train/<class>/*.png, val/<class>/*.png,
    test/imgs/img_<i>.png, test/labels.csv, classes.txt); returns `out_dir`.

    Re-running with the same settings does nothing on a complete tree and finishes an
    interrupted one. A folder holding a build of other settings is refused (its images would
    mix with these) unless `rebuild`, which empties it first; one holding anything else is refused.
    """
    out_dir = Path(out_dir)
    settings = {"dataset": "fashion50", "version": VERSION, "per_class": per_class, "seed": seed}
    # Markers from before the version was recorded describe version 1's images.
    verdict = check_build_folder(out_dir, settings, rebuild, keep={DOWNLOAD},
                                 assumed={"version": 1})
    if verdict == "reuse":
        return out_dir
    data = load_fashion_mnist(find_fashion_mnist(source_dir, download_to=out_dir / DOWNLOAD))
    train_idx, val_idx = draw_split(data.train_labels, per_class, seed)
    if verdict == "rebuild":
        empty_folder(out_dir, keep={DOWNLOAD})
    write_text_atomic(out_dir / BUILDING, json.dumps(settings, indent=1))
    for split, indices in (("train", train_idx), ("val", val_idx)):
        for i in indices:
            folder = out_dir / split / CLASS_NAMES[data.train_labels[i]]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(data.train_images[i]).save(folder / f"fmnist_train_{i:05d}.png")
    test_dir = out_dir / "test" / "imgs"
    test_dir.mkdir(parents=True, exist_ok=True)
    test_ids = [f"img_{i}.png" for i in range(len(data.test_images))]
    for image_id, image in zip(test_ids, data.test_images, strict=True):
        Image.fromarray(image).save(test_dir / image_id)
    write_labels_csv(out_dir / "test" / "labels.csv", test_ids, data.test_labels.tolist())
    write_class_list(out_dir / "classes.txt", CLASS_NAMES)
    digest = hashlib.sha256(data.train_labels.tobytes() + data.test_labels.tobytes()).hexdigest()
    record = {**settings, "source": data.source, "labels_sha256": digest,
              "counts": {"train": len(train_idx), "val": len(val_idx), "test": len(test_ids)}}
    write_text_atomic(out_dir / COMPLETE, json.dumps(record, indent=1))
    (out_dir / BUILDING).unlink()
    return out_dir
