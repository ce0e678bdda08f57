"""The VIPriors split reader: loads the official files, refuses hostile or malformed pickles."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import pytest
from conftest import SPLITS_DIR, needs_official_splits

from vipnb.data.splits import (
    _NoGlobalsUnpickler,
    load_vipriors_splits,
    read_split_file,
    test_labels,
)
from vipnb.errors import VipnbError


@needs_official_splits
def test_official_split_files_load():
    splits = load_vipriors_splits(SPLITS_DIR)
    assert len(splits.train) == len(splits.val) == len(splits.test) == 50000
    assert len(splits.wnids) == 1000
    assert splits.train[0] == ("n01440764", "n01440764_2823.JPEG")
    assert splits.test[0] == "n02104029/ILSVRC2012_val_00002402.JPEG"
    assert set(test_labels(splits.test)) == set(splits.wnids)
    assert not set(splits.train) & set(splits.val)


@needs_official_splits
def test_read_split_file_returns_the_raw_list():
    entries = read_split_file(SPLITS_DIR / "train.pickle")
    assert len(entries) == 50000
    assert list(entries[0]) == ["n01440764", "n01440764_2823.JPEG"]


class _RunsAShellCommand:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_hostile_pickle_is_refused_and_nothing_runs(tmp_path, protocol):
    marker = tmp_path / "hacked"
    hostile = tmp_path / "train.pickle"
    hostile.write_bytes(pickle.dumps(_RunsAShellCommand(f"touch {marker}"), protocol=protocol))

    with pytest.raises(VipnbError) as caught:
        read_split_file(hostile)

    message = str(caught.value)
    assert str(hostile) in message
    assert "system" in message and "refused" in message
    assert "vipriors-challenges-toolkit" in message
    assert not marker.exists()


def test_unpickler_refuses_globals_even_without_the_opcode_check(tmp_path):
    marker = tmp_path / "hacked"
    data = pickle.dumps(_RunsAShellCommand(f"touch {marker}"))
    with pytest.raises(VipnbError, match="system"):
        _NoGlobalsUnpickler(io.BytesIO(data), tmp_path / "x.pickle").load()
    assert not marker.exists()


def test_hostile_object_hidden_inside_a_list_is_refused(tmp_path):
    marker = tmp_path / "hacked"
    hostile = tmp_path / "val.pickle"
    entries = [["n01440764", "a.JPEG"], _RunsAShellCommand(f"touch {marker}")]
    hostile.write_bytes(pickle.dumps(entries))
    with pytest.raises(VipnbError, match="refused"):
        read_split_file(hostile)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"train": [["n01440764", "a.JPEG"]]}, "dict"),
        ([1, 2, 3], "item 0"),
        ([["n01440764", "a.JPEG"], ["n01440764", "b.JPEG", "extra"]], "item 1"),
        (["n01440764/a.JPEG", None], "item 1"),
    ],
)
def test_wrong_shapes_are_refused_naming_the_file(tmp_path, content, expected):
    path = tmp_path / "test.pickle"
    path.write_bytes(pickle.dumps(content))
    with pytest.raises(VipnbError) as caught:
        read_split_file(path)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_garbage_file_is_refused(tmp_path):
    path = tmp_path / "train.pickle"
    path.write_bytes(b"this is not a pickle")
    with pytest.raises(VipnbError, match="train.pickle"):
        read_split_file(path)


def test_missing_file_names_the_path_and_the_toolkit(tmp_path):
    path = tmp_path / "nowhere" / "train.pickle"
    with pytest.raises(VipnbError) as caught:
        read_split_file(path)
    assert str(path) in str(caught.value)
    assert "image-classification" in str(caught.value)


def _write_splits(folder: Path, train, val, test) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, entries in (("train", train), ("val", val), ("test", test)):
        (folder / f"{name}.pickle").write_bytes(pickle.dumps(entries))
    return folder


def test_load_splits_accepts_tuples_and_lists(tmp_path):
    folder = _write_splits(
        tmp_path,
        train=[("n2", "n2_1.JPEG"), ["n1", "n1_1.JPEG"]],
        val=[["n1", "n1_2.JPEG"], ["n2", "n2_2.JPEG"]],
        test=["n2/ILSVRC2012_val_00000001.JPEG"],
    )
    splits = load_vipriors_splits(folder)
    assert splits.train == [("n2", "n2_1.JPEG"), ("n1", "n1_1.JPEG")]
    assert splits.wnids == ["n1", "n2"]


def test_swapped_split_files_are_reported(tmp_path):
    folder = _write_splits(
        tmp_path,
        train=["n1/ILSVRC2012_val_00000001.JPEG"],
        val=[["n1", "n1_2.JPEG"]],
        test=["n1/ILSVRC2012_val_00000001.JPEG"],
    )
    with pytest.raises(VipnbError, match=r"train\.pickle: item 0.*swapped"):
        load_vipriors_splits(folder)


def test_train_and_val_classes_must_agree(tmp_path):
    folder = _write_splits(
        tmp_path,
        train=[["n1", "n1_1.JPEG"], ["n2", "n2_1.JPEG"]],
        val=[["n1", "n1_2.JPEG"]],
        test=["n1/ILSVRC2012_val_00000001.JPEG"],
    )
    with pytest.raises(VipnbError, match="different classes"):
        load_vipriors_splits(folder)


def test_entries_that_escape_the_output_folder_are_refused(tmp_path):
    folder = _write_splits(
        tmp_path,
        train=[["n1", "../../etc/passwd"]],
        val=[["n1", "n1_2.JPEG"]],
        test=["n1/ILSVRC2012_val_00000001.JPEG"],
    )
    with pytest.raises(VipnbError, match="single file name"):
        load_vipriors_splits(folder)


def test_test_labels_are_the_folder_part():
    assert test_labels(["n1/ILSVRC2012_val_00000001.JPEG", "n2/x.JPEG"]) == ["n1", "n2"]
    with pytest.raises(VipnbError, match="entry 0"):
        test_labels(["no-folder.JPEG"])


def test_repeated_loads_give_fresh_lists_and_see_edited_files(tmp_path):
    folder = _write_splits(
        tmp_path,
        train=[["n1", "n1_1.JPEG"]],
        val=[["n1", "n1_2.JPEG"]],
        test=["n1/ILSVRC2012_val_00000001.JPEG"],
    )
    first = load_vipriors_splits(folder)
    first.train.append(("n9", "n9_1.JPEG"))
    assert load_vipriors_splits(folder).train == [("n1", "n1_1.JPEG")]

    (folder / "val.pickle").write_bytes(pickle.dumps([["n2", "n2_2.JPEG"]]))
    with pytest.raises(VipnbError, match="different classes"):
        load_vipriors_splits(folder)


def test_identical_train_and_val_files_are_refused_naming_both(tmp_path):
    entries = [["n1", "n1_1.JPEG"], ["n2", "n2_1.JPEG"]]
    folder = _write_splits(tmp_path, train=entries, val=entries,
                           test=["n1/ILSVRC2012_val_00000001.JPEG"])
    with pytest.raises(VipnbError) as caught:
        load_vipriors_splits(folder)
    message = str(caught.value)
    assert f"{folder / 'train.pickle'} and {folder / 'val.pickle'} share 2 entries" in message
    assert "identical" in message and "vipriors-challenges-toolkit" in message


def test_overlapping_train_and_val_files_are_refused_with_the_count(tmp_path):
    folder = _write_splits(
        tmp_path,
        train=[["n1", "n1_1.JPEG"], ["n1", "n1_2.JPEG"], ["n2", "n2_1.JPEG"]],
        val=[["n1", "n1_2.JPEG"], ["n2", "n2_2.JPEG"]],
        test=["n1/ILSVRC2012_val_00000001.JPEG"],
    )
    with pytest.raises(VipnbError, match=r"share 1 entry, e\.g\. \('n1', 'n1_2\.JPEG'\)"):
        load_vipriors_splits(folder)
