"""Build the VIPriors ImageNet-50 folders from an ImageNet-2012 copy and the official splits.

The images are laid out exactly as the toolkit's ``generate_images.py`` lays them out
(github.com/VIPriors/vipriors-challenges-toolkit, ``image-classification/``); ``labels.csv``,
``classes.txt``, ``.building.json`` and ``.complete`` are additions::

    <out_dir>/imagenet_50/
        train/<wnid>/<file>       50 images per class, from ImageNet-2012 train
        val/<wnid>/<file>         50 more per class, also from ImageNet-2012 train
        test/imgs/img_<i>.JPEG    ImageNet-2012 val, i = position in test.pickle (0-based)
        test/labels.csv           ground truth, "Image IDs,Labels" then "img_<i>.JPEG,<class>"
        classes.txt               the sorted wnids, one per line; a class index is its line number
        .building.json            JSON written before the first file: the settings
        .complete                 JSON written last: the settings, counts and build mode

Class indices follow the sorted wnids, which for the full 1000 classes is timm's
``imagenet_synsets`` order, so ImageNet-style label files and heads line up.

``classes=N`` keeps the first N wnids in sorted order and drops every entry of the others. Test
images keep their *original* index ``i`` in ``img_<i>.JPEG`` (the ids then have gaps), so an id
means the same image in a subset build as in the full one and predictions stay comparable.

Beyond the toolkit: files are hard-linked by default (no extra disk space), every input is checked
before anything is written, and a re-run resumes: a destination that already exists with the
source's size is skipped, and new files appear under their final name only once complete (written
under a hidden ``.<name>.partial`` name, then renamed with ``os.replace``).

The settings (kept classes, the split files' sha256, the ImageNet folder) are recorded, and a
folder holding a build of other settings is refused, as mixing two builds leaks val images into
train; ``rebuild=True`` empties it first (links go, never the ImageNet files they point at).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from vipnb.atomic import write_text_atomic
from vipnb.data.build_folder import BUILDING, COMPLETE, check_build_folder, empty_folder
from vipnb.data.layout import write_class_list
from vipnb.data.splits import (
    SPLIT_FILE_NAMES,
    VipriorsSplits,
    load_vipriors_splits,
    test_labels,
)
from vipnb.errors import VipnbError
from vipnb.eval.submission import write_labels_csv

BUILD_MODES = ("link", "symlink", "copy")
VERSION = 1  # bump when the layout changes, so earlier builds are refused until rebuilt
DATASET_FOLDER = "imagenet_50"

# Hard-link failures that mean "not possible here" rather than a real problem with the file:
# another file system, a file system without hard links, protected_hardlinks, link count limit.
_HARDLINK_UNAVAILABLE = {errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK}

_IMAGENET_LAYOUT = (
    "Expected an ImageNet-2012 folder laid out as\n"
    "  <imagenet_root>/train/<wnid>/*.JPEG  (ILSVRC2012_img_train.tar: one folder per class)\n"
    "  <imagenet_root>/val/<wnid>/*.JPEG    (ILSVRC2012_img_val.tar, sorted into class folders "
    "by the usual valprep.sh script)"
)


@dataclass(frozen=True)
class BuildReport:
    """What :func:`build_vipriors` did. ``linked + symlinked + copied + skipped`` is the total."""

    root: Path  # <out_dir>/imagenet_50
    classes: int
    train: int
    val: int
    test: int
    linked: int = 0
    symlinked: int = 0
    copied: int = 0
    skipped: int = 0

    def summary(self) -> str:
        return (
            f"{self.root}: {self.classes} classes, {self.train} train / {self.val} val / "
            f"{self.test} test images ({self.linked} hard-linked, {self.symlinked} symlinked, "
            f"{self.copied} copied, {self.skipped} already there)"
        )


@dataclass(frozen=True)
class _PlannedFile:
    split: str
    source: Path
    destination: Path
    size: int


def _check_imagenet_root(imagenet_root: Path) -> None:
    for part in ("train", "val"):
        if not (imagenet_root / part).is_dir():
            raise VipnbError(
                f"ImageNet folder {imagenet_root} has no {part}/ folder "
                f"({imagenet_root / part} is missing). {_IMAGENET_LAYOUT}."
            )


def _check_classes(classes: int | None, available: int) -> None:
    if classes is None:
        return
    if isinstance(classes, bool) or not isinstance(classes, int) or not 1 <= classes <= available:
        raise VipnbError(
            f"classes={classes!r} is not valid: give a whole number from 1 to {available} "
            f"(keeps the first N classes in sorted wnid order), or None for all {available}."
        )


def _plan(
    splits: VipriorsSplits, wnids: list[str], imagenet_root: Path, root: Path
) -> tuple[list[tuple[str, Path, Path]], list[tuple[str, int]]]:
    """Every (split, source, destination) the build needs, test entries with their original ids."""
    kept = set(wnids)
    planned: list[tuple[str, Path, Path]] = []
    for split, entries in (("train", splits.train), ("val", splits.val)):
        for wnid, filename in entries:
            if wnid in kept:
                planned.append(
                    (
                        split,
                        imagenet_root / "train" / wnid / filename,
                        root / split / wnid / filename,
                    )
                )
    test_rows: list[tuple[str, int]] = []
    class_index = {wnid: index for index, wnid in enumerate(wnids)}
    labels = test_labels(splits.test)
    for original_index, (entry, wnid) in enumerate(zip(splits.test, labels, strict=True)):
        if wnid in kept:
            image_id = f"img_{original_index}.JPEG"
            planned.append(
                ("test", imagenet_root / "val" / entry, root / "test" / "imgs" / image_id)
            )
            test_rows.append((image_id, class_index[wnid]))
    return planned, test_rows


def _stat_sources(
    planned: list[tuple[str, Path, Path]], imagenet_root: Path, progress: bool
) -> list[_PlannedFile]:
    """Size every source; if any is missing, raise one error that lists them per split."""
    files: list[_PlannedFile] = []
    missing: dict[str, list[Path]] = {}
    for split, source, destination in tqdm(
        planned, desc="checking ImageNet", unit="file", disable=not progress, leave=False
    ):
        try:
            files.append(_PlannedFile(split, source, destination, os.stat(source).st_size))
        except OSError:
            missing.setdefault(split, []).append(source)
    if not missing:
        return files

    total = sum(len(paths) for paths in missing.values())
    lines = [
        f"ImageNet folder {imagenet_root} lacks {total} of the {len(planned)} images the VIPriors "
        f"splits need:"
    ]
    for split, paths in missing.items():
        lines.append(f"  {split}: {len(paths)} missing, e.g.")
        lines.extend(f"    {path}" for path in paths[:5])
    flat_val = missing.get("test") and (imagenet_root / "val" / missing["test"][0].name).exists()
    if flat_val:
        lines.append(
            "val/ holds its images directly instead of in class folders: sort them into "
            "val/<wnid>/ with the usual valprep.sh script, then run this again."
        )
    lines.append(f"{_IMAGENET_LAYOUT}. Nothing was written.")
    raise VipnbError("\n".join(lines))


def _check_no_foreign_entries(root: Path, wnids: list[str], test_ids: set[str]) -> None:
    """Refuse to mix builds: a leftover class or test image would silently join this dataset."""
    foreign: list[Path] = []
    for split in ("train", "val"):
        split_dir = root / split
        if split_dir.is_dir():
            kept = set(wnids)
            foreign += [entry for entry in sorted(split_dir.iterdir()) if entry.name not in kept]
    test_dir = root / "test" / "imgs"
    if test_dir.is_dir():
        foreign += [
            entry
            for entry in sorted(test_dir.iterdir())
            if not entry.name.startswith(".") and entry.name not in test_ids
        ]
    if foreign:
        examples = ", ".join(str(path) for path in foreign[:3])
        raise VipnbError(
            f"{root} already holds {len(foreign)} entries this build would not make (e.g. "
            f"{examples}); it was probably built with another `classes` or other split files. "
            f"Build into an empty out_dir, or pass --rebuild to empty {root} first. Nothing was "
            f"written."
        )


class _Placer:
    """Puts one source file at its destination by the chosen mode, with the fallbacks."""

    def __init__(self, mode: str):
        self.mode = mode
        self.try_hardlink = mode == "link"
        self.try_symlink = mode in ("link", "symlink")

    def place(self, planned: _PlannedFile) -> str:
        destination = planned.destination
        if _is_complete(destination, planned.size):
            return "skipped"
        partial = destination.with_name(f".{destination.name}.partial")
        partial.unlink(missing_ok=True)  # left over from an interrupted run
        source = planned.source

        if self.try_hardlink:
            try:
                os.link(source, partial)
                os.replace(partial, destination)
                return "linked"
            except OSError as error:
                if error.errno not in _HARDLINK_UNAVAILABLE:
                    raise
                self.try_hardlink = False  # decided once, not retried for every file
        if self.try_symlink:
            try:
                os.symlink(source, partial)
                os.replace(partial, destination)
                return "symlinked"
            except OSError:
                if self.mode == "symlink":
                    raise
                self.try_symlink = False
        shutil.copy2(source, partial)
        os.replace(partial, destination)
        return "copied"


def _is_complete(destination: Path, expected_size: int) -> bool:
    try:
        return os.stat(destination).st_size == expected_size  # follows symlinks
    except OSError:
        return False  # absent, or a dangling symlink


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_vipriors(
    imagenet_root: str | os.PathLike,
    splits_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    classes: int | None = None,
    mode: str = "link",
    progress: bool = True,
    rebuild: bool = False,
) -> BuildReport:
    """Build ``<out_dir>/imagenet_50`` from ImageNet-2012 and the official VIPriors split files.

    Args:
        imagenet_root: folder holding ImageNet-2012 ``train/<wnid>/*.JPEG`` and
            ``val/<wnid>/*.JPEG`` (val sorted into class folders, e.g. by valprep.sh).
        splits_dir: folder holding the toolkit's ``train.pickle``, ``val.pickle``, ``test.pickle``.
        out_dir: where ``imagenet_50/`` is made (created if needed).
        classes: keep only the first N wnids in sorted order; None keeps all 1000. Test images
            keep their original ids ``img_<i>.JPEG``.
        mode: "link" (hard links; falls back to symlinks across file systems, then to copies),
            "symlink" or "copy". Files already in place with the right size are kept as they are.
        progress: show tqdm progress bars.
        rebuild: empty ``imagenet_50`` first when it holds an earlier build (of any settings).

    Every input is checked before anything is written; a re-run with the same settings resumes
    an interrupted build. A build of other settings is refused unless ``rebuild``.
    """
    if mode not in BUILD_MODES:
        raise VipnbError(
            f"mode={mode!r} is not a build mode; use one of {', '.join(map(repr, BUILD_MODES))}."
        )
    imagenet_root = Path(imagenet_root).expanduser().absolute()  # symlinks must not be relative
    splits_dir = Path(splits_dir).expanduser()
    root = Path(out_dir).expanduser() / DATASET_FOLDER

    _check_imagenet_root(imagenet_root)
    splits = load_vipriors_splits(splits_dir)
    all_wnids = splits.wnids
    _check_classes(classes, len(all_wnids))
    wnids = all_wnids[:classes] if classes is not None else all_wnids
    settings = {
        "dataset": "vipriors",
        "version": VERSION,
        "classes": len(wnids),
        "imagenet": str(imagenet_root),
        "split_sha256": {name: _sha256(splits_dir / name) for name in SPLIT_FILE_NAMES},
    }
    verdict = check_build_folder(root, settings, rebuild)
    planned, test_rows = _plan(splits, wnids, imagenet_root, root)
    files = _stat_sources(planned, imagenet_root, progress)
    if verdict != "rebuild":
        _check_no_foreign_entries(root, wnids, {image_id for image_id, _ in test_rows})

    # Inputs are fine; from here on we write. The settings go first and the old completion
    # marker next, so that an interrupted build never looks complete and is known for what it is.
    try:
        if verdict == "rebuild":
            empty_folder(root)
        write_text_atomic(root / BUILDING, json.dumps(settings, indent=2) + "\n")
        (root / COMPLETE).unlink(missing_ok=True)
        for directory in sorted({file.destination.parent for file in files}):
            directory.mkdir(parents=True, exist_ok=True)
        (root / "test" / "imgs").mkdir(parents=True, exist_ok=True)

        outcomes = {"linked": 0, "symlinked": 0, "copied": 0, "skipped": 0}
        placer = _Placer(mode)
        for file in tqdm(
            files, desc=f"building {DATASET_FOLDER}", unit="file", disable=not progress
        ):
            try:
                outcomes[placer.place(file)] += 1
            except OSError as error:
                copy_hint = "" if mode == "copy" else ', or try mode="copy"'
                raise VipnbError(
                    f"Could not put {file.source} at {file.destination} (mode {mode!r}): "
                    f"{error.strerror or error}. Check that {root} is writable and has space"
                    f"{copy_hint}; running the build again resumes where it stopped."
                ) from None

        write_class_list(root / "classes.txt", wnids)
        write_labels_csv(root / "test" / "labels.csv", [row[0] for row in test_rows],
                         [row[1] for row in test_rows])
        counts = {split: sum(file.split == split for file in files) for split in ("train", "val")}
        report = BuildReport(
            root=root, classes=len(wnids), test=len(test_rows), **counts, **outcomes
        )
        marker = {
            **settings,
            "classes_limit": classes,
            "counts": {"train": report.train, "val": report.val, "test": report.test},
            "mode": mode,
            "splits": str(splits_dir),
        }
        write_text_atomic(root / COMPLETE, json.dumps(marker, indent=2, sort_keys=True) + "\n")
        (root / BUILDING).unlink()
    except OSError as error:
        raise VipnbError(
            f"Could not write under {root}: {error}. Check that it is writable and has space; "
            f"running the build again resumes where it stopped."
        ) from None
    return report
