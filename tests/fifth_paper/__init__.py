"""A toy fifth paper, outside vipnb: its loss and its architecture register themselves (as
timm's models do), its recipes sit in a folder of its own, and nothing under vipnb/ is
edited to train them (tests/test_fifth_paper.py)."""

from pathlib import Path

import torch
import torch.nn.functional as F
from timm.models import register_model
from torch import nn

from vipnb.engine.recipe import register_recipe_folder
from vipnb.losses.registry import register_head_loss

RECIPES = Path(__file__).parent / "recipes"


@register_head_loss("toy_margin_ce", keys=("margin",))
def build_margin_cross_entropy(recipe, num_classes):
    """Soft-target cross-entropy on logits whose target class is lowered by `margin` (an
    additive-margin softmax): the toy paper's 'equation 1'."""
    margin = float(recipe.loss_kwargs.get("margin", 0.0))

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return -(targets * F.log_softmax(logits - margin * targets, dim=1)).sum(1).mean()

    return loss


class TinyNet(nn.Module):
    """Two convolutions and a linear classifier: the toy paper's architecture."""

    def __init__(self, num_classes: int = 10, width: int = 8, drop_rate: float = 0.0, **_):
        super().__init__()
        self.num_classes = num_classes
        self.features = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = width
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc


@register_model
def toy_tinynet(pretrained: bool = False, **kwargs) -> TinyNet:
    return TinyNet(**kwargs)


register_recipe_folder(RECIPES)
