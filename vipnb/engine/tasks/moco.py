"""MoCo-v2 pretraining as a recipe stage (`stage: moco`): the MoE paper's self-supervised
initialisation (§3.1), trained on the training images without their labels.

The model is `vipnb.ssl.MoCo` around the recipe's backbone; a batch is two augmented views
of its images; the loss is InfoNCE; the evaluation is the kNN top-1 of the backbone's
features, a label-free check that the features learn something. The checkpoint keeps the
query backbone's weights under `backbone`, which `init_from` loads.
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn

from vipnb.data.augment import EvalTransform
from vipnb.data.sources import SplitSource, load_run_data
from vipnb.engine.rundir import RunDir
from vipnb.engine.tasks.base import Task
from vipnb.ssl import MoCo, TwoCropTransform, knn_top1

_NO_LABELS = "MoCo pretraining uses no labels, so no supervised loss"


class MocoTask(Task):
    # A MoCo recipe extends the supervised recipe it initialises, so it inherits that
    # recipe's Mixup, smoothing and augmentation; those are left as they are (its views are
    # MoCo's own two crops). What would change the model or add a loss is refused.
    unsupported = {
        "experts": "MoCo pretrains one backbone; pretrain with `experts: 1` and build the "
                   "mixture in the supervised recipe",
        "fusion": "MoCo pretrains one backbone, with no experts to fuse",
        "init_from": "MoCo pretraining starts from random weights",
        "teacher": f"{_NO_LABELS} to distil",
        "hierarchy_from": f"{_NO_LABELS} over a class tree",
        "tree_loss_weight": _NO_LABELS,
        "center_loss_weight": _NO_LABELS,
        "diversity_weight": "MoCo pretrains one backbone, with no experts to diversify",
    }
    headline = "val_top1"  # the kNN top-1

    load_data = staticmethod(load_run_data)

    def __init__(self, recipe, data, device, dist):
        super().__init__(recipe, data, device, dist)
        self.two_crops = TwoCropTransform(recipe.input_size, mean=tuple(recipe.mean),
                                          std=tuple(recipe.std))
        self.eval_transform = EvalTransform(recipe.input_size, recipe.crop_pct,
                                            tuple(recipe.mean), tuple(recipe.std))

    def build_model(self, starts_from: dict[str, RunDir]) -> nn.Module:
        recipe = self.recipe
        backbone = timm.create_model(recipe.model, pretrained=False, num_classes=0,
                                     drop_path_rate=recipe.drop_path_rate, **recipe.model_kwargs)
        return MoCo(backbone, backbone.num_features, recipe.moco_dim, recipe.moco_queue,
                    recipe.moco_momentum, recipe.moco_temperature)

    def batches(self, order, size):
        return self.data.train.batches(order, size)

    def inputs_targets(self, batch, positions, draws, generator):
        # The views are drawn batch by batch from the epoch's generator.
        view_q, view_k = self.two_crops(batch[0].to(self.device), generator)
        return (view_q.contiguous(memory_format=self.memory_format),
                view_k.contiguous(memory_format=self.memory_format)), None

    def loss(self, forward, inputs, targets):
        return forward(*inputs), {}

    @torch.inference_mode()
    def _features(self, model: MoCo, source: SplitSource) -> torch.Tensor:
        backbone = model.encoder_q.backbone
        backbone.eval()
        batches = source.batches(torch.arange(len(source)), self.recipe.eval_batch_size)
        return torch.cat([F.normalize(backbone(self.eval_transform(images.to(self.device))).float(),
                                      dim=1) for images, _ in batches])

    def _knn_top1(self, model: MoCo, source: SplitSource) -> float:
        return knn_top1(self._features(model, self.data.train), self.data.train.labels,
                        self._features(model, source), source.labels)

    def evaluate(self, model):
        return {"val_top1": self._knn_top1(model, self.data.val), "val_loss": float("nan")}

    def not_evaluated(self):
        return {"val_top1": None, "val_loss": None}

    def finish(self, model, run):
        return {"val_knn_top1": self._knn_top1(model, self.data.val),
                "test_knn_top1": self._knn_top1(model, self.data.test)}

    def state_dict(self, model):
        return {"backbone": model.backbone_state_dict()}
