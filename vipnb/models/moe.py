"""Mixture of experts over a shared trunk, with an optional fusion head (MoE paper §2.2–2.3).

The experts are timm ResNet-family models (ResNet, ResNeSt, SE-ResNet, ...) of one
architecture with independent weights: the stem and the first `shared_stages` stages are
shared (those of the first model built); every expert keeps its own later stages, pooling,
dropout and classifier. timm's `forward_features` / `forward_head` do the work, with the
shared modules replaced by identities inside each expert.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from vipnb.errors import VipnbError

_STEM = ("conv1", "bn1", "act1", "maxpool")


class MixtureOfExperts(nn.Module):
    """N experts on a shared trunk (Fig. 1).

    Training mode returns the experts' logits [N, B, C] (the loss is summed over experts,
    eq. 5, plus the diversity loss, eq. 7–8). Evaluation returns log of the mean of the
    experts' probabilities (the paper's test-time average), which softmax maps back to it.
    With `fusion`, a linear layer on the concatenated expert embeddings gives the logits
    (eq. 9) and every other parameter is frozen, in evaluation mode, as the paper trains it.
    """

    def __init__(self, make_model: Callable[[], nn.Module], num_experts: int,
                 shared_stages: int = 2, fusion: bool = False):
        super().__init__()
        models = [make_model() for _ in range(num_experts)]
        stages = _stage_names(models[0])
        if not 0 <= shared_stages < len(stages):
            raise VipnbError(f"shared_stages={shared_stages}: choose 0 to {len(stages) - 1} "
                             f"for {type(models[0]).__name__} (stages {', '.join(stages)})")
        shared = (*_STEM, *stages[:shared_stages])
        self.shared_names = shared
        self.trunk = nn.Sequential(*(getattr(models[0], name) for name in shared))
        for model in models:
            for name in shared:
                setattr(model, name, nn.Identity())
        self.experts = nn.ModuleList(models)
        self.fusion = None
        if fusion:
            width = sum(model.num_features for model in models)
            self.fusion = nn.Linear(width, models[0].num_classes)
            self.trunk.requires_grad_(False)
            self.experts.requires_grad_(False)

    def backbone_weights(self, backbone: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One backbone's weights (a MoCo-v2 run's, §3.1: "each model would be self-supervised
        pretrained by MoCo-v2 [...] and then used for parameters initialization") under this
        mixture's keys: the stem and shared stages into the trunk, every later stage into each
        expert. The experts' classifiers stay as initialised, each its own draw, which is what
        makes the experts' gradients differ from the first step."""
        mapped = {}
        for key, value in backbone.items():
            module, _, rest = key.partition(".")
            if module in self.shared_names:
                mapped[f"trunk.{self.shared_names.index(module)}.{rest}"] = value
            else:
                mapped.update({f"experts.{n}.{key}": value for n in range(len(self.experts))})
        return mapped

    def train(self, mode: bool = True) -> MixtureOfExperts:
        super().train(mode)
        if self.fusion is not None:  # the frozen experts stay in evaluation mode
            self.trunk.eval()
            self.experts.eval()
        return self

    def embeddings(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each expert's pooled features E_i."""
        shared = self.trunk(x)
        return [expert.forward_head(expert.forward_features(shared), pre_logits=True)
                for expert in self.experts]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embeddings = self.embeddings(x)
        if self.fusion is not None:
            return self.fusion(torch.cat(embeddings, dim=1))
        logits = torch.stack([expert.get_classifier()(e)
                              for expert, e in zip(self.experts, embeddings, strict=True)])
        if self.training:
            return logits
        return torch.log_softmax(logits.float(), -1).logsumexp(0) - torch.log(
            torch.tensor(float(len(self.experts))))


def _stage_names(model: nn.Module) -> list[str]:
    names = [f"layer{i}" for i in range(1, 5)]
    if not all(hasattr(model, name) for name in (*_STEM, *names, "forward_head")):
        raise VipnbError(
            f"{type(model).__name__} is not a timm ResNet-family model (stem conv1/bn1/act1/"
            "maxpool, stages layer1-layer4): the mixture of experts splits only those; use "
            "a resnet*, resnest*, seresnet* or resnest*_aa model"
        )
    return names
