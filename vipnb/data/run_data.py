"""The data of a run: its three splits, served as uint8 batches from memory or from disk."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from vipnb.data.layout import ImageList
from vipnb.data.stream import stream_batches


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
