"""`vipnb data vipriors` refuses to mix two builds in one folder, on small generated split files
and a fake ImageNet (the official split files are not needed)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
from PIL import Image

from vipnb.cli import main
from vipnb.data.vipriors import build_vipriors
from vipnb.errors import VipnbError

WNIDS = ("n01", "n02")
TEST = [f"{wnid}/ILSVRC2012_val_{wnid}_{i}.JPEG" for wnid in WNIDS for i in range(2)]


def write_splits(folder: Path, train_numbers, val_numbers) -> Path:
    """Split files naming images <wnid>_<n>.JPEG of ImageNet train, for each wnid and n."""
    folder.mkdir(parents=True)
    for name, numbers in (("train", train_numbers), ("val", val_numbers)):
        entries = [[wnid, f"{wnid}_{n}.JPEG"] for wnid in WNIDS for n in numbers]
        (folder / f"{name}.pickle").write_bytes(pickle.dumps(entries))
    (folder / "test.pickle").write_bytes(pickle.dumps(TEST))
    return folder


@pytest.fixture
def imagenet(tmp_path: Path) -> Path:
    """Train images <wnid>_0..5.JPEG per class and the test images, each 4x4 of its own colour."""
    root = tmp_path / "imagenet"
    paths = [root / "train" / wnid / f"{wnid}_{n}.JPEG" for wnid in WNIDS for n in range(6)]
    paths += [root / "val" / entry for entry in TEST]
    for number, path in enumerate(paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), (number * 9, 0, 0)).save(path, "JPEG")
    return root


@pytest.fixture
def splits_a(tmp_path: Path) -> Path:
    return write_splits(tmp_path / "splits_a", train_numbers=(0, 1, 2), val_numbers=(3, 4, 5))


@pytest.fixture
def splits_b(tmp_path: Path) -> Path:
    """Other split files over the same classes: A's val images are B's train images."""
    return write_splits(tmp_path / "splits_b", train_numbers=(3, 4, 5), val_numbers=(0, 1, 2))


def build(imagenet: Path, splits: Path, out: Path, **options):
    return build_vipriors(imagenet, splits, out, progress=False, **options)


def files(root: Path, split: str) -> set[str]:
    return {path.name for path in (root / split).rglob("*.JPEG")}


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_other_split_files_are_refused_and_the_folder_is_left_as_it_was(
        tmp_path, imagenet, splits_a, splits_b):
    build(imagenet, splits_a, tmp_path / "out")
    root = tmp_path / "out" / "imagenet_50"
    before = snapshot(root)
    with pytest.raises(VipnbError) as caught:
        build(imagenet, splits_b, tmp_path / "out")
    message = str(caught.value)
    assert str(root) in message and "complete build with other settings" in message
    assert "split_sha256 train.pickle" in message and "split_sha256 val.pickle" in message
    assert "split_sha256 test.pickle" not in message
    assert "another --out" in message and "--rebuild" in message
    assert snapshot(root) == before


def test_rebuild_gives_exactly_the_new_split_and_keeps_the_sources(
        tmp_path, imagenet, splits_a, splits_b):
    build(imagenet, splits_a, tmp_path / "out")
    report = build(imagenet, splits_b, tmp_path / "out", rebuild=True)
    root = report.root
    assert files(root, "train") == {f"{w}_{n}.JPEG" for w in WNIDS for n in (3, 4, 5)}
    assert files(root, "val") == {f"{w}_{n}.JPEG" for w in WNIDS for n in (0, 1, 2)}
    assert report.linked == 6 + 6 + 4 and report.skipped == 0
    marker = json.loads((root / ".complete").read_text())
    assert (marker["dataset"], marker["version"], marker["classes"]) == ("vipriors", 1, 2)
    assert marker["imagenet"] == str(imagenet.absolute())
    assert len(list(imagenet.rglob("*.JPEG"))) == 12 + 4  # links went, never their sources


def test_another_imagenet_folder_or_classes_is_refused(tmp_path, imagenet, splits_a):
    build(imagenet, splits_a, tmp_path / "out")
    os.symlink(imagenet, tmp_path / "copy")
    with pytest.raises(VipnbError, match=r"imagenet '.*imagenet' in the folder, '.*copy' now"):
        build(tmp_path / "copy", splits_a, tmp_path / "out")
    with pytest.raises(VipnbError, match=r"classes 2 in the folder, 1 now"):
        build(imagenet, splits_a, tmp_path / "out", classes=1)


def test_interrupted_build_of_other_splits_is_refused_and_of_the_same_resumes(
        tmp_path, imagenet, splits_a, splits_b, monkeypatch):
    def killed(*args, **kwargs):
        raise KeyboardInterrupt("simulated kill")

    with monkeypatch.context() as patch:
        patch.setattr("vipnb.data.vipriors.write_class_list", killed)
        with pytest.raises(KeyboardInterrupt):
            build(imagenet, splits_a, tmp_path / "out")
    root = tmp_path / "out" / "imagenet_50"
    with pytest.raises(VipnbError, match="interrupted build with other settings"):
        build(imagenet, splits_b, tmp_path / "out")
    report = build(imagenet, splits_a, tmp_path / "out")
    assert report.skipped == 16 and (root / ".complete").is_file()
    assert not (root / ".building.json").exists()


def test_folder_with_foreign_files_is_refused_even_with_rebuild(tmp_path, imagenet, splits_a):
    root = tmp_path / "out" / "imagenet_50"
    root.mkdir(parents=True)
    (root / "notes.txt").write_text("keep me")
    for rebuild in (False, True):
        with pytest.raises(VipnbError, match=r"imagenet_50 holds files \(notes.txt\) but no "
                                             r"\.complete or \.building\.json"):
            build(imagenet, splits_a, tmp_path / "out", rebuild=rebuild)
    assert [p.name for p in root.iterdir()] == ["notes.txt"]


def test_cli_refuses_identical_train_and_val_files(tmp_path, imagenet, capsys):
    splits = write_splits(tmp_path / "splits", train_numbers=(0, 1), val_numbers=(0, 1))
    code = main(["data", "vipriors", "--imagenet", str(imagenet), "--splits", str(splits),
                 "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 2
    assert f"{splits / 'train.pickle'} and {splits / 'val.pickle'} share 4 entries" in error
    assert "identical" in error
    assert not (tmp_path / "out").exists()


def test_cli_rebuild_flag(tmp_path, imagenet, splits_a, splits_b, capsys):
    common = ["data", "vipriors", "--imagenet", str(imagenet), "--out", str(tmp_path / "out")]
    assert main([*common, "--splits", str(splits_a)]) == 0
    assert main([*common, "--splits", str(splits_b)]) == 2
    assert "pass --rebuild" in capsys.readouterr().err
    assert main([*common, "--splits", str(splits_b), "--rebuild"]) == 0
    assert files(tmp_path / "out" / "imagenet_50", "val") == {
        f"{w}_{n}.JPEG" for w in WNIDS for n in (0, 1, 2)}
