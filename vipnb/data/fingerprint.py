"""What data a run was trained on, as a short digest that enters the run's name.

Two runs of one recipe on different data (a 5-class copy, a `--classes 10` build, another
split seed) must never share a run directory. The digest covers the content, not the place:
every file's path relative to the dataset root (the builders name images after their source,
e.g. `fmnist_train_01308.png` or ImageNet's file names, so another split or subset has other
paths) and the bytes of the small text files (`test/labels.csv`, `classes.txt`). Image bytes
are left out on purpose: the same build written by another Pillow/zlib compresses to other
bytes, and would otherwise name other runs on another machine. Folders and files starting
with a dot (the decoded-image cache, the builders' completion markers) are not data.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

from vipnb.data.build_folder import COMPLETE
from vipnb.data.fashion_boxes import STAMP as FASHION_BOXES_STAMP
from vipnb.errors import VipnbError

_TEXT_SUFFIXES = (".csv", ".txt")
# What the builders write last: a folder holding one is scanned once per build, not once per
# run name.
COMPLETION_MARKERS = (COMPLETE, FASHION_BOXES_STAMP)
NO_DATA = "no-data"  # the data is not there yet: such a name never names a trained run


def data_fingerprint(recipe) -> str:
    """The digest of the data `recipe` trains on; `NO_DATA` when it cannot be found.

    Resolving the root builds a built-in dataset (fashion50, fashion-boxes) on first use,
    exactly as training would, so a name computed before training is the name it trains under.
    """
    try:
        root = _data_root(recipe)
    except VipnbError:
        return NO_DATA
    if not root.is_dir():
        return NO_DATA
    markers = [root / name for name in COMPLETION_MARKERS if (root / name).exists()]
    if not markers:  # nothing tells when such a folder changes: scan it every time
        return _content_digest(str(root.resolve()))
    return _cached_digest(str(root.resolve()), markers[0].stat().st_mtime_ns)


def _data_root(recipe) -> Path:
    from vipnb.data.registry import dataset_root

    return dataset_root(recipe)


@lru_cache(maxsize=64)
def _cached_digest(root: str, stamp: int) -> str:
    """`_content_digest`, kept per completion-marker time `stamp`: a rebuilt dataset is
    scanned again."""
    return _content_digest(root)


def _content_digest(root: str) -> str:
    """sha256 over the sorted relative paths of every data file under `root`, and the bytes
    of its text files."""
    digest = hashlib.sha256()
    for relative in sorted(_data_files(root)):
        digest.update(f"{relative}\n".encode())
        if relative.endswith(_TEXT_SUFFIXES):
            digest.update(Path(root, relative).read_bytes())
    return digest.hexdigest()[:12]


def _data_files(root: str):
    """Paths relative to `root`, joined by hand: os.path.relpath costs more than the scan."""
    stack = [(root, "")]
    while stack:
        folder, relative = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=True):
                    stack.append((entry.path, f"{relative}{entry.name}/"))
                else:
                    yield f"{relative}{entry.name}"
