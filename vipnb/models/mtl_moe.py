"""MTL-MoE: a CNN, a sparsely-gated mixture of experts with one gate per task, and one tower
per task (the MTL-MoE poster, Fig. 2 and 6; the single-task MoE of Fig. 3 and 7 with
tasks=("classify",)).

Bottom layers: a timm backbone's pooled features, then the "feature condense layer"
(Linear → ReLU). Middle: `SparseMoE` (Shazeer et al. 2017 gates, one per task as in MMoE,
Ma et al. 2018). Top: a classification tower (logits) and a box tower (a normalised
x1y1x2y2 box), trained with cross-entropy + complete-IoU loss + the gates' auxiliary loss.
"""

from __future__ import annotations

from typing import NamedTuple

import timm
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert, complete_box_iou_loss

from vipnb.errors import VipnbError
from vipnb.models.sparse_moe import SparseMoE

TASKS = ("classify", "box")
TRANSFER_SETTINGS = ("none", "experts")


class MtlOutput(NamedTuple):
    """logits [B, C]; boxes [B, 4] normalised x1y1x2y2 (None without the box task);
    aux_loss, the gates' weighted importance + load loss; gates, task → G(x) [B, E]."""

    logits: torch.Tensor
    boxes: torch.Tensor | None
    aux_loss: torch.Tensor
    gates: dict[str, torch.Tensor]


class BoxTower(nn.Module):
    """Linear → ReLU → Linear to (cx, cy, w, h), each squashed into (0, 1) by a sigmoid, turned
    into x1y1x2y2 and clamped into [0, 1]: x1 < x2 and y1 < y2 unless a sigmoid saturates."""

    def __init__(self, in_features: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cxcywh = torch.sigmoid(self.mlp(x).float())
        return box_convert(cxcywh, "cxcywh", "xyxy").clamp(0.0, 1.0)


def classification_tower(in_features: int, hidden: int, num_classes: int,
                         dropout: float) -> nn.Sequential:
    """Linear → ReLU → Dropout → Linear to the class logits."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
                         nn.Dropout(dropout), nn.Linear(hidden, num_classes))


class MtlMoE(nn.Module):
    """The poster's MTL-MoE (Fig. 2/6), or its single-task MoE (Fig. 3/7) with
    tasks=("classify",). The backbone is built by timm from scratch (no pretrained weights)."""

    def __init__(self, backbone: str, num_classes: int, num_experts: int = 3, k: int = 2,
                 tasks: tuple[str, ...] = ("classify", "box"), condense_dim: int = 256,
                 expert_dim: int = 256, tower_hidden: int = 128, dropout: float = 0.1,
                 backbone_kwargs: dict | None = None):
        super().__init__()
        self.tasks = _check_tasks(tuple(tasks))
        if num_classes < 1:
            raise VipnbError(f"num_classes={num_classes}: the classifier needs at least 1 class")
        if not timm.is_model(backbone):
            raise VipnbError(f"unknown timm backbone {backbone!r}: pick a name from "
                             "timm.list_models(), e.g. 'resnet50'")
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0,
                                          **(backbone_kwargs or {}))
        self.condense = nn.Sequential(nn.Linear(self.backbone.num_features, condense_dim),
                                      nn.ReLU(inplace=True))
        self.moe = SparseMoE(condense_dim, expert_dim, num_experts, k,
                             num_gates=len(self.tasks), hidden=expert_dim, dropout=dropout)
        towers = {"classify": classification_tower(expert_dim, tower_hidden, num_classes,
                                                   dropout)}
        if "box" in self.tasks:
            towers["box"] = BoxTower(expert_dim, tower_hidden)
        self.towers = nn.ModuleDict(towers)

    def forward(self, x: torch.Tensor) -> MtlOutput:
        mixed = self.moe(self.condense(self.backbone(x)))
        per_task = dict(zip(self.tasks, mixed.outputs, strict=True))
        boxes = self.towers["box"](per_task["box"]) if "box" in self.tasks else None
        return MtlOutput(self.towers["classify"](per_task["classify"]), boxes, mixed.aux_loss,
                         dict(zip(self.tasks, mixed.gates, strict=True)))

    def loss(self, output: MtlOutput, labels: torch.Tensor, boxes: torch.Tensor | None = None,
             box_weight: float = 1.0,
             label_smoothing: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
        """The poster's integrated loss, `mtl_loss`."""
        return mtl_loss(output, labels, boxes, box_weight, label_smoothing)


def _check_tasks(tasks: tuple[str, ...]) -> tuple[str, ...]:
    if "classify" not in tasks or len(set(tasks)) != len(tasks) or not set(tasks) <= set(TASKS):
        raise VipnbError(f"tasks={tasks}: use ('classify',) or ('classify', 'box'), each task "
                         "once")
    return tasks


def mtl_loss(output: MtlOutput, labels: torch.Tensor, boxes: torch.Tensor | None = None,
             box_weight: float = 1.0,
             label_smoothing: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """The poster's integrated loss: cross-entropy + box_weight · complete-IoU loss (torchvision)
    + the gates' auxiliary loss. Returns the total and its parts as floats (ce, box, aux, total).

    `boxes` are the target boxes, normalised x1y1x2y2 [B, 4]; they are ignored when the model
    has no box task and required when it has one.
    """
    ce = F.cross_entropy(output.logits.float(), labels, label_smoothing=label_smoothing)
    total = ce + output.aux_loss
    parts = {"ce": ce.item(), "aux": output.aux_loss.detach().item()}
    if output.boxes is not None:
        if boxes is None:
            raise VipnbError("the model predicts boxes (tasks include 'box') but no target "
                             "boxes were given: pass the normalised x1y1x2y2 boxes [B, 4]")
        box = complete_box_iou_loss(output.boxes.float(), boxes.float(), reduction="mean")
        total = total + box_weight * box
        parts["box"] = box.item()
    parts["total"] = total.item()
    return total, parts


def freeze_for_transfer(model: MtlMoE, setting: str) -> MtlMoE:
    """The poster's transfer-learning settings (Exp. 1, Fig. 5): "none" fine-tunes every
    parameter; "experts" freezes the experts and the feature condense layer and fine-tunes the
    rest (backbone, gates, towers). Sets requires_grad in place and returns the model."""
    if setting not in TRANSFER_SETTINGS:
        raise VipnbError(f"transfer setting {setting!r}: use one of {', '.join(TRANSFER_SETTINGS)}")
    model.requires_grad_(True)
    if setting == "experts":
        model.moe.experts.requires_grad_(False)
        model.condense.requires_grad_(False)
    return model


def replace_classifier(model: MtlMoE, num_classes: int) -> MtlMoE:
    """Put a freshly initialised last Linear with `num_classes` outputs on the classification
    tower (fine-tuning on new classes, Exp. 1). Returns the model."""
    if num_classes < 1:
        raise VipnbError(f"num_classes={num_classes}: the classifier needs at least 1 class")
    tower = model.towers["classify"]
    old = tower[-1]
    tower[-1] = nn.Linear(old.in_features, num_classes).to(old.weight.device, old.weight.dtype)
    return model
