"""The training loss of a recipe, from the model's output and the (mixed, smoothed) targets.

Per head: soft-target cross-entropy (MoE eq. 3), cross-entropy + cosine (eq. 4, the VIPF
positive-class loss), or one of the fusion-coverage paper's robust losses (Taylor
cross-entropy, bi-tempered logistic, DSB focal). A mixture of experts sums the head loss
over experts (eq. 5) and adds λ times the diversity loss (eq. 8); with a teacher, the
targets become eq. 2's mix of labels and the teacher's softmax on the same augmented images.

VIPF eq. 3 weighs the head loss by α (`loss_weight`) and adds β times the center loss
(eq. 6, on the features the classifier sees) and γ times the tree supervision loss (eq. 7,
over a hierarchy induced from another run's classifier).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from vipnb.engine.recipe import Recipe
from vipnb.errors import VipnbError
from vipnb.losses import (
    CenterLoss,
    Hierarchy,
    SemanticScaleStore,
    bi_tempered_logistic_loss,
    distillation_targets,
    diversity_loss,
    dsb_focal_loss,
    positive_class_loss,
    soft_cross_entropy,
    taylor_cross_entropy,
    tree_supervision_loss,
)


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
                             "classifier induces it")
        self.hierarchy = hierarchy
        self.label_weight = recipe.distill_label_weight
        self.teacher = teacher
        # DSB focal weighs each class by 1 / its semantic scale, measured on a store of the
        # features the model has produced lately; uniform until the store has filled.
        self.scale_store = (SemanticScaleStore(num_classes, recipe.semantic_scale_store)
                            if recipe.loss == "dsb_focal" else None)
        self.class_weights = torch.ones(num_classes)
        self.head_loss = {
            "soft_ce": soft_cross_entropy,
            "positive_class": positive_class_loss,
            "taylor_ce": partial(taylor_cross_entropy, order=recipe.taylor_order),
            "bi_tempered": partial(bi_tempered_logistic_loss, t1=recipe.bi_tempered_t1,
                                   t2=recipe.bi_tempered_t2),
            "dsb_focal": self._dsb_focal,
        }[recipe.loss]
        self.gamma = recipe.focal_gamma

    @property
    def needs_features(self) -> bool:
        """Whether the loss wants the features the classifier sees."""
        return self.scale_store is not None or self.center_loss is not None

    def to(self, device: torch.device) -> Objective:
        if self.center_loss is not None:
            self.center_loss.to(device)
        return self

    def start_epoch(self) -> None:
        """Refresh the DSB class weights from the features stored during the last epoch."""
        if self.scale_store is not None:
            self.class_weights = self.scale_store.class_weights()

    def state_dict(self) -> dict:
        """What a resumed run needs to continue as if uninterrupted: the feature store, the
        class centres."""
        state = {}
        if self.scale_store is not None:
            state["scale_store"] = self.scale_store.state_dict()
        if self.center_loss is not None:
            state["center_loss"] = self.center_loss.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """The DSB weights follow from the store at the next `start_epoch`."""
        if self.scale_store is not None and "scale_store" in state:
            self.scale_store.load_state_dict(state["scale_store"])
        if self.center_loss is not None and "center_loss" in state:
            self.center_loss.load_state_dict(state["center_loss"])

    def _dsb_focal(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        weights = self.class_weights.to(logits.device)
        return dsb_focal_loss(logits, targets, weights, gamma=self.gamma)

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
        if self.scale_store is not None:  # store the batch's features under its classes
            self.scale_store.update(features.detach().float(), targets.argmax(1))
        if self.center_loss is not None:
            loss = loss + self.center_weight * self.center_loss(features, targets)
        if self.tree_weight:
            loss = loss + self.tree_weight * sum(
                tree_supervision_loss(logits, targets, self.hierarchy) for logits in expert_logits)
        return loss
