"""Metrics for one predicted box per image against its ground-truth box (the MTL-MoE poster's
regression task), boxes as x1y1x2y2 [N, 4].

The poster reports a "Best Regression Task CIoU Accuracy" (0.9337 / 0.9424 / 0.9391 for 1 / 3
/ 6 experts) without defining it. Candidate readings, all reported by `box_metrics`:
- `mean_ciou`: the mean complete IoU, 1 − CIoU loss (the quantity it trains on);
- `mean_iou`: the mean plain IoU;
- `iou50`: the share of images whose IoU ≥ 0.5, the usual "localisation accuracy" on
  CUB-200-2011. Values near 0.94 fit this reading best; a mean (C)IoU that high for one
  regressed box per image would be unusual.
"""

from __future__ import annotations

import torch
from torchvision.ops import complete_box_iou_loss

from vipnb.errors import VipnbError


def box_iou_pairs(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of each matched pair (pred[n], target[n]) → [N]; 0 when both boxes are empty."""
    _check_pairs(pred, target)
    pred, target = pred.float(), target.float()
    top_left = torch.maximum(pred[:, :2], target[:, :2])
    bottom_right = torch.minimum(pred[:, 2:], target[:, 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(dim=1)
    union = _area(pred) + _area(target) - intersection
    return intersection / union.clamp(min=torch.finfo(torch.float32).eps)


def ciou_pairs(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Complete IoU of each matched pair, 1 − torchvision's complete_box_iou_loss → [N]."""
    _check_pairs(pred, target)
    return 1.0 - complete_box_iou_loss(pred.float(), target.float(), reduction="none")


def box_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """mean_iou, iou50 (share of pairs with IoU ≥ 0.5) and mean_ciou."""
    iou = box_iou_pairs(pred, target)
    return {"mean_iou": iou.mean().item(), "iou50": (iou >= 0.5).float().mean().item(),
            "mean_ciou": ciou_pairs(pred, target).mean().item()}


def _area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(dim=1)


def _check_pairs(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.ndim != 2 or pred.shape[-1] != 4 or pred.shape != target.shape or not len(pred):
        raise VipnbError(f"boxes of shapes {tuple(pred.shape)} and {tuple(target.shape)}: pass "
                         "one predicted and one target box per image, both [N, 4] x1y1x2y2, "
                         "N >= 1")
