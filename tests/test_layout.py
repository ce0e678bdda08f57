from pathlib import Path

import pytest
import torch

from vipnb.data.cache import decode_split
from vipnb.data.decode import BadImageError
from vipnb.data.layout import class_names, scan_split
from vipnb.errors import VipnbError


def test_scan_orders_classes_and_test_images(tiny_tree: Path):
    assert class_names(tiny_tree) == ["a_cls", "b_cls", "c_cls"]
    train = scan_split(tiny_tree, "train")
    assert len(train) == 18 and sorted(set(train.labels.tolist())) == [0, 1, 2]
    # img_10 sorts after img_7 (numeric order, the toolkit's test ids)
    (tiny_tree / "test" / "imgs" / "img_8.png").rename(tiny_tree / "test" / "imgs" / "img_10.png")
    test = scan_split(tiny_tree, "test")
    assert test.ids[-2:] == ["img_7.png", "img_10.png"]
    assert test.labels[-1] == -1  # not in labels.csv: unknown label


def test_missing_train_folder_names_the_path(tmp_path: Path):
    with pytest.raises(VipnbError, match=r"train does not exist.*vipnb data fashion50"):
        scan_split(tmp_path, "train")


def test_val_class_unknown_to_train_is_an_error(tiny_tree: Path):
    (tiny_tree / "val" / "zzz").mkdir()
    with pytest.raises(VipnbError, match="zzz.*train/ does not have"):
        scan_split(tiny_tree, "val")


def test_decode_split_shapes_and_disk_cache(tiny_tree: Path, tmp_path: Path):
    files = scan_split(tiny_tree, "train")
    first = decode_split(files, size=16, cache_dir=tmp_path / "cache")
    assert first.images.shape == (18, 3, 16, 16) and first.images.dtype == torch.uint8
    assert len(list((tmp_path / "cache").glob("train-16px-*.u8"))) == 1
    again = decode_split(files, size=16, cache_dir=tmp_path / "cache")
    assert torch.equal(first.images, again.images) and again.ids == first.ids


def test_corrupt_image_stops_with_its_name(tiny_tree: Path):
    bad = tiny_tree / "train" / "b_cls" / "b_cls_3.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(BadImageError, match=r"b_cls_3\.png.*skip_bad_images"):
        decode_split(scan_split(tiny_tree, "train"), size=8)


def test_corrupt_image_skipped_and_counted_when_asked(tiny_tree: Path):
    bad = tiny_tree / "train" / "b_cls" / "b_cls_3.png"
    bad.write_bytes(b"\x89PNG truncated")
    split = decode_split(scan_split(tiny_tree, "train"), size=8, skip_bad=True)
    assert len(split) == 17 and split.skipped == [str(bad)]
    assert "b_cls_3.png" not in split.ids


def test_missing_file_after_scan_is_named(tiny_tree: Path):
    files = scan_split(tiny_tree, "val")
    files.paths[0].unlink()
    with pytest.raises((BadImageError, FileNotFoundError), match="a_cls_0.png"):
        decode_split(files, size=8)
