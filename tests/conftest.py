"""Shared fixtures: small generated VIPriors-layout trees, built with real PNG files, a tiny
fashion-boxes, and a report header with fixed values."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from vipnb import paths
from vipnb.data.fashion_boxes import build_fashion_boxes
from vipnb.engine import train
from vipnb.engine.checkpoint import load_checkpoint
from vipnb.engine.recipe import from_dict
from vipnb.engine.rundir import RunDir
from vipnb.engine.trainer import Trainer
from vipnb.eval.submission import write_labels_csv
from vipnb.report.header import ReportHeader

# The tests are an edge, as the CLI and the notebooks are: they resolve where the built-in
# datasets are built and pass it down in the recipe's `data_dir`.
DATA_DIR = paths.data_root()

# The official VIPriors split files are not in the repository; point VIPNB_VIPRIORS_SPLITS at a
# copy.
SPLITS_DIR = Path(os.environ.get("VIPNB_VIPRIORS_SPLITS", "/work/shared/data/vipriors-splits"))
SPLIT_NAMES = ("train.pickle", "val.pickle", "test.pickle")
needs_official_splits = pytest.mark.skipif(
    not all((SPLITS_DIR / name).is_file() for name in SPLIT_NAMES),
    reason=f"official VIPriors split files not found in {SPLITS_DIR} (set VIPNB_VIPRIORS_SPLITS)",
)


def make_tree(root: Path, classes=("a_cls", "b_cls", "c_cls"), per_class=6, test=9,
              size=12, seed=0) -> Path:
    """A VIPriors-layout tree whose images are a class-dependent brightness plus noise,
    so a model can learn them."""
    rng = np.random.default_rng(seed)

    def image(label: int) -> Image.Image:
        base = 40 + 80 * label
        pixels = np.clip(base + rng.normal(0, 10, (size, size, 3)), 0, 255).astype(np.uint8)
        return Image.fromarray(pixels)

    for split in ("train", "val"):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                image(label).save(folder / f"{name}_{i}.png")
    (root / "test" / "imgs").mkdir(parents=True)
    labels = [i % len(classes) for i in range(test)]
    for i, label in enumerate(labels):
        image(label).save(root / "test" / "imgs" / f"img_{i}.png")
    write_labels_csv(root / "test" / "labels.csv", [f"img_{i}.png" for i in range(test)], labels)
    return root


# A tiny timm ResNet at 16 px for one epoch: seconds on a CPU.
TINY_SETTINGS = {"dataset": "folder", "model": "resnet10t", "epochs": 1, "batch_size": 6,
                 "cache_size": 16, "input_size": 16}


def write_recipe_file(directory: Path, name: str, tree: Path, **settings) -> Path:
    """A recipe file of TINY_SETTINGS on `tree`, alike at every profile."""
    base = {**TINY_SETTINGS, "data_root": str(tree), **settings}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "base": base,
                                    "profiles": {"smoke": {}, "cpu": {}, "paper": {}}}))
    return path


def tiny_recipe(tree: Path, **changes):
    """The recipe of TINY_SETTINGS on `tree`, with a learning rate that learns in one epoch."""
    return from_dict({"name": "tiny", **TINY_SETTINGS, "data_root": str(tree), "lr": 0.05,
                      "eval_batch_size": 8, **changes})


def tiny_mtl_recipe(root: Path, **changes):
    """A three-expert MTL-MoE recipe on the fashion-boxes at `root`, two epochs in seconds."""
    return from_dict({"name": "tiny_mtl", "dataset": "fashion_boxes", "data_root": str(root),
                      "architecture": "mtl_moe", "model": "resnet18",
                      "model_kwargs": {"channels": [8, 16, 32, 64]}, "experts": 3,
                      "gate_k": 2, "optimizer": "adam", "lr": 3e-3, "weight_decay": 0.0,
                      "epochs": 2, "batch_size": 20, "cache_size": 32, "input_size": 28,
                      "scale": [0.5, 1.0], "eval_batch_size": 50, "amp": "none",
                      "channels_last": False, **changes})


@pytest.fixture
def tiny_tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "tiny")


@pytest.fixture
def interrupt_training(monkeypatch):
    """`interrupt_training(epoch)`: training stops with a KeyboardInterrupt (a simulated kill)
    when it reaches `epoch`; returns a function that lets it train normally again."""

    def interrupt(epoch: int):
        original = Trainer._train_one_epoch

        def dies_at_epoch(self, current):
            if current == epoch:
                raise KeyboardInterrupt("simulated kill")
            return original(self, current)

        monkeypatch.setattr(Trainer, "_train_one_epoch", dies_at_epoch)
        return lambda: monkeypatch.setattr(Trainer, "_train_one_epoch", original)

    return interrupt


@pytest.fixture
def killed_and_resumed(interrupt_training):
    """`killed_and_resumed(recipe, root, kill_at, after_kill=None)`: the recipe trained whole
    under root/a, and under root/b killed when it reaches epoch `kill_at` (the run unfinished,
    its checkpoint at that epoch), `after_kill(killed_run)` called, then resumed; returns
    (whole, resumed)."""

    def run(recipe, root: Path, kill_at: int, after_kill=None):
        whole = train(recipe, runs_root=root / "a", progress=False)
        resume_normally = interrupt_training(kill_at)
        with pytest.raises(KeyboardInterrupt):
            train(recipe, runs_root=root / "b", progress=False)
        killed = RunDir(root / "b" / recipe.run_name)
        assert not killed.finished
        assert load_checkpoint(killed.checkpoint_file)["next_epoch"] == kill_at
        if after_kill:
            after_kill(killed)
        resume_normally()
        return whole, train(recipe, runs_root=root / "b", progress=False)

    return run


@pytest.fixture
def header() -> ReportHeader:
    """A report header as `make_header` writes one, with fixed values."""
    return ReportHeader(
        command="vipnb run 00_data_and_baseline --profile cpu",
        commit="abc1234",
        profile="cpu",
        machine="AMD EPYC 7B13 (2 cores), no GPU",
        wall_time_s=252.0,
        created="2026-11-25T13:00:00Z",
        vipnb_version="0.1.0",
        torch_version="2.14.1",
    )


def fake_split(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Items whose class sets the brightness of a solid rectangle, so they can be learnt."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class)
    images = np.zeros((len(labels), 28, 28), np.uint8)
    for image, label in zip(images, labels, strict=True):
        h, w = rng.integers(10, 20, size=2)
        top, left = rng.integers(0, 28 - h + 1), rng.integers(0, 28 - w + 1)
        image[top : top + h, left : left + w] = 60 + 19 * label
    return images, labels


@pytest.fixture(scope="module")
def boxes_root(tmp_path_factory) -> Path:
    """A fashion-boxes of 10 classes at 32 px: 6 training and 3 test images a class."""
    source = (*fake_split(6, seed=1), *fake_split(3, seed=2))
    return build_fashion_boxes(tmp_path_factory.mktemp("fb") / "fashion_boxes", canvas=32,
                               train_per_class=6, test_per_class=3, source=source)
