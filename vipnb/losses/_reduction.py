"""The `reduction` argument the losses share: "mean" | "sum" | "none" over the batch."""

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
