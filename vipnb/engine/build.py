"""A recipe's model: a timm model or a mixture of experts, with weights from another run."""

from __future__ import annotations

import timm
import torch
from torch import nn

from vipnb.engine.checkpoint import load_checkpoint
from vipnb.engine.recipe import Recipe
from vipnb.engine.rundir import RunDir
from vipnb.errors import VipnbError
from vipnb.models.init import xavier_init_
from vipnb.models.moe import MixtureOfExperts


def build_model(recipe: Recipe, num_classes: int) -> nn.Module:
    if not timm.is_model(recipe.model):
        raise VipnbError(f"{recipe.name}: model={recipe.model!r} is not a timm model (nor one "
                         "vipnb.models registers); list the names with "
                         "timm.list_models('<pattern>*')")

    def make() -> nn.Module:
        # timm drops None arguments: models without stochastic depth (DenseNet) refuse it.
        model = timm.create_model(recipe.model, pretrained=False, num_classes=num_classes,
                                  drop_rate=recipe.drop_rate,
                                  drop_path_rate=recipe.drop_path_rate or None,
                                  global_pool=recipe.global_pool or None,
                                  **recipe.model_kwargs)
        return xavier_init_(model) if recipe.init == "xavier" else model

    if recipe.experts > 1:
        return MixtureOfExperts(make, recipe.experts, recipe.shared_stages, recipe.fusion)
    if recipe.fusion:
        raise VipnbError(f"{recipe.name}: `fusion: true` fuses experts; set `experts` above 1")
    return make()


def trained_weights(run: RunDir) -> dict[str, torch.Tensor]:
    """The weights a finished run evaluated with (its EMA when it kept one), keyed as the
    plain model's state dict."""
    state = load_checkpoint(run.checkpoint_file)
    if state.get("backbone"):
        return state["backbone"]
    if state.get("ema"):
        # timm's ModelEmaV3 keeps its copy as `.module`: its state dict says `module.<key>`.
        return _without_prefix(state["ema"], "module.")
    return state["model"]


def _without_prefix(weights: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """`weights` with `prefix` taken off every key, when every key has it."""
    if not weights or not all(key.startswith(prefix) for key in weights):
        return weights
    return {key[len(prefix):]: value for key, value in weights.items()}


def load_trained_model(recipe: Recipe, run: RunDir, num_classes: int,
                       device: torch.device) -> nn.Module:
    """A finished run's model, frozen in evaluation mode (a distillation teacher)."""
    model = build_model(recipe, num_classes)
    model.load_state_dict(trained_weights(run))
    return model.to(device).eval().requires_grad_(False)


def initialise_from(model: nn.Module, run: RunDir) -> None:
    """Start `model` from a finished run's weights: a mixture of experts before its fusion
    head is trained, or a backbone pretrained without labels (MoCo). Only the layers the
    source lacks (fusion head, classifier) may stay as initialised."""
    weights = trained_weights(run)
    if isinstance(model, MixtureOfExperts) and not any(k.startswith("trunk.") for k in weights):
        weights = model.backbone_weights(weights)  # one backbone (MoCo) into every expert
    missing, unexpected = model.load_state_dict(weights, strict=False)
    allowed = {"fusion.", "fc.", "classifier.", "head.", "last_linear."}
    untrained = [key for key in missing if not any(key.startswith(a) or f".{a}" in key
                                                    for a in allowed)]
    if untrained or unexpected:
        raise VipnbError(
            f"the weights of {run.path} do not fit this model: missing "
            f"{untrained[:5]}, unexpected {unexpected[:5]}; `init_from` must name a recipe "
            "with the same model (and number of experts)"
        )
