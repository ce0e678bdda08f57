"""Xavier (Glorot) initialisation, as the fusion-coverage paper trains its backbones from scratch
(§III.B: "we use Xavier algorithm to initialize the convolution and fully connected layers")."""

from __future__ import annotations

from torch import nn

_XAVIER_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def xavier_init_(model: nn.Module) -> nn.Module:
    """Every Conv1d/2d/3d and Linear weight (timm's subclasses included) drawn Xavier-uniform,
    U(±sqrt(6 / (fan_in + fan_out))), and their biases zeroed; normalisation layers and
    everything else keep their values. Changes `model` in place and returns it."""
    for module in model.modules():
        if isinstance(module, _XAVIER_LAYERS):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model
