"""Weighted score averaging of several models (the MoE and VIPF papers' final ensembles),
from saved logits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vipnb.errors import VipnbError


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)


def weighted_score_average(logits: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Σ_m w_m softmax(z_m) / Σ_m w_m: the models' class probabilities, averaged with weights."""
    if len(logits) != len(weights) or not logits:
        raise VipnbError(f"{len(logits)} models but {len(weights)} weights: give one weight "
                         "per model")
    shapes = {np.shape(z) for z in logits}
    if len(shapes) != 1:
        raise VipnbError(f"the models scored different image sets (logit shapes {shapes})")
    weights = np.asarray(weights, dtype=np.float64)
    stacked = np.stack([softmax(np.asarray(z, dtype=np.float64)) for z in logits])
    return np.tensordot(weights, stacked, axes=1) / weights.sum()


def top_models_weights(val_top1: Sequence[float], n_best: int, best: float = 3.0,
                         rest: float = 1.0) -> list[float]:
    """Weight `best` for the `n_best` models with the highest validation top-1, `rest` for
    the others (the papers' "3 for the higher performance models, 1 for the rest"; they do
    not say how many are "higher", so it is a parameter). Ties keep the earlier model."""
    order = sorted(range(len(val_top1)), key=lambda i: -val_top1[i])
    chosen = set(order[:n_best])
    return [best if i in chosen else rest for i in range(len(val_top1))]
