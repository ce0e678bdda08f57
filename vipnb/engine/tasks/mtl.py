"""MTL-MoE with boxes: a sparsely gated mixture of experts shared by a classification task
and a box-regression task (or classification alone), on box data; the poster's curves are
test accuracy and box scores per epoch.

A batch carries boxes that move with the crop, the model returns two heads and its gates, and
the loss is cross-entropy + complete-IoU + the gates' auxiliary loss (`vipnb.models.mtl_moe`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import timm.models
import torch
from torch import nn

from vipnb.data.box_augment import BoxEvalTransform, BoxTrainTransform
from vipnb.data.box_data import BoxData, BoxSplit, load_box_data
from vipnb.engine.build import trained_weights
from vipnb.engine.precision import autocast
from vipnb.engine.recipe import Recipe
from vipnb.engine.rundir import RunDir
from vipnb.engine.tasks.base import Task
from vipnb.errors import VipnbError
from vipnb.eval.boxes import box_metrics
from vipnb.models.mtl_moe import MtlMoE, freeze_for_transfer, mtl_loss, replace_classifier

_ONE_BOX = ("a mixed image holds two objects but has one box target, so the box task cannot "
            "mix images")
_CROP_FLIP = ("the box-aware augmentation (vipnb.data.box_augment) moves the box with a "
              "random resized crop and a horizontal flip only")
_OWN_LOSS = "MTL-MoE trains on its own loss, cross-entropy + box_loss_weight · CIoU + gates"


class MtlTask(Task):
    unsupported = {
        "mixup_alpha": _ONE_BOX, "cutmix_alpha": _ONE_BOX, "mixup_off_epochs": _ONE_BOX,
        "random_erasing": _CROP_FLIP, "auto_augment": _CROP_FLIP, "vflip": _CROP_FLIP,
        "color_jitter": _CROP_FLIP, "gaussian_noise": _CROP_FLIP,
        "loss": _OWN_LOSS, "diversity_weight": _OWN_LOSS, "center_loss_weight": _OWN_LOSS,
        "tree_loss_weight": _OWN_LOSS, "hierarchy_from": _OWN_LOSS,
        "teacher": f"{_OWN_LOSS}, with no teacher's targets",
        "fusion": "MTL-MoE's experts are mixed by its gates, not by a fusion layer",
        "stage": "MoCo pretraining is a stage of the classification models",
        "global_pool": "the MTL-MoE backbone keeps its own pooling",
        "drop_path_rate": "the MTL-MoE backbone is built without stochastic depth",
        "init": "the MTL-MoE model keeps timm's and PyTorch's own initialisation",
        "eval_views": "the test images are scored whole, in one view",
        "crop_pct": "the test images are resized whole (their boxes are fractions of them)",
        "val_into_train": "box data's validation is held out of train by `box_val_per_class`",
        "coverage_classes": "box data trains on its classes or on `class_subset`",
        "train_limit": "box data is small; restrict it with `class_subset`",
        "eval_limit": "box data is small; restrict it with `class_subset`",
        "test_limit": "box data is small; restrict it with `class_subset`",
        "data_cache": "box data is decoded into memory",
    }
    load_data = staticmethod(load_box_data)

    def __init__(self, recipe: Recipe, data: BoxData, device: torch.device, dist):
        super().__init__(recipe, data, device, dist)
        # The poster's curves are test scores per epoch; choices are read on validation.
        self.headline = "test_top1" if data.val is None else "val_top1"
        self.train_transform = BoxTrainTransform(recipe.input_size, tuple(recipe.scale),
                                                 tuple(recipe.ratio), recipe.hflip,
                                                 tuple(recipe.mean), tuple(recipe.std))
        self.eval_transform = BoxEvalTransform(recipe.input_size, tuple(recipe.mean),
                                               tuple(recipe.std))
        self._last: dict | None = None  # the last epoch's evaluation per split, for finish

    # -- model -----------------------------------------------------------------------------
    def build_model(self, starts_from: dict[str, RunDir]) -> MtlMoE:
        """A fresh model, or (transfer) the base run's model with a new classifier for this
        recipe's classes, frozen as `freeze` says."""
        num_classes = len(self.data.classes)
        init_from = starts_from.get("init_from")
        if init_from is None:
            if self.recipe.freeze:
                raise VipnbError(f"{self.recipe.name}: `freeze: {self.recipe.freeze}` fine-tunes "
                                 "a trained model; name its recipe in `init_from`")
            model = build_mtl_moe(self.recipe, num_classes)
            if self.recipe.pretrained_file:
                load_pretrained_backbone(model.backbone, self.recipe.pretrained_file)
            return model
        model = build_mtl_moe(init_from.recipe, len(init_from.logits("test").classes))
        model.load_state_dict(trained_weights(init_from))  # its EMA when it kept one
        replace_classifier(model, num_classes)
        freeze_for_transfer(model, self.recipe.freeze or "none")
        return model

    def parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]  # frozen experts stay

    def unused_parameters(self, model: nn.Module) -> bool:
        return True  # the gates route each image to k experts only

    # -- one epoch -------------------------------------------------------------------------
    def train_batch_size(self, requested: int) -> int:
        return min(requested, self.train_size)  # nothing pairs images: odd sizes are fine

    def start_epoch(self, epoch, count, generator):
        size = self.recipe.cache_size
        return self.train_transform.sample(count, size, size, generator)

    def batches(self, order, size):
        split = self.data.train
        for start in range(0, len(order), size):
            index = order[start : start + size]
            yield split.images[index], split.labels[index], split.boxes[index]

    def inputs_targets(self, batch, positions, draws, generator):
        images, labels, boxes = batch
        crops, flips = draws
        images, boxes = self.train_transform.apply(images.to(self.device), boxes.to(self.device),
                                                   crops[positions], flips[positions])
        return images.contiguous(memory_format=self.memory_format), (labels.to(self.device),
                                                                     boxes)

    def loss(self, forward, inputs, targets):
        labels, boxes = targets
        # mtl_loss, not model.loss: under DDP `forward` is the wrapper.
        return mtl_loss(forward(inputs), labels, boxes, self.recipe.box_loss_weight,
                        self.recipe.label_smoothing)

    # -- evaluation ------------------------------------------------------------------------
    @torch.inference_mode()
    def predict(self, model: nn.Module, split: BoxSplit) -> dict:
        """Logits, predicted boxes, gates per task and the metrics on `split`."""
        model.eval()
        logits, boxes, gates = [], [], {}
        for start in range(0, len(split), self.recipe.eval_batch_size):
            images = split.images[start : start + self.recipe.eval_batch_size].to(self.device)
            with autocast(self.recipe, self.device):
                output = model(self.eval_transform(images).contiguous(
                    memory_format=self.memory_format))
            logits.append(output.logits.float().cpu())
            if output.boxes is not None:
                boxes.append(output.boxes.float().cpu())
            for task, gate in output.gates.items():
                gates.setdefault(task, []).append(gate.float().cpu())
        logits = torch.cat(logits)
        metrics = {"top1": float((logits.argmax(1) == split.labels).float().mean())}
        predicted = torch.cat(boxes) if boxes else None
        if predicted is not None:
            metrics.update(box_metrics(predicted, split.boxes))
        return {"logits": logits, "boxes": predicted, "metrics": metrics,
                "gates": {task: torch.cat(g) for task, g in gates.items()}}

    def _scored_splits(self) -> dict[str, BoxSplit]:
        splits = {"test": self.data.test}
        if self.data.val is not None:
            splits["val"] = self.data.val
        return splits

    def _score(self, model) -> dict[str, dict]:
        return {name: self.predict(model, split) for name, split in self._scored_splits().items()}

    @staticmethod
    def _metrics(scored: dict[str, dict]) -> dict[str, float]:
        return {f"{name}_{k}": v for name, result in scored.items()
                for k, v in result["metrics"].items()}

    def evaluate(self, model):
        self._last = self._score(model)
        return self._metrics(self._last)

    def not_evaluated(self):
        self._last = None
        return {f"{name}_top1": None for name in self._scored_splits()}

    def finish(self, model, run):
        """The last epoch's evaluation: logits of each scored split, the test set's boxes and
        gates, and the metrics."""
        last = self._last or self._score(model)
        for name, split in self._scored_splits().items():
            run.write_logits(name, last[name]["logits"].numpy(), split.labels.numpy(),
                             [str(i) for i in range(len(split))], self.data.classes)
        test, split = last["test"], self.data.test
        np.savez_compressed(run.path / "boxes_gates_test.npz",
                            boxes=(np.zeros((0, 4)) if test["boxes"] is None
                                   else test["boxes"].numpy()),
                            target_boxes=split.boxes.numpy(),
                            **{f"gates_{task}": g.numpy() for task, g in test["gates"].items()})
        return self._metrics(last)


def build_mtl_moe(recipe: Recipe, num_classes: int) -> MtlMoE:
    tasks = ("classify", "box") if recipe.box_task else ("classify",)
    return MtlMoE(recipe.model, num_classes, num_experts=recipe.experts, k=recipe.gate_k,
                  tasks=tasks, dropout=recipe.drop_rate, backbone_kwargs=recipe.model_kwargs)


def load_pretrained_backbone(backbone: nn.Module, path: str) -> None:
    """Start the MTL-MoE backbone ("bottom layers", the poster's Fig. 2) from a local
    timm-compatible state dict (`pretrained_file`: .pth, .bin or .safetensors, read by timm;
    nothing is downloaded): the poster's 79-80 % on CUB implies ImageNet-initialised
    backbones. Every backbone weight must be in the file; only the file's own classifier
    (the model's `pretrained_cfg["classifier"]`, e.g. `fc`) may be left over."""
    file = Path(path).expanduser()
    try:
        weights = timm.models.load_state_dict(str(file))
    except FileNotFoundError:
        raise VipnbError(f"pretrained_file {file}: no such file; give the path of a local state "
                         "dict (e.g. timm's resnet50 ImageNet .pth), or leave it empty") from None
    except Exception as e:  # whatever torch.load or safetensors make of a file that is none
        raise VipnbError(f"pretrained_file {file}: not a readable state dict ({e}); save one "
                         "with torch.save(model.state_dict(), path)") from None
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    model = cfg.get("architecture") or type(backbone).__name__
    try:
        missing, unexpected = backbone.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # a weight of another shape
        raise VipnbError(f"pretrained_file {file}: its weights do not fit the {model} "
                         f"backbone: {str(e).splitlines()[-1].strip()}; give weights of the "
                         "recipe's `model` with its `model_kwargs`") from None
    classifier = f"{cfg.get('classifier') or 'fc'}."
    unexpected = [key for key in unexpected if not key.startswith(classifier)]
    if missing or unexpected:
        raise VipnbError(f"pretrained_file {file}: its weights do not fit the {model} backbone: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}; give weights of "
                         "the recipe's `model` with its `model_kwargs`")
