"""Losses the papers define and timm lacks; each module names the equation it implements."""

from vipnb.losses.distillation import distillation_targets
from vipnb.losses.diversity import diversity_loss
from vipnb.losses.positive_class import positive_class_loss, soft_cross_entropy

__all__ = ["distillation_targets", "diversity_loss", "positive_class_loss", "soft_cross_entropy"]
