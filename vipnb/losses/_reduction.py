"""What the losses share: the `reduction` argument and the dtype they compute in.

`reduction` is "mean" | "sum" | "none" over the batch, as in `torch.nn.functional`. An empty
batch behaves like `F.cross_entropy`'s: "none" gives an empty tensor, "sum" 0 and "mean" nan
(the mean of no values), so a caller who masks every sample sees it rather than a silent 0.
"""

from __future__ import annotations

import torch

from vipnb.errors import VipnbError

REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise VipnbError(
            f"reduction={reduction!r} is not one of {', '.join(map(repr, REDUCTIONS))}")


def reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per-sample `values` → their mean, sum, or themselves."""
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 at least: bf16/fp16 logits (autocast) lose too much in log/exp and sums, while
    float64 stays float64 so `torch.autograd.gradcheck` can check the losses."""
    return torch.promote_types(x.dtype, torch.float32)
