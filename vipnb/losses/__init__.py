"""Losses the papers define and timm lacks; each module names the equation it implements."""

from vipnb.losses.bi_tempered import bi_tempered_logistic_loss, tempered_softmax
from vipnb.losses.center import CenterLoss
from vipnb.losses.distillation import distillation_targets
from vipnb.losses.diversity import diversity_loss
from vipnb.losses.dsb_focal import SemanticScaleStore, dsb_focal_loss, semantic_scale
from vipnb.losses.positive_class import positive_class_loss, soft_cross_entropy
from vipnb.losses.taylor import taylor_cross_entropy
from vipnb.losses.tree import Hierarchy, induce_hierarchy, tree_supervision_loss

__all__ = [
    "CenterLoss",
    "Hierarchy",
    "SemanticScaleStore",
    "bi_tempered_logistic_loss",
    "distillation_targets",
    "diversity_loss",
    "dsb_focal_loss",
    "positive_class_loss",
    "semantic_scale",
    "soft_cross_entropy",
    "taylor_cross_entropy",
    "tempered_softmax",
    "induce_hierarchy",
    "tree_supervision_loss",
]
