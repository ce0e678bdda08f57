"""The training loss of a recipe, from the model's output and the (mixed, smoothed) targets.

Per head: soft-target cross-entropy (MoE eq. 3) or cross-entropy + cosine (eq. 4, the VIPF
positive-class loss); a mixture of experts sums it over experts (eq. 5) and adds λ times the
diversity loss (eq. 8); with a teacher, the targets become eq. 2's mix of labels and the
teacher's softmax on the same augmented images.
"""

from __future__ import annotations

import torch
from torch import nn

from vipnb.engine.recipe import Recipe
from vipnb.losses import (
    distillation_targets,
    diversity_loss,
    positive_class_loss,
    soft_cross_entropy,
)

HEAD_LOSSES = {"soft_ce": soft_cross_entropy, "positive_class": positive_class_loss}


class Objective:
    def __init__(self, recipe: Recipe, teacher: nn.Module | None = None):
        self.head_loss = HEAD_LOSSES[recipe.loss]
        self.diversity_weight = recipe.diversity_weight
        self.label_weight = recipe.distill_label_weight
        self.teacher = teacher

    def targets(self, inputs: torch.Tensor, label_targets: torch.Tensor) -> torch.Tensor:
        """l_train: the label targets, mixed with the teacher's prediction when distilling."""
        if self.teacher is None:
            return label_targets
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        return distillation_targets(label_targets, teacher_logits, self.label_weight)

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """`outputs`: logits [B, C], or the experts' logits [N, B, C]."""
        expert_logits = outputs if outputs.dim() == 3 else outputs.unsqueeze(0)
        loss = sum(self.head_loss(logits, targets) for logits in expert_logits)
        if self.diversity_weight and len(expert_logits) > 1:
            loss = loss + self.diversity_weight * diversity_loss(expert_logits)
        return loss
