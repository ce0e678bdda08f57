"""Decoded splits as one uint8 tensor [N, 3, S, S], kept in memory and cached on disk.

Decoding once and augmenting whole batches as tensor ops keeps the model fed on small
datasets (fashion50 in full, VIPriors at 352 px is ~20 GB); `stream.py` serves the rest.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vipnb.data.decode import BadImageError, decode_image
from vipnb.data.layout import ImageList

log = logging.getLogger(__name__)
CACHE_FORMAT = 1


@dataclass
class DecodedSplit:
    images: torch.Tensor  # uint8 [N, 3, S, S]
    labels: torch.Tensor  # int64 [N], -1 where unknown
    ids: list[str]
    classes: list[str]
    skipped: list[str]  # files left out because they could not be decoded

    def __len__(self) -> int:
        return len(self.ids)


def decode_split(images: ImageList, size: int, interpolation: str = "bilinear",
                 skip_bad: bool = False, cache_dir: Path | None = None,
                 threads: int | None = None) -> DecodedSplit:
    """Decode every image of `images` at `size`×`size`; reuse the on-disk cache when the
    file list, sizes and modification times are unchanged."""
    key = _fingerprint(images, size, interpolation, skip_bad)
    cache_file = cache_dir / f"{images.split}-{size}-{interpolation}-{key}.pt" if cache_dir else None
    if cache_file is not None and cache_file.exists():
        stored = torch.load(cache_file, weights_only=True)
        if stored.get("format") == CACHE_FORMAT:
            return DecodedSplit(stored["images"], stored["labels"], stored["ids"],
                                images.classes, stored["skipped"])

    def decode(path: Path) -> np.ndarray | None:
        try:
            return decode_image(path, size, interpolation)
        except BadImageError as e:
            if not skip_bad:
                raise
            log.warning("skipping %s", e)
            return None

    # PIL releases the GIL while decoding, so threads overlap well on small images.
    with ThreadPoolExecutor(threads or min(8, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(decode, images.paths))
    kept = [i for i, a in enumerate(arrays) if a is not None]
    skipped = [str(images.paths[i]) for i, a in enumerate(arrays) if a is None]
    stacked = np.stack([arrays[i] for i in kept]) if kept else np.zeros((0, 3, size, size), np.uint8)
    split = DecodedSplit(
        images=torch.from_numpy(stacked),
        labels=torch.from_numpy(images.labels[kept]),
        ids=[images.paths[i].name for i in kept],
        classes=images.classes,
        skipped=skipped,
    )
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
        torch.save({"format": CACHE_FORMAT, "images": split.images, "labels": split.labels,
                    "ids": split.ids, "skipped": skipped}, tmp)
        os.replace(tmp, cache_file)
    return split


def _fingerprint(images: ImageList, size: int, interpolation: str, skip_bad: bool) -> str:
    digest = hashlib.sha256(f"{size}|{interpolation}|{skip_bad}|{images.classes}".encode())
    for path, label in zip(images.paths, images.labels, strict=True):
        stat = path.stat()
        digest.update(f"{path}|{label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
