"""The training loss of a recipe, from the model's output and the (mixed, smoothed) targets.

Per head: the loss the recipe names in the head-loss registry (vipnb.losses.registry):
soft-target cross-entropy (MoE eq. 3), cross-entropy + cosine (eq. 4, the VIPF
positive-class loss), one of the fusion-coverage paper's robust losses (Taylor
cross-entropy, bi-tempered logistic, DSB focal), or one a paper outside vipnb registers. A mixture of experts sums the head loss
over experts (eq. 5) and adds λ times the diversity loss (eq. 8); with a teacher, the
targets become eq. 2's mix of labels and the teacher's softmax on the same augmented images.

VIPF eq. 3 weighs the head loss by α (`loss_weight`) and adds β times the center loss
(eq. 6, on the features the classifier sees) and γ times the tree supervision loss (eq. 7,
over a hierarchy induced from another run's classifier).
"""

from __future__ import annotations

import torch
from torch import nn

from vipnb.engine.recipe import Recipe
from vipnb.errors import VipnbError
from vipnb.losses import (
    CenterLoss,
    Hierarchy,
    distillation_targets,
    diversity_loss,
    tree_supervision_loss,
)
from vipnb.losses.registry import StatefulHeadLoss, build_head_loss


class Objective:
    """`feature_dim`: the width of the classifier's input (for the center loss);
    `hierarchy`: the induced class tree (for the tree supervision loss)."""

    def __init__(self, recipe: Recipe, num_classes: int, teacher: nn.Module | None = None,
                 feature_dim: int = 0, hierarchy: Hierarchy | None = None):
        self.diversity_weight = recipe.diversity_weight
        self.loss_weight = recipe.loss_weight
        self.center_weight = recipe.center_loss_weight
        self.center_loss = (CenterLoss(num_classes, feature_dim, recipe.center_loss_alpha)
                            if self.center_weight else None)
        self.tree_weight = recipe.tree_loss_weight
        if self.tree_weight and hierarchy is None:
            raise VipnbError(f"{recipe.name}: tree_loss_weight {self.tree_weight} needs a class "
                             "hierarchy: set `hierarchy_from` to a recipe whose trained "
                             "classifier induces it, or `hierarchy: wordnet` for classes "
                             "named by wnids")
        self.hierarchy = hierarchy
        self.label_weight = recipe.distill_label_weight
        self.teacher = teacher
        self.head_loss = build_head_loss(recipe, num_classes)
        # A head loss with state (DSB focal's feature store) sees the features and epochs.
        self.stateful = self.head_loss if isinstance(self.head_loss, StatefulHeadLoss) else None

    @property
    def needs_features(self) -> bool:
        """Whether the loss wants the features the classifier sees."""
        return self.stateful is not None or self.center_loss is not None

    def to(self, device: torch.device) -> Objective:
        if self.center_loss is not None:
            self.center_loss.to(device)
        return self

    def start_epoch(self) -> None:
        """Tell a stateful head loss (DSB focal: refresh its class weights) an epoch starts."""
        if self.stateful is not None:
            self.stateful.start_epoch()

    def state_dict(self) -> dict:
        """What a resumed run needs to continue as if uninterrupted: the head loss's state
        (DSB focal's feature store), the class centres."""
        state = {}
        if self.stateful is not None:
            state["head_loss"] = self.stateful.state_dict()
        if self.center_loss is not None:
            state["center_loss"] = self.center_loss.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """`scale_store`: the DSB store's key in checkpoints written before the registry."""
        head_state = state.get("head_loss", state.get("scale_store"))
        if self.stateful is not None and head_state is not None:
            self.stateful.load_state_dict(head_state)
        if self.center_loss is not None and "center_loss" in state:
            self.center_loss.load_state_dict(state["center_loss"])

    def targets(self, inputs: torch.Tensor, label_targets: torch.Tensor) -> torch.Tensor:
        """l_train: the label targets, mixed with the teacher's prediction when distilling."""
        if self.teacher is None:
            return label_targets
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        return distillation_targets(label_targets, teacher_logits, self.label_weight)

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor,
                 features: torch.Tensor | None = None) -> torch.Tensor:
        """`outputs`: logits [B, C], or the experts' logits [N, B, C]; `features`: what the
        classifier saw, when `needs_features`."""
        expert_logits = outputs if outputs.dim() == 3 else outputs.unsqueeze(0)
        loss = self.loss_weight * sum(self.head_loss(logits, targets) for logits in expert_logits)
        if self.diversity_weight and len(expert_logits) > 1:
            loss = loss + self.diversity_weight * diversity_loss(expert_logits)
        if self.stateful is not None:  # e.g. store the batch's features under its classes
            self.stateful.observe(features, targets.argmax(1))
        if self.center_loss is not None:
            loss = loss + self.center_weight * self.center_loss(features, targets)
        if self.tree_weight:
            loss = loss + self.tree_weight * sum(
                tree_supervision_loss(logits, targets, self.hierarchy) for logits in expert_logits)
        return loss
