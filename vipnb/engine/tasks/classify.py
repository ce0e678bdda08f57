"""Image classification: one timm model or a mixture of experts, with Mixup/CutMix, a
teacher to distil from, and the recipe's loss (`vipnb.engine.objective`: soft-target
cross-entropy, diversity, center and tree losses, the robust losses)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from timm.data import Mixup
from timm.data.mixup import mixup_target
from timm.data.random_erasing import RandomErasing
from torch import nn

from vipnb.data.augment import EvalTransform, TrainTransform
from vipnb.data.sources import RunData, SplitSource, load_run_data
from vipnb.engine.build import build_model, initialise_from, load_trained_model
from vipnb.engine.objective import Objective
from vipnb.engine.precision import autocast
from vipnb.engine.recipe import Recipe
from vipnb.engine.rundir import RunDir
from vipnb.engine.tasks.base import Task
from vipnb.errors import VipnbError
from vipnb.eval.metrics import top1
from vipnb.eval.tta import tta_predict
from vipnb.losses import Hierarchy, induce_hierarchy
from vipnb.losses.wordnet_hierarchy import WNID, wordnet_hierarchy
from vipnb.report.wordnet_names import wordnet_database_dir


class ClassifyTask(Task):
    headline = "val_top1"

    def __init__(self, recipe: Recipe, data: RunData, device: torch.device, dist):
        super().__init__(recipe, data, device, dist)
        self.num_classes = len(data.classes)
        self.mixup = _make_mixup(recipe, self.num_classes)
        self.train_transform = TrainTransform(recipe.input_size, tuple(recipe.scale),
                                              tuple(recipe.ratio), recipe.hflip,
                                              tuple(recipe.mean), tuple(recipe.std),
                                              recipe.auto_augment, recipe.vflip,
                                              tuple(recipe.color_jitter), recipe.gaussian_noise)
        self.eval_transform = EvalTransform(recipe.input_size, recipe.crop_pct,
                                            tuple(recipe.mean), tuple(recipe.std))
        self.random_erasing = (RandomErasing(recipe.random_erasing, mode="pixel", device=device)
                               if recipe.random_erasing else None)
        self.objective: Objective | None = None
        self._classifier_inputs: list[torch.Tensor] = []
        self._last_val: dict | None = None  # the last epoch's validation, reused by finish

    load_data = staticmethod(load_run_data)

    # -- model -----------------------------------------------------------------------------
    def build_model(self, starts_from: dict[str, RunDir]) -> nn.Module:
        model = build_model(self.recipe, self.num_classes)
        if "init_from" in starts_from:
            initialise_from(model, starts_from["init_from"])
        return model

    def attach(self, model: nn.Module, starts_from: dict[str, RunDir]) -> None:
        # The teacher and the hierarchy's source are built after the model: their draws of
        # the global generator follow the model's, as in every run so far.
        self.objective = Objective(self.recipe, self.num_classes,
                                   self._teacher(starts_from.get("teacher")),
                                   feature_dim=_classifier_width(model),
                                   hierarchy=self._hierarchy(starts_from.get("hierarchy_from"))
                                   ).to(self.device)
        self._classifier_inputs = self._capture_classifier_inputs(model)

    def _capture_classifier_inputs(self, model: nn.Module) -> list[torch.Tensor]:
        """The features the classifier sees, caught by a hook, for losses that need them."""
        caught: list[torch.Tensor] = []
        if not self.objective.needs_features:
            return caught
        if self.recipe.experts > 1:
            raise VipnbError(f"{self.recipe.name}: loss {self.recipe.loss} measures one "
                             "classifier's features; train it with `experts: 1`")

        def catch(module, inputs, output):
            if module.training:  # not while evaluating
                caught.append(inputs[0])

        model.get_classifier().register_forward_hook(catch)
        return caught

    def _teacher(self, run: RunDir | None) -> nn.Module | None:
        if run is None:
            return None
        recipe = self.recipe.dependency("teacher")
        if (recipe.input_size, recipe.mean, recipe.std) != (
                self.recipe.input_size, self.recipe.mean, self.recipe.std):
            raise VipnbError(
                f"{self.recipe.name}: teacher {recipe.name} was trained on other inputs "
                f"(input_size, mean, std differ); the teacher sees the student's images"
            )
        teacher = load_trained_model(recipe, run, self.num_classes, self.device)
        return teacher.to(memory_format=self.memory_format)

    def _hierarchy(self, run: RunDir | None) -> Hierarchy | None:
        """The class tree of the tree supervision loss (VIPF eq. 7): with `hierarchy: wordnet`,
        the WordNet hypernyms of the dataset's wnid classes (§3.2's "semantic relationship",
        as NBDT's WordNet hierarchy), else NBDT's induced hierarchy from the classifier of
        `hierarchy_from`'s finished run."""
        if self.recipe.hierarchy == "wordnet" and self.recipe.tree_loss_weight:
            return self._wordnet_hierarchy()
        if run is None:
            return None
        source = load_trained_model(self.recipe.dependency("hierarchy_from"), run,
                                    self.num_classes, torch.device("cpu"))
        return induce_hierarchy(source.get_classifier().weight)

    def _wordnet_hierarchy(self) -> Hierarchy:
        recipe, classes = self.recipe, self.data.classes  # classes.txt's order, the model's
        if not all(WNID.fullmatch(name) for name in classes):
            example = next(name for name in classes if not WNID.fullmatch(name))
            raise VipnbError(
                f"{recipe.name}: hierarchy: wordnet needs classes named by ImageNet wnids "
                f"(n01440764, …), but dataset {recipe.dataset!r}"
                f"{f' ({recipe.data_root})' if recipe.data_root else ''} has class {example!r}; "
                "use hierarchy: induced with hierarchy_from: <recipe> on this dataset")
        directory = recipe.wordnet_dir or wordnet_database_dir()
        if directory is None:
            raise VipnbError(
                f"{recipe.name}: hierarchy: wordnet found no WordNet 3.0 database: install "
                "Debian's wordnet-base (/usr/share/wordnet), set $WNSEARCHDIR, or give its "
                "folder as wordnet_dir")
        return wordnet_hierarchy(classes, directory)

    # -- one epoch -------------------------------------------------------------------------
    def start_epoch(self, epoch: int, count: int, generator: torch.Generator) -> dict:
        self.objective.start_epoch()
        if self.mixup is not None:
            self.mixup.mixup_enabled = epoch < self.recipe.epochs - self.recipe.mixup_off_epochs
        size = self.recipe.cache_size
        boxes, flips = self.train_transform.sample(count, size, size, generator)
        return {"boxes": boxes, "flips": flips,
                "auto_augment": self.train_transform.sample_auto_augment(count, generator),
                "photometric": self.train_transform.sample_photometric(count, generator)}

    def batches(self, order: torch.Tensor, size: int) -> Iterator[tuple[torch.Tensor, ...]]:
        return self.data.train.batches(order, size)

    def inputs_targets(self, batch, positions, draws, generator):
        images, labels = batch
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        auto_augment, photometric = draws["auto_augment"], draws["photometric"]
        inputs = self.train_transform.apply(
            images, draws["boxes"][positions], draws["flips"][positions],
            None if auto_augment is None else auto_augment[positions],
            None if photometric is None else photometric[positions])
        if self.random_erasing is not None:
            inputs = self.random_erasing(inputs)
        if self.mixup is not None and self.mixup.mixup_enabled:
            inputs, targets = self.mixup(inputs, labels)
        else:
            targets = mixup_target(labels, self.num_classes, 1.0, self.recipe.label_smoothing)
        return inputs.contiguous(memory_format=self.memory_format), targets

    def loss(self, forward, inputs, targets):
        targets = self.objective.targets(inputs, targets)
        outputs = forward(inputs)
        features = self._classifier_inputs.pop() if self._classifier_inputs else None
        return self.objective(outputs, targets, features), {}

    # -- evaluation ------------------------------------------------------------------------
    @torch.inference_mode()
    def predict(self, model: nn.Module, source: SplitSource) -> np.ndarray:
        model.eval()
        outputs = []
        order = torch.arange(len(source))
        for images, _ in source.batches(order, self.recipe.eval_batch_size):
            inputs = self.eval_transform(images.to(self.device)).contiguous(
                memory_format=self.memory_format)
            with autocast(self.recipe, self.device):
                if self.recipe.eval_views == "center":
                    outputs.append(model(inputs).float().cpu())
                else:
                    outputs.append(tta_predict(model, inputs, self.recipe.eval_views,
                                               self.recipe.input_size,
                                               mean=tuple(self.recipe.mean),
                                               std=tuple(self.recipe.std),
                                               memory_format=self.memory_format).float().cpu())
        return torch.cat(outputs).numpy() if outputs else np.zeros((0, self.num_classes))

    def _scores(self, model: nn.Module, source: SplitSource) -> dict:
        logits = self.predict(model, source)
        labels = source.labels.numpy()
        known = labels >= 0
        if not known.any():
            return {"top1": math.nan, "loss": math.nan, "logits": logits}
        log_probs = torch.log_softmax(torch.from_numpy(logits[known]), 1)
        loss = -log_probs[torch.arange(int(known.sum())), torch.from_numpy(labels[known])].mean()
        return {"top1": top1(logits[known], labels[known]), "loss": float(loss), "logits": logits}

    def evaluate(self, model: nn.Module) -> dict[str, float | None]:
        self._last_val = self._scores(model, self.data.val)
        return {"val_top1": self._last_val["top1"], "val_loss": self._last_val["loss"]}

    def not_evaluated(self) -> dict[str, None]:
        self._last_val = None
        return {"val_top1": None, "val_loss": None}

    def finish(self, model: nn.Module, run: RunDir) -> dict:
        data = self.data
        summary = {"skipped_images": {s.name: s.skipped for s in (data.train, data.val,
                                                                   data.test)}}
        for source in (data.val, data.test):
            reuse = self._last_val if source is data.val else None
            result = reuse or self._scores(model, source)
            run.write_logits(source.name, result["logits"], source.labels.numpy(), source.ids,
                             source.classes)
            summary[f"{source.name}_top1"] = result["top1"]
        return summary

    def state_dict(self, model: nn.Module) -> dict:
        # The DSB feature store and the class centres: a resumed run continues as if
        # uninterrupted.
        return {"objective": self.objective.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.objective.load_state_dict(state.get("objective") or {})


def _classifier_width(model: nn.Module) -> int:
    """The width of the features the classifier sees (0 for a model without one)."""
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    return getattr(classifier, "in_features", 0)


def _make_mixup(recipe: Recipe, num_classes: int) -> Mixup | None:
    if recipe.mixup_alpha <= 0 and recipe.cutmix_alpha <= 0:
        return None
    return Mixup(mixup_alpha=recipe.mixup_alpha, cutmix_alpha=recipe.cutmix_alpha,
                 prob=recipe.mixup_prob, switch_prob=recipe.mixup_switch_prob,
                 label_smoothing=recipe.label_smoothing, num_classes=num_classes)
