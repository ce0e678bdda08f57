"""The data of a run: its three splits, served as uint8 batches from memory or from disk."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from vipnb import paths
from vipnb.data.cache import decode_split
from vipnb.data.layout import ImageList, scan_split
from vipnb.data.stream import stream_batches
from vipnb.data.val_into_train import move_val_into_train
from vipnb.errors import VipnbError

log = logging.getLogger(__name__)


@dataclass
class SplitSource:
    """One split; `batches(order, n)` yields (uint8 images [B, 3, S, S], int64 labels)."""

    name: str
    labels: torch.Tensor
    ids: list[str]
    classes: list[str]
    skipped: list[str]
    images: torch.Tensor | None = None  # memory path
    files: ImageList | None = None  # stream path
    size: int = 0
    interpolation: str = "bilinear"
    workers: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    def batches(self, order: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, ...]]:
        if self.images is not None:
            for start in range(0, len(order), batch_size):
                index = order[start : start + batch_size]
                yield self.images[index], self.labels[index]
        else:
            yield from stream_batches(self.files, self.size, self.interpolation, order,
                                      batch_size, self.workers)


@dataclass
class RunData:
    train: SplitSource
    val: SplitSource
    test: SplitSource
    root: Path

    @property
    def classes(self) -> list[str]:
        return self.train.classes


def dataset_root(recipe) -> Path:
    """Where the recipe's data lives; builds fashion50 on first use."""
    if recipe.dataset == "fashion50":
        root = Path(recipe.data_root) if recipe.data_root else paths.data_root() / "fashion50"
        from vipnb.data.fashion50 import build_fashion50

        return build_fashion50(root)
    if not recipe.data_root:
        raise VipnbError(
            f"recipe {recipe.name}: dataset `folder` needs `data_root`, the folder holding "
            "train/ val/ test/ (e.g. imagenet_50 from `vipnb data vipriors`); pass "
            "-p data_root=DIR"
        )
    return Path(recipe.data_root)


def load_run_data(recipe) -> RunData:
    root = dataset_root(recipe)
    cache_dir = root / ".vipnb_cache"
    sources = {}
    split_files = {split: scan_split(root, split) for split in ("train", "val", "test")}
    if recipe.val_into_train:
        split_files["train"], split_files["val"] = move_val_into_train(
            split_files["train"], split_files["val"], recipe.val_into_train)
    for split, files in split_files.items():
        limit = {"train": recipe.train_limit, "val": recipe.eval_limit,
                 "test": recipe.test_limit or recipe.eval_limit}[split]
        if limit:
            files = _first_per_class(files, limit)
        if recipe.data_cache == "memory":
            decoded = decode_split(files, recipe.cache_size, recipe.interpolation,
                                   skip_bad=recipe.skip_bad_images, cache_dir=cache_dir)
            sources[split] = SplitSource(split, decoded.labels, decoded.ids, decoded.classes,
                                         decoded.skipped, images=decoded.images)
        else:
            sources[split] = SplitSource(split, torch.from_numpy(files.labels), files.ids,
                                         files.classes, [], files=files, size=recipe.cache_size,
                                         interpolation=recipe.interpolation,
                                         workers=recipe.workers)
        if sources[split].skipped:
            log.warning("%s: skipped %d unreadable images", split, len(sources[split].skipped))
    data = RunData(sources["train"], sources["val"], sources["test"], root)
    if recipe.coverage_classes:  # the fusion-coverage paper's targeted training set (§III.E)
        from vipnb.data.coverage import coverage_run_data  # it builds on this module

        data = coverage_run_data(data, recipe.coverage_classes, recipe.coverage_per_hard,
                                 recipe.coverage_per_other, recipe.seed)
    return data


def _first_per_class(files: ImageList, total: int) -> ImageList:
    """About `total` images with every class kept (round-robin over classes)."""
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(files.labels.tolist()):
        by_class.setdefault(label, []).append(i)
    per_class = max(1, total // max(1, len(by_class)))
    keep = sorted(i for members in by_class.values() for i in members[:per_class])
    return ImageList(files.split, [files.paths[i] for i in keep], files.labels[keep], files.classes)
