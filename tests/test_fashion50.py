import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from vipnb.cli import main
from vipnb.data.fashion50 import CLASS_NAMES, build_fashion50, draw_split
from vipnb.data.idx import read_idx
from vipnb.data.layout import scan_split
from vipnb.errors import VipnbError


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_source(tmp_path: Path, monkeypatch) -> Path:
    """Fashion-MNIST-shaped IDX files: 30 train images per class, 25 test images."""
    rng = np.random.default_rng(1)
    source = tmp_path / "idx"
    source.mkdir()
    train_labels = np.repeat(np.arange(10), 30)
    rng.shuffle(train_labels)
    test_labels = rng.integers(0, 10, 25)
    write_idx(source / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (300, 28, 28)))
    write_idx(source / "train-labels-idx1-ubyte.gz", train_labels)
    write_idx(source / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (25, 28, 28)))
    write_idx(source / "t10k-labels-idx1-ubyte.gz", test_labels)
    # the fake stands where Debian's package puts the files
    monkeypatch.setattr("vipnb.data.fashion50.DEBIAN_DIR", source)
    return source


def test_idx_round_trip_and_bad_magic(tmp_path: Path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), array)
    (tmp_path / "b").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(VipnbError, match="not an IDX file"):
        read_idx(tmp_path / "b")


def test_split_is_disjoint_balanced_and_seeded():
    labels = np.repeat(np.arange(10), 120)
    train, val = draw_split(labels, 50, seed=0)
    assert len(train) == len(val) == 500 and not set(train) & set(val)
    assert np.bincount(labels[train]).tolist() == [50] * 10
    again, _ = draw_split(labels, 50, seed=0)
    other, _ = draw_split(labels, 50, seed=1)
    assert np.array_equal(train, again) and not np.array_equal(train, other)


def test_build_writes_vipriors_layout(fake_source: Path, tmp_path: Path):
    root = build_fashion50(tmp_path / "f50", per_class=5)
    assert (root / "classes.txt").read_text().split() == CLASS_NAMES
    train, val, test = (scan_split(root, s) for s in ("train", "val", "test"))
    assert len(train) == len(val) == 50 and len(test) == 25
    assert np.bincount(train.labels).tolist() == [5] * 10
    expected = read_idx(fake_source / "t10k-labels-idx1-ubyte.gz")
    assert test.ids[:3] == ["img_0.png", "img_1.png", "img_2.png"]
    np.testing.assert_array_equal(test.labels, expected)
    # images are the source pixels, lossless
    from PIL import Image

    index = int(train.paths[0].stem.split("_")[-1])
    pixels = np.asarray(Image.open(train.paths[0]))
    np.testing.assert_array_equal(pixels, read_idx(fake_source / "train-images-idx3-ubyte.gz")[index])


def test_rebuild_is_a_no_op_and_missing_source_is_explained(fake_source: Path, tmp_path: Path,
                                                           monkeypatch):
    root = build_fashion50(tmp_path / "f50", per_class=5)
    stamp = (root / ".complete").stat().st_mtime_ns
    build_fashion50(tmp_path / "f50", per_class=5)
    assert (root / ".complete").stat().st_mtime_ns == stamp
    monkeypatch.setattr("vipnb.data.fashion50.DEBIAN_DIR", tmp_path / "nowhere_either")
    monkeypatch.setattr("vipnb.data.fashion50._download", lambda target: "no network (test)")
    with pytest.raises(VipnbError, match=r"nowhere, .*nowhere_either.*apt-get install "
                                         r"dataset-fashion-mnist.*--fashion-mnist DIR"):
        build_fashion50(tmp_path / "other", per_class=5, source_dir=tmp_path / "nowhere")


def test_the_cli_reads_fashion_mnist_from_the_flag_or_the_environment(
        fake_source: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setattr("vipnb.data.fashion50.DEBIAN_DIR", tmp_path / "not_debian")
    monkeypatch.setattr("vipnb.data.fashion50._download", lambda target: "no network (test)")
    assert main(["data", "fashion50", "--out", str(tmp_path / "a"), "--per-class", "5",
                 "--fashion-mnist", str(fake_source)]) == 0
    monkeypatch.setenv("VIPNB_FASHION_MNIST", str(fake_source))
    assert main(["data", "fashion50", "--out", str(tmp_path / "b"), "--per-class", "5"]) == 0
    monkeypatch.delenv("VIPNB_FASHION_MNIST")
    assert main(["data", "fashion50", "--out", str(tmp_path / "c"), "--per-class", "5"]) == 2


def snapshot(folder: Path) -> dict:
    """Every file under `folder` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def split_indices(root: Path, split: str) -> set[int]:
    return {int(p.stem.rsplit("_", 1)[1]) for p in (root / split).rglob("*.png")}


@pytest.mark.parametrize(("setting", "other"), [("seed", 1), ("per_class", 6)])
def test_other_settings_are_refused_and_the_folder_is_left_as_it_was(
        fake_source: Path, tmp_path: Path, setting: str, other: int):
    root = build_fashion50(tmp_path / "f50", per_class=5, seed=0)
    before = snapshot(root)
    with pytest.raises(VipnbError) as caught:
        build_fashion50(root, **{"per_class": 5, "seed": 0, setting: other})
    message = str(caught.value)
    assert str(root) in message and "complete build" in message
    assert f"{setting} {5 if setting == 'per_class' else 0} in the folder, {other} now" in message
    assert "another --out" in message and "--rebuild" in message
    assert snapshot(root) == before


def test_rebuild_gives_exactly_the_new_build(fake_source: Path, tmp_path: Path):
    root = build_fashion50(tmp_path / "f50", per_class=5, seed=0)
    (root / ".vipnb_cache").mkdir()  # a loader's cache of the old images goes too
    build_fashion50(root, per_class=5, seed=1, rebuild=True)
    fresh = build_fashion50(tmp_path / "fresh", per_class=5, seed=1)
    train, val = split_indices(root, "train"), split_indices(root, "val")
    assert len(train) == len(val) == 50 and not train & val
    assert (train, val) == (split_indices(fresh, "train"), split_indices(fresh, "val"))
    assert sorted(p.name for p in root.iterdir()) == [".complete", "classes.txt", "test",
                                                      "train", "val"]
    marker = json.loads((root / ".complete").read_text())
    assert (marker["dataset"], marker["seed"], marker["version"]) == ("fashion50", 1, 1)


def test_interrupted_build_resumes_with_its_settings_and_refuses_others(
        fake_source: Path, tmp_path: Path, monkeypatch):
    def killed(*args, **kwargs):
        raise KeyboardInterrupt("simulated kill")

    with monkeypatch.context() as patch:
        patch.setattr("vipnb.data.fashion50.write_labels_csv", killed)
        with pytest.raises(KeyboardInterrupt):
            build_fashion50(tmp_path / "f50", per_class=5, seed=0)
    root = tmp_path / "f50"
    assert not (root / ".complete").exists()
    with pytest.raises(VipnbError, match=r"interrupted build with other settings \(seed 0 in"):
        build_fashion50(root, per_class=5, seed=1)
    build_fashion50(root, per_class=5, seed=0)
    assert (root / ".complete").is_file() and not (root / ".building.json").exists()
    assert len(split_indices(root, "train")) == 50


def test_folder_with_foreign_files_is_refused_even_with_rebuild(fake_source: Path,
                                                                tmp_path: Path):
    mine = tmp_path / "mine"
    (mine / "train").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    for rebuild in (False, True):
        with pytest.raises(VipnbError) as caught:
            build_fashion50(mine, per_class=5, rebuild=rebuild)
        assert f"{mine} holds files (notes.txt, train) but no .complete" in str(caught.value)
        assert "another --out" in str(caught.value)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt", "train"]


def test_cli_refuses_another_seed_and_rebuilds_with_the_flag(fake_source: Path, tmp_path: Path,
                                                            capsys):
    out = str(tmp_path / "f50")
    assert main(["data", "fashion50", "--out", out, "--per-class", "5"]) == 0
    assert main(["data", "fashion50", "--out", out, "--per-class", "5", "--seed", "1"]) == 2
    assert "seed 0 in the folder, 1 now" in capsys.readouterr().err
    assert main(["data", "fashion50", "--out", out, "--per-class", "5", "--seed", "1",
                 "--rebuild"]) == 0
    assert json.loads((tmp_path / "f50" / ".complete").read_text())["seed"] == 1
