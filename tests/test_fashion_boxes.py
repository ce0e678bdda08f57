import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vipnb.cli import main
from vipnb.data.cub import read_cub
from vipnb.data.fashion_boxes import NAMES, STAMP, build_fashion_boxes, check_options, folder_name
from vipnb.errors import VipnbError

ITEM = 200  # brightness of the fake items' solid rectangle


def fake_arrays(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST-shaped items: black 28×28 with one solid rectangle (8–16 px sides) at a
    random place, so an item's tight box is smaller than its square."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class)
    rng.shuffle(labels)
    images = np.zeros((len(labels), 28, 28), np.uint8)
    for image in images:
        h, w = rng.integers(8, 17, size=2)
        top, left = rng.integers(0, 28 - h + 1), rng.integers(0, 28 - w + 1)
        image[top : top + h, left : left + w] = ITEM
    return images, labels


@pytest.fixture
def source():
    return (*fake_arrays(4, seed=1), *fake_arrays(2, seed=2))


def build(out: Path, source, **settings) -> Path:
    settings = {"canvas": 48, "train_per_class": 2, "test_per_class": 1, **settings}
    return build_fashion_boxes(out, source=source, **settings)


def test_build_is_read_by_read_cub_with_items_from_the_right_split(tmp_path: Path, source):
    root = build(tmp_path / "fb", source)
    index = read_cub(root)
    assert len(index) == 30 and index.classes == [f"{i:03d}.{n}" for i, n in
                                                  enumerate(NAMES, start=1)]
    assert np.bincount(index.labels).tolist() == [3] * 10
    assert int(index.is_train.sum()) == 20 and len(index.split("test")) == 10
    assert index.image_sizes.tolist() == [[48, 48]] * 30
    train_images, train_labels, test_images, test_labels = source
    for path, label, is_train in zip(index.paths, index.labels, index.is_train, strict=True):
        name, split, number = path.stem.rsplit("_", 2)
        assert split == ("train" if is_train else "test") and name == NAMES[label]
        assert (train_labels if is_train else test_labels)[int(number)] == label
    assert json.loads((root / STAMP).read_text())["counts"] == {"train": 20, "test": 10}


def test_boxes_are_tight_around_the_item(tmp_path: Path, source):
    index = read_cub(build(tmp_path / "fb", source))
    assert (index.boxes >= 0).all() and (index.boxes <= 48).all()
    widths = index.boxes[:, 2] - index.boxes[:, 0]
    assert widths.min() >= 3 and widths.max() <= 33
    for path, box in zip(index.paths, index.boxes, strict=True):
        pixels = np.asarray(Image.open(path))
        assert pixels.shape == (48, 48, 3)
        # Only the item is exactly ITEM in all channels: distractors are at most 70 % opaque
        # over a noisy, tinted background.
        bright = (pixels == ITEM).all(-1)
        rows, cols = np.nonzero(bright)
        extent = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
        x1, y1, x2, y2 = box
        assert x1 <= extent[0] and y1 <= extent[1] and extent[2] <= x2 and extent[3] <= y2
        assert np.abs(extent - box).max() <= 2.5, (extent, box)  # a scaled edge's blur
        inside = bright[int(y1) : int(y2), int(x1) : int(x2)]
        assert inside.mean() > 0.25  # the solid rectangle fills most of its tight box


def test_second_call_is_a_no_op_and_other_settings_need_rebuild(tmp_path: Path, source):
    root = build(tmp_path / "fb", source)
    stamp = (root / STAMP).stat().st_mtime_ns
    boxes = (root / "bounding_boxes.txt").read_text()
    assert build(tmp_path / "fb", source=None) == root  # reused: the source is not even needed
    assert (root / STAMP).stat().st_mtime_ns == stamp
    build(tmp_path / "again", source)
    assert (tmp_path / "again" / "bounding_boxes.txt").read_text() == boxes  # seeded
    with pytest.raises(VipnbError) as caught:
        build(tmp_path / "fb", source, seed=1)
    message = str(caught.value)
    assert str(root) in message and "seed 0 in the folder, 1 now" in message
    assert "another --out" in message and "--rebuild" in message
    assert (root / STAMP).stat().st_mtime_ns == stamp  # untouched
    build(tmp_path / "fb", source, seed=1, rebuild=True)
    assert json.loads((root / STAMP).read_text())["seed"] == 1
    assert (root / "bounding_boxes.txt").read_text() != boxes
    assert len(read_cub(root)) == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "fb"]  # no temp folders


def test_a_build_finished_meanwhile_by_another_process_is_kept(tmp_path: Path, source,
                                                              monkeypatch):
    """Two runs started together build the same settings at once: the one that finishes
    second keeps the first one's folder (the other run may be reading it) and drops its own."""
    import vipnb.data.fashion_boxes as fashion_boxes

    out = tmp_path / "fb"
    write_tree = fashion_boxes._write_tree

    def other_process_finishes_first(work, *args):
        monkeypatch.setattr(fashion_boxes, "_write_tree", write_tree)
        build(out, source)  # the other process's build, complete before ours
        (out / "read-by-the-other-run").touch()
        return write_tree(work, *args)

    monkeypatch.setattr(fashion_boxes, "_write_tree", other_process_finishes_first)
    assert build(out, source) == out
    assert (out / "read-by-the-other-run").exists()  # not swapped away
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fb"]  # ours is gone


def test_unreadable_stamp_needs_rebuild_and_foreign_folder_is_kept(tmp_path: Path, source):
    partial = tmp_path / "fb"
    partial.mkdir()
    (partial / STAMP).write_text("{truncated")
    (partial / "images.txt").write_text("1 a.png\n")
    with pytest.raises(VipnbError, match=r"its marker .fashion_boxes.json is unreadable"):
        build(partial, source)
    assert len(read_cub(build(partial, source, rebuild=True))) == 30
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    for rebuild in (False, True):
        with pytest.raises(VipnbError, match=r"mine holds files \(notes.txt\) but no "
                                             r"\.fashion_boxes\.json.*even with --rebuild"):
            build(foreign, source, rebuild=rebuild)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(VipnbError, match=r"test set has 2 usable images of class tshirt_top, "
                                         r"fewer than test_per_class=3"):
        build(tmp_path / "big", source, test_per_class=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fb", "mine"]


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_cli_builds_from_where_fashion50_finds_fashion_mnist(tmp_path: Path, monkeypatch,
                                                             capsys):
    folder = tmp_path / "idx"
    folder.mkdir()
    for prefix, (images, labels) in (("train", fake_arrays(100, 3)), ("t10k", fake_arrays(50, 4))):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    monkeypatch.setenv("VIPNB_FASHION_MNIST", str(folder))
    assert main(["data", "fashion-boxes", "--out", str(tmp_path / "fb"), "--seed", "3"]) == 0
    assert "fashion-boxes ready at" in capsys.readouterr().out
    record = json.loads((tmp_path / "fb" / STAMP).read_text())
    assert record["seed"] == 3 and record["source"] == str(folder)
    assert record["counts"] == {"train": 1000, "test": 500}
    assert main(["data", "fashion-boxes"]) == 2
    assert "needs --out DIR" in capsys.readouterr().err
    assert main(["data", "fashion-boxes", "--out", str(tmp_path / "fb"), "--seed", "4"]) == 2
    assert "seed 3 in the folder, 4 now" in capsys.readouterr().err
    assert main(["data", "fashion-boxes", "--out", str(tmp_path / "fb"), "--seed", "4",
                 "--rebuild"]) == 0
    assert json.loads((tmp_path / "fb" / STAMP).read_text())["seed"] == 4


def bright_outside_box(root: Path) -> int:
    """Pixels brighter than 120 outside each image's box (grown by 1 px), over the build."""
    index = read_cub(root)
    count = 0
    for path, (x1, y1, x2, y2) in zip(index.paths, index.boxes, strict=True):
        pixels = np.asarray(Image.open(root / "images" / path).convert("L")).copy()
        pixels[max(0, int(y1) - 1) : int(y2) + 1, max(0, int(x1) - 1) : int(x2) + 1] = 0
        count += int((pixels > 120).sum())
    return count


def test_item_side_and_distractors_are_build_options(tmp_path: Path, source):
    plain = build(tmp_path / "plain", source, distractors=(0, 0))
    assert bright_outside_box(plain) == 0  # only the noisy background around the item
    assert bright_outside_box(build(tmp_path / "cluttered", source, distractors=(4, 4))) > 0
    boxes = {side: read_cub(build(tmp_path / f"items{side[0]}", source, item_side=side)).boxes
             for side in ((8, 12), (40, 48))}
    areas = {side: ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).mean() for side, b in boxes.items()}
    assert areas[(40, 48)] > 4 * areas[(8, 12)]
    stamp = json.loads((plain / STAMP).read_text())
    assert stamp["distractors"] == [0, 0] and stamp["item_side"] == [24, 48]
    with pytest.raises(VipnbError, match=r"distractors"):
        build(plain, source, distractors=(1, 2))


def test_a_build_from_before_the_options_is_reused_as_their_defaults(tmp_path: Path, source):
    root = build(tmp_path / "fb", source)
    stamp = json.loads((root / STAMP).read_text())
    old = {k: v for k, v in stamp.items() if k not in ("item_side", "distractors")}
    (root / STAMP).write_text(json.dumps(old))
    assert build(root, source=None) == root  # reused without its source
    with pytest.raises(VipnbError, match=r"item_side"):
        build(root, source, item_side=(30, 40))


@pytest.mark.parametrize("options, message", [
    ({"items": 3}, r"no build option items; the options are canvas, "),
    ({"item_side": [48, 24]}, r"item_side=\[48, 24\]; give \[low, high\]"),
    ({"item_side": [2, 8]}, r"4 <= low <= high <= 64"),
    ({"distractors": 2}, r"distractors=2; give \[low, high\]"),
    ({"train_per_class": 0}, r"train_per_class=0"),
    ({"canvas": 8}, r"canvas=8 is too small"),
])
def test_bad_options_name_the_option_and_where_they_came_from(options, message):
    with pytest.raises(VipnbError, match=message) as caught:
        check_options(options, "recipe x: dataset_options")
    assert str(caught.value).startswith("recipe x: dataset_options: ")


def test_each_set_of_options_has_its_own_folder_name():
    assert folder_name(check_options({}, "")) == "fashion_boxes"
    assert folder_name(check_options({"canvas": 64, "item_side": (24, 48)}, "")) == (
        "fashion_boxes")
    assert folder_name(check_options({"item_side": [32, 56], "distractors": [0, 1]}, "")) == (
        "fashion_boxes-distractors0-1-item_side32-56")


def test_cli_passes_the_build_options(tmp_path: Path, monkeypatch):
    built = {}
    monkeypatch.setattr("vipnb.data.fashion_boxes.build_fashion_boxes",
                        lambda out, **kwargs: built.update(kwargs) or Path(out))
    assert main(["data", "fashion-boxes", "--out", str(tmp_path / "fb"), "--item-side", "32",
                 "56", "--distractors", "0", "1", "--train-per-class", "300"]) == 0
    assert {k: built[k] for k in ("item_side", "distractors", "train_per_class")} == {
        "item_side": [32, 56], "distractors": [0, 1], "train_per_class": 300}
    assert "canvas" not in built  # left at the builder's default
