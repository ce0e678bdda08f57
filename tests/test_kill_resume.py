"""A real `kill -9` in the middle of training, then `vipnb train` again: the run resumes from
its last checkpoint and ends with exactly the metrics of an uninterrupted run (CPU,
deterministic mode)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from conftest import make_tree, write_recipe_file

from vipnb.engine.rundir import RunDir


def _train(recipe: Path, runs: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vipnb.cli", "train", str(recipe),
                             "--runs", str(runs)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def test_kill_9_mid_training_then_resume_matches_uninterrupted(tmp_path: Path):
    tree = make_tree(tmp_path / "tree", per_class=16, size=24)
    recipe = write_recipe_file(tmp_path, "kill", tree, epochs=6, batch_size=8, cache_size=24,
                             input_size=24, lr=0.05)
    whole = _train(recipe, tmp_path / "whole")
    assert whole.wait(timeout=300) == 0, whole.stderr.read().decode()

    victim = _train(recipe, tmp_path / "killed")
    run_dirs = tmp_path / "killed"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # kill once two epochs are checkpointed
        metrics = list(run_dirs.glob("*/metrics.jsonl"))
        if metrics and len(metrics[0].read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    killed = RunDir(next(run_dirs.iterdir()))
    assert not killed.finished

    resumed = _train(recipe, run_dirs)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    reference = RunDir(next((tmp_path / "whole").iterdir()))
    assert [m["epoch"] for m in killed.metrics()] == list(range(6))
    for key in ("train_loss", "val_top1", "val_loss"):
        assert [m[key] for m in killed.metrics()] == [m[key] for m in reference.metrics()]
    np.testing.assert_array_equal(killed.logits("test").logits, reference.logits("test").logits)
