from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vipnb.cli import main
from vipnb.data.cub import decode_cub, read_cub
from vipnb.errors import VipnbError

WIDTH, HEIGHT = 40, 30


def make_cub(root: Path, classes=("001.Alpha_bird", "002.Beta_bird"), per_class=3) -> Path:
    """A tiny CUB tree: each image dark with a white rectangle exactly at its box."""
    lines = {name: [] for name in ("images", "labels", "split", "boxes")}
    image_id = 0
    for class_id, name in enumerate(classes, start=1):
        (root / "images" / name).mkdir(parents=True)
        for i in range(per_class):
            image_id += 1
            x, y, w, h = 3 + 2 * i, 4 + i, 20 - i, 15
            pixels = np.full((HEIGHT, WIDTH, 3), 10, np.uint8)
            pixels[y : y + h, x : x + w] = 255
            relative = f"{name}/{name.split('.')[1]}_{i:04d}.jpg"
            Image.fromarray(pixels).save(root / "images" / relative, quality=95)
            lines["images"].append(f"{image_id} {relative}")
            lines["labels"].append(f"{image_id} {class_id}")
            lines["split"].append(f"{image_id} {int(i % 2 == 0)}")
            lines["boxes"].append(f"{image_id} {x:.1f} {y:.1f} {w:.1f} {h:.1f}")
    for name, file in (("images", "images.txt"), ("labels", "image_class_labels.txt"),
                       ("split", "train_test_split.txt"), ("boxes", "bounding_boxes.txt")):
        (root / file).write_text("\n".join(lines[name]) + "\n")
    (root / "classes.txt").write_text(
        "".join(f"{i} {name}\n" for i, name in enumerate(classes, start=1)))
    return root


def set_line(path: Path, number: int, text: str | None) -> None:
    """Replace (or with None, delete) line `number` (1-based) of `path`."""
    lines = path.read_text().splitlines()
    if text is None:
        del lines[number - 1]
    else:
        lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def cub(tmp_path: Path) -> Path:
    return make_cub(tmp_path / "CUB_200_2011")


def test_reads_labels_boxes_and_split(cub: Path):
    index = read_cub(cub)
    assert len(index) == 6 and index.image_ids == [1, 2, 3, 4, 5, 6]
    assert index.classes == ["001.Alpha_bird", "002.Beta_bird"]
    assert index.labels.dtype == np.int64 and index.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert index.boxes.dtype == np.float32 and index.boxes.shape == (6, 4)
    np.testing.assert_allclose(index.boxes[1], [5, 5, 5 + 19, 5 + 15])  # x y w h → x1 y1 x2 y2
    assert index.is_train.tolist() == [True, False, True, True, False, True]
    assert index.paths[3] == cub / "images" / "002.Beta_bird" / "Beta_bird_0000.jpg"
    assert index.image_sizes.tolist() == [[WIDTH, HEIGHT]] * 6
    train, test = index.split("train"), index.split("test")
    assert train.image_ids == [1, 3, 4, 6] and test.image_ids == [2, 5]
    assert test.labels.tolist() == [0, 1] and test.paths == [index.paths[1], index.paths[4]]
    np.testing.assert_array_equal(test.boxes, index.boxes[[1, 4]])
    assert index.subset([5, 0]).image_ids == [6, 1]
    with pytest.raises(VipnbError, match="'val'.*'train' or 'test'"):
        index.split("val")


def test_missing_files_are_listed_with_what_to_do(cub: Path, tmp_path: Path):
    (cub / "bounding_boxes.txt").unlink()
    (cub / "classes.txt").unlink()
    with pytest.raises(VipnbError) as info:
        read_cub(cub)
    message = str(info.value)
    assert "missing bounding_boxes.txt, classes.txt" in message and str(cub) in message
    assert "Download CUB_200_2011" in message and "pass its folder" in message
    make_cub(tmp_path / "outer" / "CUB_200_2011")
    with pytest.raises(VipnbError, match=r"CUB_200_2011 holds them: pass that folder"):
        read_cub(tmp_path / "outer")


def test_box_outside_the_image_names_image_path_box_and_size(cub: Path):
    set_line(cub / "bounding_boxes.txt", 2, "2 30.0 5.0 15.0 10.0")  # x + w = 45 > 40
    with pytest.raises(VipnbError) as info:
        read_cub(cub)
    message = str(info.value)
    assert "bounding_boxes.txt" in message and "image 2 (" in message
    assert "Alpha_bird_0001.jpg" in message and "line 2" in message
    assert "x=30 y=5 width=15 height=10" in message and "40x30" in message
    read_cub(cub, check_images=False)  # the image size is only known from the image


def test_negative_or_empty_box_is_caught_without_images(cub: Path):
    set_line(cub / "bounding_boxes.txt", 4, "4 -3.0 5.0 15.0 10.0")
    with pytest.raises(VipnbError, match=r"1 box\(es\).*image 4 \(.*x=-3 y=5"):
        read_cub(cub, check_images=False)
    set_line(cub / "bounding_boxes.txt", 4, "4 3.0 5.0 0.0 10.0")
    with pytest.raises(VipnbError, match=r"empty.*image 4 .*width=0"):
        read_cub(cub, check_images=False)


def test_box_a_fraction_past_the_edge_is_clipped(cub: Path):
    set_line(cub / "bounding_boxes.txt", 1, "1 20.0 10.0 20.5 20.5")  # 0.5 px past both edges
    assert read_cub(cub).boxes[0].tolist() == [20, 10, WIDTH, HEIGHT]


def test_missing_image_files_are_counted_and_named(cub: Path):
    for name in ("Alpha_bird_0002.jpg", "Alpha_bird_0000.jpg"):
        (cub / "images" / "001.Alpha_bird" / name).unlink()
    with pytest.raises(VipnbError) as info:
        read_cub(cub)
    message = str(info.value)
    assert message.startswith("2 of 6 images listed in") and "images.txt" in message
    assert "1 (" in message and "Alpha_bird_0002.jpg" in message and "3 (" in message
    assert len(read_cub(cub, check_images=False)) == 6


def test_id_missing_from_one_file_is_named(cub: Path):
    original = (cub / "train_test_split.txt").read_text()
    set_line(cub / "train_test_split.txt", 4, None)
    with pytest.raises(VipnbError, match=r"image ids 4 are in images.txt but not in "
                                         r"train_test_split.txt"):
        read_cub(cub)
    (cub / "train_test_split.txt").write_text(original)
    (cub / "bounding_boxes.txt").write_text((cub / "bounding_boxes.txt").read_text()
                                            + "9 1 1 2 2\n")
    with pytest.raises(VipnbError, match=r"image ids 9 are in bounding_boxes.txt but not in "
                                         r"images.txt"):
        read_cub(cub)


def test_malformed_and_duplicate_lines_name_file_and_line(cub: Path):
    set_line(cub / "bounding_boxes.txt", 3, "3 1.0 2.0 wide 4.0")
    with pytest.raises(VipnbError) as info:
        read_cub(cub)
    message = str(info.value)
    assert "bounding_boxes.txt line 3" in message and "'3 1.0 2.0 wide 4.0'" in message
    assert "<image_id> <x> <y> <width> <height>" in message
    make_cub(cub.parent / "again")
    set_line(cub.parent / "again" / "train_test_split.txt", 2, "2 yes")
    with pytest.raises(VipnbError, match=r"train_test_split.txt line 2: expected"):
        read_cub(cub.parent / "again")
    set_line(cub.parent / "again" / "train_test_split.txt", 2, "1 0")
    with pytest.raises(VipnbError, match=r"train_test_split.txt line 2: id 1 already given "
                                         r"on line 1"):
        read_cub(cub.parent / "again")


def test_class_id_unknown_to_classes_txt(cub: Path):
    set_line(cub / "image_class_labels.txt", 5, "5 7")
    with pytest.raises(VipnbError, match=r"image_class_labels.txt line 5: class id 7 of "
                                         r"image 5 is not in .*classes.txt"):
        read_cub(cub)


def test_decode_scales_boxes_with_the_squashing_resize(cub: Path):
    index = read_cub(cub)
    images, boxes = decode_cub(index, 24)
    assert images.shape == (6, 3, 24, 24) and images.dtype == torch.uint8
    assert boxes.shape == (6, 4) and boxes.dtype == torch.float32
    scale = torch.tensor([WIDTH, HEIGHT, WIDTH, HEIGHT], dtype=torch.float32)
    torch.testing.assert_close(boxes, torch.from_numpy(index.boxes) / scale)
    for image, box in zip(images, boxes, strict=True):
        bright = image[0].float() > (10 + 255) / 2
        rows, cols = bright.any(1).nonzero(), bright.any(0).nonzero()
        extent = torch.tensor([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]) / 24
        assert (extent - box).abs().max() <= 1 / 24 + 1e-6, (extent * 24, box * 24)
    # without check_images the sizes come from the files themselves
    _, again = decode_cub(read_cub(cub, check_images=False).split("test"), 24)
    torch.testing.assert_close(again, boxes[[1, 4]])


def test_cli_prints_a_summary_or_the_error(cub: Path, capsys):
    assert main(["data", "cub", "--root", str(cub)]) == 0
    out = capsys.readouterr().out
    assert "6 images, 2 classes (train 4, test 2)" in out and "box width (px)" in out
    assert "box area / image" in out
    (cub / "classes.txt").unlink()
    assert main(["data", "cub", "--root", str(cub)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vipnb: error:") and "missing classes.txt" in err
    assert main(["data", "cub"]) == 2
    assert "needs --root DIR" in capsys.readouterr().err
