"""Under DDP the center loss's centres move by the whole global batch (an all-reduce of the
per-class counts and sums), so every process keeps the same centres as one process that
sees the whole batch. Two real gloo processes on the CPU."""

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vipnb.losses import CenterLoss

# Two processes' shares of one global batch: class 0 is in both, with other features, class 1
# only in the first and class 2 only in the second, so no process alone sees the batch.
FEATURES = torch.tensor([[1.0, 2.0], [3.0, 0.0], [0.0, 4.0],
                         [-2.0, 1.0], [5.0, 5.0], [1.0, -1.0]])
LABELS = torch.tensor([0, 1, 0, 0, 2, 2])
STEPS = 2


def _centres_after_steps(loss: CenterLoss, features: torch.Tensor, labels: torch.Tensor):
    for _ in range(STEPS):
        loss(features, labels)
    return loss.centers.clone()


def _worker(rank: int, world_size: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank,
                            world_size=world_size)
    try:
        share = slice(3 * rank, 3 * rank + 3)
        centres = _centres_after_steps(CenterLoss(3, 2, alpha=0.5), FEATURES[share],
                                       LABELS[share])
        torch.save(centres, f"{folder}/centres{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_centres_equal_one_process_on_the_global_batch(tmp_path: Path):
    # fork: the workers inherit the imported torch instead of importing it again (seconds).
    mp.start_processes(_worker, args=(2, str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    whole = _centres_after_steps(CenterLoss(3, 2, alpha=0.5), FEATURES, LABELS)
    alone = _centres_after_steps(CenterLoss(3, 2, alpha=0.5), FEATURES[:3], LABELS[:3])
    # Without the all-reduce, rank 0's centres would be these: far from the global ones.
    assert (alone - whole).abs().max() > 0.5
    for rank in range(2):
        centres = torch.load(tmp_path / f"centres{rank}.pt")
        torch.testing.assert_close(centres, whole, atol=1e-6, rtol=1e-6)
