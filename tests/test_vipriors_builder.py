"""The VIPriors ImageNet-50 builder, on a tiny fake ImageNet that uses real names from the splits.

The fake holds the first three classes (sorted wnids): their 50 + 50 train/val images and their
150 test images, each an 8x8 JPEG.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import pytest
from conftest import SPLIT_NAMES, SPLITS_DIR, needs_official_splits
from PIL import Image

from vipnb.data.splits import VipriorsSplits, load_vipriors_splits, test_labels
from vipnb.data.vipriors import build_vipriors
from vipnb.errors import VipnbError

CLASSES = 3

pytestmark = needs_official_splits


def _write_fake_imagenet(
    root: Path,
    splits: VipriorsSplits,
    wnids: list[str],
    leave_out: set[Path] = frozenset(),
    flat_val: bool = False,
) -> Path:
    """ImageNet-2012 layout holding only what the splits need for ``wnids``."""
    kept = set(wnids)
    sources = [root / "train" / wnid / name for wnid, name in splits.train + splits.val]
    sources = [path for path in sources if path.parent.name in kept]
    for entry, wnid in zip(splits.test, test_labels(splits.test), strict=True):
        if wnid in kept:
            sources.append(root / "val" / (entry.split("/")[1] if flat_val else entry))
    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "val").mkdir(parents=True, exist_ok=True)
    for number, path in enumerate(sources):
        if path in leave_out:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        # Distinct pixels per file, so files differ in content (and usually in size).
        colour = (number % 256, (number * 7) % 256, (number * 13) % 256)
        Image.new("RGB", (8, 8), colour).save(path, "JPEG")
    return root


@pytest.fixture(scope="module")
def splits() -> VipriorsSplits:
    return load_vipriors_splits(SPLITS_DIR)


@pytest.fixture(scope="module")
def wnids(splits) -> list[str]:
    return splits.wnids[:CLASSES]


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory, splits, wnids) -> Path:
    return _write_fake_imagenet(tmp_path_factory.mktemp("imagenet"), splits, wnids)


@pytest.fixture(scope="module")
def built(tmp_path_factory, imagenet):
    out_dir = tmp_path_factory.mktemp("out")
    report = build_vipriors(imagenet, SPLITS_DIR, out_dir, classes=CLASSES, progress=False)
    return report, out_dir / "imagenet_50"


def _expected_test_images(splits: VipriorsSplits, wnids: list[str]) -> dict[str, str]:
    """img_<i>.JPEG -> test entry, for the test images of ``wnids``, i = original position."""
    return {
        f"img_{index}.JPEG": entry
        for index, (entry, wnid) in enumerate(
            zip(splits.test, test_labels(splits.test), strict=True)
        )
        if wnid in wnids
    }


def test_train_and_val_follow_the_toolkit_layout(built, splits, wnids):
    report, root = built
    for split_name, entries in (("train", splits.train), ("val", splits.val)):
        assert sorted(os.listdir(root / split_name)) == wnids
        for wnid in wnids:
            expected = {name for entry_wnid, name in entries if entry_wnid == wnid}
            assert len(expected) == 50
            assert set(os.listdir(root / split_name / wnid)) == expected
    assert (report.classes, report.train, report.val, report.test) == (3, 150, 150, 150)
    assert report.linked + report.symlinked + report.copied == 450
    assert report.skipped == 0


def test_test_images_keep_their_original_index(built, splits, wnids, imagenet):
    _, root = built
    expected = _expected_test_images(splits, wnids)
    assert len(expected) == 150
    assert set(os.listdir(root / "test" / "imgs")) == set(expected)
    # Ids are the positions in the full test.pickle, not renumbered 0..149.
    assert max(int(name[4:-5]) for name in expected) > 149
    for image_id, entry in expected.items():
        built_bytes = (root / "test" / "imgs" / image_id).read_bytes()
        assert built_bytes == (imagenet / "val" / entry).read_bytes()


def test_labels_csv_and_classes_txt(built, splits, wnids):
    _, root = built
    assert (root / "classes.txt").read_text().splitlines() == wnids
    lines = (root / "test" / "labels.csv").read_text().splitlines()
    assert lines[0] == "Image IDs,Labels"
    rows = [line.split(",") for line in lines[1:]]
    expected = _expected_test_images(splits, wnids)
    assert [image_id for image_id, _ in rows] == list(expected)  # in test.pickle order
    for image_id, label in rows:
        assert wnids[int(label)] == expected[image_id].split("/")[0]


def test_complete_marker_records_counts_and_split_hashes(built):
    _, root = built
    marker = json.loads((root / ".complete").read_text())
    assert marker["counts"] == {"train": 150, "val": 150, "test": 150}
    assert marker["classes"] == 3
    for name in SPLIT_NAMES:
        expected = hashlib.sha256((SPLITS_DIR / name).read_bytes()).hexdigest()
        assert marker["split_sha256"][name] == expected


def test_link_mode_hard_links_on_one_file_system(built, imagenet, wnids, splits):
    report, root = built
    assert report.linked == 450
    wnid, name = next(entry for entry in splits.train if entry[0] == wnids[0])
    assert os.path.samefile(root / "train" / wnid / name, imagenet / "train" / wnid / name)


def test_second_run_skips_everything(built, imagenet):
    _, root = built
    report = build_vipriors(imagenet, SPLITS_DIR, root.parent, classes=CLASSES, progress=False)
    assert report.skipped == 450
    assert report.linked == report.symlinked == report.copied == 0
    assert (root / ".complete").is_file()


def test_interrupted_build_resumes(tmp_path, imagenet, splits, wnids):
    build_vipriors(imagenet, SPLITS_DIR, tmp_path, classes=1, progress=False)
    root = tmp_path / "imagenet_50"
    train_dir = root / "train" / wnids[0]
    names = sorted(os.listdir(train_dir))
    for name in names[:3]:
        (train_dir / name).unlink()
    # A file cut short: unlink first, as it is a hard link to the source.
    (train_dir / names[3]).unlink()
    (train_dir / names[3]).write_bytes(b"half")
    (train_dir / f".{names[0]}.partial").write_bytes(b"left over by the interruption")
    # An interrupted build has its settings recorded, but no completion marker.
    (root / ".complete").rename(root / ".building.json")

    report = build_vipriors(imagenet, SPLITS_DIR, tmp_path, classes=1, progress=False)

    assert report.linked == 4 and report.skipped == 150 - 4
    source = imagenet / "train" / wnids[0] / names[3]
    assert (train_dir / names[3]).read_bytes() == source.read_bytes()
    assert not [name for name in os.listdir(train_dir) if name.endswith(".partial")]
    assert (root / ".complete").is_file()


def test_copy_mode_makes_regular_files(tmp_path, imagenet):
    report = build_vipriors(imagenet, SPLITS_DIR, tmp_path, classes=1, mode="copy", progress=False)
    assert report.copied == 150
    files = [path for path in (tmp_path / "imagenet_50").rglob("*.JPEG")]
    assert len(files) == 150
    for path in files:
        assert not path.is_symlink() and path.is_file() and os.stat(path).st_nlink == 1


def test_symlink_mode_points_at_the_sources(tmp_path, imagenet, splits):
    report = build_vipriors(
        imagenet, SPLITS_DIR, tmp_path, classes=1, mode="symlink", progress=False
    )
    assert report.symlinked == 150
    image = (
        tmp_path
        / "imagenet_50"
        / "test"
        / "imgs"
        / next(iter(os.listdir(tmp_path / "imagenet_50" / "test" / "imgs")))
    )
    assert image.is_symlink() and Path(os.readlink(image)).is_absolute()


def test_cross_device_link_falls_back_to_symlink_then_copy(tmp_path, imagenet, monkeypatch):
    def cross_device_link(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def symlinks_not_allowed(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", cross_device_link)
    report = build_vipriors(imagenet, SPLITS_DIR, tmp_path / "a", classes=1, progress=False)
    assert (report.linked, report.symlinked) == (0, 150)

    monkeypatch.setattr(os, "symlink", symlinks_not_allowed)
    report = build_vipriors(imagenet, SPLITS_DIR, tmp_path / "b", classes=1, progress=False)
    assert (report.linked, report.symlinked, report.copied) == (0, 0, 150)


def test_missing_source_files_are_counted_before_anything_is_written(tmp_path, splits, wnids):
    wnid = wnids[0]
    train_names = [name for entry_wnid, name in splits.train if entry_wnid == wnid]
    test_entry = next(entry for entry in splits.test if entry.startswith(wnid + "/"))
    gone = {
        tmp_path / "imagenet" / "train" / wnid / train_names[0],
        tmp_path / "imagenet" / "train" / wnid / train_names[1],
        tmp_path / "imagenet" / "val" / test_entry,
    }
    imagenet = _write_fake_imagenet(tmp_path / "imagenet", splits, [wnid], leave_out=gone)
    out_dir = tmp_path / "out"

    with pytest.raises(VipnbError) as caught:
        build_vipriors(imagenet, SPLITS_DIR, out_dir, classes=1, progress=False)

    message = str(caught.value)
    assert "lacks 3 of the 150" in message
    assert "train: 2 missing" in message and "test: 1 missing" in message
    assert "val: " not in message
    assert str(tmp_path / "imagenet" / "val" / test_entry) in message
    assert not out_dir.exists()


def test_unsorted_val_folder_gets_a_valprep_hint(tmp_path, splits, wnids):
    imagenet = _write_fake_imagenet(tmp_path / "imagenet", splits, wnids[:1], flat_val=True)
    with pytest.raises(VipnbError, match=r"(?s)test: 50 missing.*valprep"):
        build_vipriors(imagenet, SPLITS_DIR, tmp_path / "out", classes=1, progress=False)
    assert not (tmp_path / "out").exists()


def test_imagenet_without_train_folder_explains_the_layout(tmp_path):
    (tmp_path / "imagenet" / "val").mkdir(parents=True)
    with pytest.raises(VipnbError) as caught:
        build_vipriors(tmp_path / "imagenet", SPLITS_DIR, tmp_path / "out", progress=False)
    assert "train/<wnid>/*.JPEG" in str(caught.value)
    assert "valprep" in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_unknown_mode_lists_the_valid_ones(tmp_path, imagenet):
    with pytest.raises(VipnbError) as caught:
        build_vipriors(imagenet, SPLITS_DIR, tmp_path / "out", mode="bogus", progress=False)
    for mode in ("'link'", "'symlink'", "'copy'"):
        assert mode in str(caught.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("classes", [0, 1001])
def test_classes_out_of_range(tmp_path, imagenet, classes):
    with pytest.raises(VipnbError, match="from 1 to 1000"):
        build_vipriors(imagenet, SPLITS_DIR, tmp_path / "out", classes=classes, progress=False)


def test_build_over_another_build_is_refused(built, imagenet):
    _, root = built
    with pytest.raises(VipnbError, match=r"classes 3 in the folder, 1 now.*--rebuild"):
        build_vipriors(imagenet, SPLITS_DIR, root.parent, classes=1, progress=False)
    assert (root / ".complete").is_file()  # nothing was touched


def test_leftover_entries_of_a_build_with_the_same_settings_are_refused(tmp_path, imagenet):
    build_vipriors(imagenet, SPLITS_DIR, tmp_path, classes=1, progress=False)
    (tmp_path / "imagenet_50" / "train" / "n00000000").mkdir()
    with pytest.raises(VipnbError, match="already holds 1 entries"):
        build_vipriors(imagenet, SPLITS_DIR, tmp_path, classes=1, progress=False)
