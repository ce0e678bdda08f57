"""Decoded splits as one uint8 tensor [N, 3, S, S], decoded once into a file and memory-mapped.

Decoding once and augmenting whole batches as tensor ops keeps the model fed on small
datasets (fashion50 in full, VIPriors at 352 px is ~56 GB for 1000 classes); `stream.py` serves
the rest. The file lives in a cache folder of its own (the recipe's `cache_dir`), so a dataset
folder may be read-only. Its name holds a digest of the split's content and the decoding
settings, so two datasets, or two `cache_size`s, never share one. The first process to need it
builds it under a file lock while the others wait; every process then maps the same file, so a
node holds one copy in its page cache however many training processes (torchrun ranks,
notebook workers) read it.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vipnb.atomic import atomic_file, remove_stale_temporaries
from vipnb.data.decode import BadImageError, decode_image
from vipnb.data.layout import ImageList
from vipnb.data.workers import available_cpus
from vipnb.errors import VipnbError

log = logging.getLogger(__name__)
CACHE_FORMAT = 2  # 2: raw uint8 images (.u8) beside their labels and ids (.pt), memory-mapped
_CHUNK = 1024  # images decoded ahead of being written: bounds the memory a build holds


@dataclass
class DecodedSplit:
    images: torch.Tensor  # uint8 [N, 3, S, S]; memory-mapped when read from a cache file
    labels: torch.Tensor  # int64 [N], -1 where unknown
    ids: list[str]
    classes: list[str]
    skipped: list[str]  # files left out because they could not be decoded

    def __len__(self) -> int:
        return len(self.ids)


def decode_split(images: ImageList, size: int, interpolation: str = "bilinear",
                 skip_bad: bool = False, cache_dir: Path | None = None,
                 threads: int | None = None) -> DecodedSplit:
    """Decode every image of `images` at `size`×`size`. With `cache_dir`, into a file there
    (reused while the file list, sizes and modification times are unchanged) that is then
    memory-mapped; without, into this process's memory."""
    threads = threads or min(32, available_cpus())
    if cache_dir is None:
        pixels = np.empty((len(images), 3, size, size), np.uint8)
        kept, skipped = _decode_into(pixels, images, size, interpolation, skip_bad, threads)
        return _split(images, torch.from_numpy(pixels[: len(kept)]), kept, skipped)
    cache_dir = Path(cache_dir)
    key = _fingerprint(images, size, interpolation, skip_bad)
    name = f"{images.split}-{size}px-{interpolation}-{key}"
    files = cache_dir / f"{name}.u8", cache_dir / f"{name}.pt"
    split = _read(*files, images.classes)
    if split is None:
        with _locked(cache_dir / f".{name}.lock"):  # one process builds, the others wait
            split = _read(*files, images.classes)
            if split is None:
                _build(*files, images, size, interpolation, skip_bad, threads)
                split = _read(*files, images.classes)
    return split


def _build(pixels_file: Path, index_file: Path, images: ImageList, size: int,
           interpolation: str, skip_bad: bool, threads: int) -> None:
    """Decode into `pixels_file`, then write `index_file` (labels, ids): written last, it
    marks the cache complete. Each file appears whole or not at all (vipnb.atomic)."""
    folder = pixels_file.parent
    remove_stale_temporaries(folder)  # a build killed outright leaves a large temporary
    image_bytes = 3 * size * size
    needed, free = len(images) * image_bytes, shutil.disk_usage(folder).free
    print(f"decoding {len(images)} images at {size} px: {needed / 1e9:.2f} GB into "
          f"{pixels_file}", flush=True)
    if needed > free:
        raise VipnbError(f"the decoded {images.split} images take {needed / 1e9:.1f} GB, but "
                         f"{folder} has {free / 1e9:.1f} GB free: point the recipe key "
                         "`cache_dir` at a folder with room (-p cache_dir=DIR), or set "
                         "`data_cache: stream` to decode while training")
    with atomic_file(pixels_file, "w+b") as stream:
        stream.truncate(needed)
        pixels = (np.memmap(stream, np.uint8, mode="r+", shape=(len(images), 3, size, size))
                  if needed else np.empty((0, 3, size, size), np.uint8))
        kept, skipped = _decode_into(pixels, images, size, interpolation, skip_bad, threads)
        if isinstance(pixels, np.memmap):
            pixels.flush()
        del pixels
        stream.truncate(len(kept) * image_bytes)  # skipped images leave no gap at the end
    with atomic_file(index_file, "wb") as stream:
        torch.save({"format": CACHE_FORMAT, "shape": [len(kept), 3, size, size],
                    "labels": torch.from_numpy(images.labels[kept]),
                    "ids": [images.paths[i].name for i in kept], "skipped": skipped}, stream)


def _read(pixels_file: Path, index_file: Path, classes: list[str]) -> DecodedSplit | None:
    """The cached split, memory-mapped (copy-on-write: pages are shared until written); None
    when it is not there, from another version, or its pixels file does not match."""
    if not index_file.exists():
        return None
    index = torch.load(index_file, weights_only=True)
    if index.get("format") != CACHE_FORMAT:
        return None
    shape = tuple(index["shape"])
    expected = int(np.prod(shape))
    if not pixels_file.exists() or pixels_file.stat().st_size != expected:
        return None
    pixels = (torch.from_numpy(np.memmap(pixels_file, np.uint8, mode="c", shape=shape))
              if expected else torch.zeros(shape, dtype=torch.uint8))
    return DecodedSplit(pixels, index["labels"], index["ids"], classes, index["skipped"])


def _decode_into(pixels: np.ndarray, images: ImageList, size: int, interpolation: str,
                 skip_bad: bool, threads: int) -> tuple[list[int], list[str]]:
    """Decode the images into `pixels`, packed: the decodable ones first, in order. Returns
    their positions in `images` and the paths of the images skipped."""
    def decode(path: Path) -> np.ndarray | None:
        try:
            return decode_image(path, size, interpolation)
        except BadImageError as e:
            if not skip_bad:
                raise
            log.warning("skipping %s", e)
            return None

    kept, skipped = [], []
    # PIL releases the GIL while decoding, so threads overlap well.
    with ThreadPoolExecutor(threads) as pool:
        for start in range(0, len(images), _CHUNK):
            chunk = images.paths[start : start + _CHUNK]
            for offset, array in enumerate(pool.map(decode, chunk)):
                if array is None:
                    skipped.append(str(chunk[offset]))
                else:
                    pixels[len(kept)] = array
                    kept.append(start + offset)
    return kept, skipped


def _split(images: ImageList, pixels: torch.Tensor, kept: list[int],
           skipped: list[str]) -> DecodedSplit:
    return DecodedSplit(pixels, torch.from_numpy(images.labels[kept]),
                        [images.paths[i].name for i in kept], images.classes, skipped)


@contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """An exclusive lock on `lock_file` (released when the process dies, however it dies)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fingerprint(images: ImageList, size: int, interpolation: str, skip_bad: bool) -> str:
    """The split's content as the cache sees it: each file's path, label, size and
    modification time, the class list and the decoding settings."""
    digest = hashlib.sha256(f"{size}|{interpolation}|{skip_bad}|{images.classes}".encode())
    for path, label in zip(images.paths, images.labels, strict=True):
        stat = path.stat()
        digest.update(f"{path}|{label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
