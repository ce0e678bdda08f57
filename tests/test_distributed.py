"""`vipnb train` under `torchrun --nproc_per_node 2` (gloo, CPU) equals one process that
trains the same global batch in two accumulation steps: the same images, the same crops,
the same batch-norm groups; only the order of floating-point sums differs.

Tolerance: training losses and every learned weight within 1e-4 absolute / 1e-3 relative
after two epochs. Batch-norm running statistics are not compared: under DDP they are rank
0's (PyTorch broadcasts rank 0's buffers; `sync_bn: true` on CUDA synchronises them), while
one process with accumulation folds in every micro-batch."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tree, write_recipe_file

from vipnb.engine.checkpoint import load_checkpoint
from vipnb.engine.rundir import RunDir

_RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")


def _run(command: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-30000:]


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path: Path):
    tree = make_tree(tmp_path / "tree", per_class=16, size=16)
    recipe = write_recipe_file(tmp_path, "ddp", tree, epochs=2, batch_size=16, lr=0.05)
    cli = ["-m", "vipnb.cli", "train", str(recipe)]
    _run([sys.executable, *cli, "--runs", str(tmp_path / "one"), "-p", "accum_steps=2"])
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          *cli, "--runs", str(tmp_path / "two"), "-p", "accum_steps=1"])
    one = RunDir(next((tmp_path / "one").iterdir()))
    two = RunDir(next((tmp_path / "two").iterdir()))
    assert len(list((tmp_path / "two").iterdir())) == 1  # rank 0 alone wrote the run
    for a, b in zip(one.metrics(), two.metrics(), strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3, abs=1e-4)
    weights_one = load_checkpoint(one.checkpoint_file)["model"]
    weights_two = load_checkpoint(two.checkpoint_file)["model"]
    learned = [k for k in weights_one if not k.endswith(_RUNNING_STATS)]
    assert learned and set(weights_one) == set(weights_two)
    for key in learned:
        np.testing.assert_allclose(weights_two[key].numpy(), weights_one[key].numpy(),
                                   rtol=1e-3, atol=1e-4, err_msg=key)


def test_global_batch_must_split_over_processes_and_accumulation(tiny_tree: Path, tmp_path):
    from vipnb.engine import train
    from vipnb.engine.recipe import from_dict
    from vipnb.errors import VipnbError

    recipe = from_dict({"name": "odd", "dataset": "folder", "data_root": str(tiny_tree),
                        "model": "resnet10t", "batch_size": 6, "accum_steps": 4})
    with pytest.raises(VipnbError, match="batch_size 6 does not split into 1 process"):
        train(recipe, runs_root=tmp_path, progress=False)
