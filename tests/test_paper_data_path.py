"""The `paper` data path as a newcomer with ImageNet meets it, on generated trees: the decoded
images cached outside the dataset folder and shared by processes, relative paths given to
`vipnb run`, an interrupted build refused, the workers and bf16 chosen for the machine, and a
batch larger than the data named."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import make_tree

from vipnb.data.sources import load_run_data
from vipnb.engine.recipe import from_dict

ROOT = Path(__file__).resolve().parent.parent
SPLITS_DIR = Path(os.environ.get("VIPNB_VIPRIORS_SPLITS", "/work/shared/data/vipriors-splits"))


def tiny_recipe(tree: Path, **changes):
    return from_dict({"name": "tiny", "dataset": "folder", "data_root": str(tree),
                      "model": "resnet10t", "epochs": 1, "batch_size": 6, "cache_size": 16,
                      "input_size": 16, "eval_batch_size": 8, **changes})


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


# -- 4. workers ------------------------------------------------------------------------------

def test_workers_default_to_this_process_share_of_the_cpus(monkeypatch, tmp_path):
    from vipnb.data.workers import MAX_WORKERS, worker_count

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert worker_count("auto") == MAX_WORKERS  # capped
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # torchrun: 8 processes share the node
    assert worker_count("auto") == 8
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(12)))  # Slurm's share
    assert worker_count("auto") == 12
    assert worker_count(3) == 3 and worker_count(0) == 0
    assert from_dict({"name": "x"}).workers == "auto"
    assert from_dict({"name": "x", "workers": "2"}).workers == 2
    stream = load_run_data(tiny_recipe(make_tree(tmp_path / "t"), data_cache="stream"))
    assert stream.train.workers == 12


def test_paper_recipes_leave_workers_to_the_machine():
    from vipnb.engine.recipe import load_recipe

    for name in ("vipf_resnext50", "fc_resnest101e_ce"):
        assert load_recipe(name, "paper", {"data_root": "/nowhere"}).workers == "auto"
