"""Self-supervised pretraining (MoCo v2) whose backbone weights initialise supervised training."""

from vipnb.ssl.moco import MoCo, TwoCropTransform, knn_top1

__all__ = ["MoCo", "TwoCropTransform", "knn_top1"]
