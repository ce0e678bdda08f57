"""Head losses by name, as timm's `register_model` does for models: a recipe's `loss` names
one, and a paper outside vipnb adds its own without editing vipnb:

    @register_head_loss("my_loss", keys=("margin",))
    def build_my_loss(recipe, num_classes):
        margin = recipe.loss_kwargs.get("margin", 0.5)  # the recipe's `loss_kwargs: {margin: …}`
        return lambda logits, targets: ...   # targets: soft targets [B, C]

`keys` are what the loss reads beyond `loss`: Recipe fields (the built-in losses' `taylor_order`,
…) or keys of the recipe's `loss_kwargs` (a new loss's settings). Setting one of them for
another loss is an error (`unused_loss_keys`). A builder returns a callable
`loss(logits, targets)`; a loss with state across steps (the DSB focal loss's feature store)
returns a `StatefulHeadLoss`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from vipnb.errors import VipnbError
from vipnb.losses.bi_tempered import bi_tempered_logistic_loss
from vipnb.losses.dsb_focal import SemanticScaleStore, dsb_focal_loss
from vipnb.losses.positive_class import positive_class_loss, soft_cross_entropy
from vipnb.losses.taylor import taylor_cross_entropy

HeadLossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class HeadLossEntry:
    name: str
    build: Callable[[Any, int], HeadLossFn]  # (recipe, num_classes) → loss(logits, targets)
    keys: tuple[str, ...]


_HEAD_LOSSES: dict[str, HeadLossEntry] = {}


def register_head_loss(name: str, keys: tuple[str, ...] = ()):
    """Register the decorated builder under `name` (a name taken twice is an error)."""
    def register(build: Callable[[Any, int], HeadLossFn]):
        if name in _HEAD_LOSSES:
            raise VipnbError(f"a head loss named {name!r} is registered already "
                             f"({_HEAD_LOSSES[name].build.__module__}); choose another name")
        _HEAD_LOSSES[name] = HeadLossEntry(name, build, tuple(keys))
        return build
    return register


def head_loss_names() -> tuple[str, ...]:
    return tuple(_HEAD_LOSSES)


def build_head_loss(recipe, num_classes: int) -> HeadLossFn:
    """The head loss `recipe.loss` names, built for `num_classes` classes."""
    if recipe.loss not in _HEAD_LOSSES:
        raise VipnbError(f"{recipe.name}: loss={recipe.loss!r} is not one of "
                         f"{', '.join(_HEAD_LOSSES)}; register it with "
                         "vipnb.losses.registry.register_head_loss before loading the recipe")
    return _HEAD_LOSSES[recipe.loss].build(recipe, num_classes)


def loss_keys(loss: str) -> tuple[str, ...]:
    return _HEAD_LOSSES[loss].keys if loss in _HEAD_LOSSES else ()


def unused_loss_keys(loss: str, given: set[str]) -> list[str]:
    """The keys of `given` that only other losses than `loss` read."""
    others = {key for entry in _HEAD_LOSSES.values() for key in entry.keys} - set(loss_keys(loss))
    return sorted(given & others)


class StatefulHeadLoss:
    """A head loss that also sees the features the classifier saw, is told when an epoch
    starts, and whose state a resumed run restores."""

    needs_features = True

    def observe(self, features: torch.Tensor, labels: torch.Tensor) -> None: ...

    def start_epoch(self) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class DsbFocalHeadLoss(StatefulHeadLoss):
    """Fusion-coverage eq. 8: the focal loss weighted by 1 / semantic scale, measured on a
    store of the features the model has produced lately; uniform until the store fills."""

    def __init__(self, num_classes: int, store_size: int, gamma: float):
        self.store = SemanticScaleStore(num_classes, store_size)
        self.class_weights = torch.ones(num_classes)
        self.gamma = gamma

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return dsb_focal_loss(logits, targets, self.class_weights.to(logits.device),
                              gamma=self.gamma)

    def observe(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.store.update(features.detach().float(), labels)

    def start_epoch(self) -> None:
        self.class_weights = self.store.class_weights()

    def state_dict(self) -> dict:
        return self.store.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.store.load_state_dict(state)


register_head_loss("soft_ce")(lambda recipe, num_classes: soft_cross_entropy)
register_head_loss("positive_class")(lambda recipe, num_classes: positive_class_loss)
register_head_loss("taylor_ce", keys=("taylor_order",))(
    lambda recipe, num_classes: partial(taylor_cross_entropy, order=recipe.taylor_order))
register_head_loss("bi_tempered", keys=("bi_tempered_t1", "bi_tempered_t2"))(
    lambda recipe, num_classes: partial(bi_tempered_logistic_loss, t1=recipe.bi_tempered_t1,
                                        t2=recipe.bi_tempered_t2))
register_head_loss("dsb_focal", keys=("focal_gamma", "semantic_scale_store"))(
    lambda recipe, num_classes: DsbFocalHeadLoss(num_classes, recipe.semantic_scale_store,
                                                 recipe.focal_gamma))
