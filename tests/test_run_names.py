"""A run's name covers what determines its result: the recipe, the data's content (not its
place) and the version of the code's results."""

from __future__ import annotations

import os
import shutil

import pytest
from conftest import make_tree, write_recipe_file

from vipnb.data import fingerprint
from vipnb.data.fingerprint import COMPLETION_MARKERS
from vipnb.engine import load_recipe, train
from vipnb.engine import recipe as recipe_module


def test_other_data_gives_another_run_and_is_never_reused(tmp_path):
    tree = make_tree(tmp_path / "three")
    two_classes = make_tree(tmp_path / "two", classes=("a_cls", "b_cls"))
    file = write_recipe_file(tmp_path, "tiny", tree)
    first = train(load_recipe(file, "smoke"), runs_root=tmp_path / "runs", progress=False)
    other = load_recipe(file, "smoke", {"data_root": str(two_classes)})
    assert other.run_name != first.path.name
    second = train(other, runs_root=tmp_path / "runs", progress=False)
    assert second.path != first.path and len(second.logits("test").classes) == 2


def test_the_same_data_elsewhere_names_the_same_run(tmp_path):
    tree = make_tree(tmp_path / "here")
    moved = shutil.copytree(tree, tmp_path / "there")
    file = write_recipe_file(tmp_path, "tiny", tree)
    assert (load_recipe(file, "smoke").run_name
            == load_recipe(file, "smoke", {"data_root": str(moved)}).run_name)


def test_other_images_or_test_labels_change_the_name(tmp_path):
    tree = make_tree(tmp_path / "tree")
    file = write_recipe_file(tmp_path, "tiny", tree)
    names = [load_recipe(file, "smoke").run_name]
    (tree / "val" / "a_cls" / "a_cls_0.png").rename(tree / "val" / "a_cls" / "other.png")
    names.append(load_recipe(file, "smoke").run_name)
    labels = tree / "test" / "labels.csv"
    labels.write_text(labels.read_text().replace(",0\n", ",1\n", 1))
    names.append(load_recipe(file, "smoke").run_name)
    assert len(set(names)) == 3


def test_the_results_version_enters_the_name(tmp_path, monkeypatch):
    file = write_recipe_file(tmp_path, "tiny", make_tree(tmp_path / "tree"))
    before = load_recipe(file, "smoke").run_name
    monkeypatch.setattr(recipe_module, "RESULTS_VERSION", recipe_module.RESULTS_VERSION + 1)
    assert load_recipe(file, "smoke").run_name != before


@pytest.mark.parametrize("marker", COMPLETION_MARKERS)
def test_a_finished_build_is_scanned_once_per_build_and_an_unfinished_one_each_time(
        tmp_path, monkeypatch, marker):
    tree = make_tree(tmp_path / "tree")
    file = write_recipe_file(tmp_path, "tiny", tree)
    scans = []
    monkeypatch.setattr(fingerprint, "_content_digest",
                        lambda root, scan=fingerprint._content_digest: scans.append(root) or scan(root))
    names = {load_recipe(file, "smoke").run_name for _ in range(2)}
    assert len(scans) == 2  # no marker: nothing says the folder did not change
    (tree / marker).write_text("{}")
    names |= {load_recipe(file, "smoke").run_name for _ in range(2)}
    assert len(scans) == 3
    os.utime(tree / marker, ns=(1, 1))  # a rebuild writes its marker anew
    names |= {load_recipe(file, "smoke").run_name}
    assert len(scans) == 4 and len(names) == 1  # markers are not data
