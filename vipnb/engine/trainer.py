"""The classification trainer: one recipe and its data in, one finished run directory out.

timm does what it does well (models, optimizers, schedulers, Mixup/CutMix, EMA, the
soft-target loss); this module feeds it batches from `vipnb.data`, keeps the run
reproducible (seeded per epoch, so a resumed run equals an uninterrupted one) and writes
everything the evaluation and the reports read back.
"""

from __future__ import annotations

import logging
import math
import random
import time
from contextlib import nullcontext

import numpy as np
import torch
from timm.data import Mixup
from timm.data.mixup import mixup_target
from timm.data.random_erasing import RandomErasing
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3

from vipnb.data.augment import EvalTransform, TrainTransform
from vipnb.data.sources import RunData, SplitSource
from vipnb.engine.build import build_model, initialise_from, load_trained_model
from vipnb.engine.checkpoint import load_checkpoint, restoring_from, save_atomic
from vipnb.engine.distributed import DistInfo
from vipnb.engine.objective import Objective
from vipnb.engine.recipe import Recipe
from vipnb.engine.rundir import RunDir
from vipnb.errors import VipnbError
from vipnb.eval.metrics import top1
from vipnb.eval.tta import tta_predict
from vipnb.losses import Hierarchy, induce_hierarchy
from vipnb.models.dsk import DualResidualBottleneck
from vipnb.progress import progress_bar

log = logging.getLogger(__name__)


class Trainer:
    def __init__(self, recipe: Recipe, run: RunDir, data: RunData, device: torch.device,
                 progress: bool, dist_info: DistInfo | None = None,
                 starts_from: dict[str, RunDir] | None = None):
        self.recipe, self.run, self.data, self.device = recipe, run, data, device
        self.dist = dist_info or DistInfo()
        self.progress = progress and self.dist.is_main
        starts_from = starts_from or {}
        torch.manual_seed(recipe.seed)
        self.num_classes = len(data.classes)
        self.model = self._build_model(starts_from).to(device)
        self.memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        if recipe.sync_bn and self.dist.enabled:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.batch_size = _train_batch_size(recipe.batch_size, len(data.train))
        self.micro_batch = _micro_batch_size(recipe, self.batch_size, self.dist.world_size)
        self.steps_per_epoch = len(data.train) // self.batch_size
        self.optimizer = create_optimizer_v2(self.model, opt=recipe.optimizer, lr=recipe.lr,
                                             weight_decay=recipe.weight_decay,
                                             momentum=recipe.momentum)
        self.scheduler, self.total_epochs = create_scheduler_v2(
            self.optimizer, sched=recipe.sched, num_epochs=recipe.epochs,
            decay_epochs=recipe.decay_epochs, decay_rate=recipe.decay_rate,
            warmup_epochs=recipe.warmup_epochs, warmup_lr=recipe.warmup_lr,
            min_lr=recipe.min_lr, cooldown_epochs=recipe.cooldown_epochs,
            step_on_epochs=False, updates_per_epoch=self.steps_per_epoch,
        )
        self.ema = ModelEmaV3(self.model, decay=recipe.ema_decay) if recipe.ema_decay else None
        self.mixup = _make_mixup(recipe, self.num_classes)
        self.objective = Objective(recipe, self.num_classes,
                                   self._teacher(starts_from.get("teacher")),
                                   feature_dim=_classifier_width(self.model),
                                   hierarchy=self._hierarchy(starts_from.get("hierarchy_from"))
                                   ).to(device)
        self._classifier_inputs = self._capture_classifier_inputs()
        self.train_transform = TrainTransform(recipe.input_size, tuple(recipe.scale),
                                              tuple(recipe.ratio), recipe.hflip,
                                              tuple(recipe.mean), tuple(recipe.std),
                                              recipe.auto_augment, recipe.vflip,
                                              tuple(recipe.color_jitter), recipe.gaussian_noise)
        self.eval_transform = EvalTransform(recipe.input_size, recipe.crop_pct,
                                            tuple(recipe.mean), tuple(recipe.std))
        self.random_erasing = (RandomErasing(recipe.random_erasing, mode="pixel", device=device)
                               if recipe.random_erasing else None)
        self.forward = self._wrap(self.model)
        self._last_val: dict | None = None  # the last epoch's validation, reused by _finish

    def _build_model(self, starts_from: dict[str, RunDir]) -> torch.nn.Module:
        model = build_model(self.recipe, self.num_classes)
        if "init_from" in starts_from:
            initialise_from(model, starts_from["init_from"])
        return model

    # -- the loop --------------------------------------------------------------------------
    def fit(self) -> RunDir:
        start_epoch, wall_time = self._restore()
        if self.dist.is_main:
            self.run.truncate_metrics(start_epoch)
        epochs = range(start_epoch, self.total_epochs)
        bar = progress_bar(epochs, desc=self.recipe.run_name, total=self.total_epochs,
                           initial=start_epoch, disable=not self.progress, mininterval=2.0,
                           ncols=110)
        for epoch in bar:
            started = time.perf_counter()
            train_loss, images_per_s = self._train_one_epoch(epoch)
            if self.dist.is_main:  # evaluation, metrics and checkpoints: one process
                last = epoch + 1 == self.total_epochs
                validate = last or (epoch + 1) % max(1, self.recipe.val_every) == 0
                val = self._evaluate(self.data.val) if validate else {"top1": None, "loss": None}
                self._last_val = val if last else None  # _finish writes these logits
                wall_time += time.perf_counter() - started
                record = {"epoch": epoch, "train_loss": train_loss,
                          "lr": self.optimizer.param_groups[0]["lr"], "val_top1": val["top1"],
                          "val_loss": val["loss"], "images_per_s": images_per_s,
                          "epoch_time_s": time.perf_counter() - started,
                          "wall_time_s": wall_time}
                self.run.append_metrics(record)
                self._save(epoch + 1, wall_time)
                bar.set_postfix(loss=f"{train_loss:.3f}", ips=f"{images_per_s:.0f}",
                                **({"val": f"{val['top1']:.3f}"} if validate else {}))
            self.dist.barrier()
        bar.close()
        if self.dist.is_main:
            self._finish(wall_time)
        self.dist.barrier()
        return self.run

    def _train_one_epoch(self, epoch: int) -> tuple[float, float]:
        """One epoch; returns the mean training loss and the images/s of all processes."""
        self.model.train()
        self.objective.start_epoch()
        generator = _seed_epoch(self.recipe.seed, epoch)
        order = torch.randperm(len(self.data.train), generator=generator)
        order = order[: self.steps_per_epoch * self.batch_size]
        # Every process draws the augmentation of the whole epoch and keeps its share, so
        # the images seen do not depend on how many processes share the work.
        size = self.recipe.cache_size
        boxes, flips = self.train_transform.sample(len(order), size, size, generator)
        auto_augment = self.train_transform.sample_auto_augment(len(order), generator)
        photometric = self.train_transform.sample_photometric(len(order), generator)
        mine = self._my_positions()
        if self.mixup is not None:
            self.mixup.mixup_enabled = epoch < self.recipe.epochs - self.recipe.mixup_off_epochs
        accum = self.recipe.accum_steps
        total_loss = torch.zeros((), device=self.device)
        started = time.perf_counter()
        batches = self.data.train.batches(order[mine], self.micro_batch)
        for index, (images, labels) in enumerate(batches):
            step, micro_step = divmod(index, accum)
            positions = mine[index * self.micro_batch : (index + 1) * self.micro_batch]
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            inputs = self.train_transform.apply(
                images, boxes[positions], flips[positions],
                None if auto_augment is None else auto_augment[positions],
                None if photometric is None else photometric[positions])
            if self.random_erasing is not None:
                inputs = self.random_erasing(inputs)
            if self.mixup is not None and self.mixup.mixup_enabled:
                inputs, targets = self.mixup(inputs, labels)
            else:
                targets = mixup_target(labels, self.num_classes, 1.0, self.recipe.label_smoothing)
            inputs = inputs.contiguous(memory_format=self.memory_format)
            last_micro_step = micro_step == accum - 1
            # DDP all-reduces gradients on the last accumulation step only.
            no_sync = self.forward.no_sync if self.dist.enabled and not last_micro_step else None
            with no_sync() if no_sync else nullcontext():
                loss = self._forward_loss(inputs, targets)
                self._check_finite(loss, epoch, step)
                (loss / accum).backward()
            total_loss += loss.detach()
            if last_micro_step:
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step_update(epoch * self.steps_per_epoch + step + 1)
                if self.ema is not None:
                    self.ema.update(self.model)
        self.scheduler.step(epoch + 1)
        elapsed = time.perf_counter() - started
        mean_loss = self.dist.mean(total_loss / max(1, self.steps_per_epoch * accum))
        return float(mean_loss), len(order) / max(elapsed, 1e-9)

    def _my_positions(self) -> torch.Tensor:
        """Positions in the epoch's order that this process trains on: its contiguous share
        of every global batch."""
        share = self.batch_size // self.dist.world_size
        starts = torch.arange(self.steps_per_epoch) * self.batch_size + self.dist.rank * share
        return (starts[:, None] + torch.arange(share)[None, :]).reshape(-1)

    def _capture_classifier_inputs(self) -> list[torch.Tensor]:
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

        self.model.get_classifier().register_forward_hook(catch)
        return caught

    def _teacher(self, run: RunDir | None) -> torch.nn.Module | None:
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
        """NBDT's induced hierarchy from the classifier of `hierarchy_from`'s finished run."""
        if run is None:
            return None
        source = load_trained_model(self.recipe.dependency("hierarchy_from"), run,
                                    self.num_classes, torch.device("cpu"))
        return induce_hierarchy(source.get_classifier().weight)

    def _forward_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        try:
            with self._autocast():
                targets = self.objective.targets(inputs, targets)
                outputs = self.forward(inputs)
                features = self._classifier_inputs.pop() if self._classifier_inputs else None
                return self.objective(outputs, targets, features)
        except torch.cuda.OutOfMemoryError:
            raise VipnbError(
                f"out of GPU memory at micro-batch {self.micro_batch} (global batch "
                f"{self.batch_size}, {self.recipe.model}, {self.recipe.input_size} px): raise "
                f"`accum_steps` (now {self.recipe.accum_steps}) to keep the global batch with "
                "less memory, or train on more GPUs"
            ) from None

    def _check_finite(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        if not self.dist.all_true(torch.isfinite(loss.detach())):
            raise VipnbError(
                f"{self.recipe.run_name}: non-finite loss ({loss.item()}) at epoch {epoch}, "
                f"step {step}; training stopped. The last good checkpoint is kept in "
                f"{self.run.checkpoint_file}. Lower `lr` or check the data."
            )

    def _wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """What the training step calls: the model, compiled and/or DDP-wrapped."""
        forward = torch.compile(model) if self.recipe.compile else model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            # DSK-net's three-branch blocks run one residual function per step (eq. 2).
            unused = any(isinstance(m, DualResidualBottleneck) for m in model.modules())
            forward = DistributedDataParallel(forward, device_ids=ids,
                                              find_unused_parameters=unused)
        return forward

    # -- evaluation ------------------------------------------------------------------------
    @torch.inference_mode()
    def predict(self, source: SplitSource) -> np.ndarray:
        model = self.ema.module if self.ema is not None else self.model
        model.eval()
        outputs = []
        order = torch.arange(len(source))
        for images, _ in source.batches(order, self.recipe.eval_batch_size):
            inputs = self.eval_transform(images.to(self.device)).contiguous(
                memory_format=self.memory_format)
            with self._autocast():
                if self.recipe.eval_views == "center":
                    outputs.append(model(inputs).float().cpu())
                else:
                    outputs.append(tta_predict(model, inputs, self.recipe.eval_views,
                                               self.recipe.input_size,
                                               mean=tuple(self.recipe.mean),
                                               std=tuple(self.recipe.std)).float().cpu())
        return torch.cat(outputs).numpy() if outputs else np.zeros((0, self.num_classes))

    def _evaluate(self, source: SplitSource) -> dict:
        logits = self.predict(source)
        labels = source.labels.numpy()
        known = labels >= 0
        if not known.any():
            return {"top1": math.nan, "loss": math.nan, "logits": logits}
        log_probs = torch.log_softmax(torch.from_numpy(logits[known]), 1)
        loss = -log_probs[torch.arange(int(known.sum())), torch.from_numpy(labels[known])].mean()
        return {"top1": top1(logits[known], labels[known]), "loss": float(loss), "logits": logits}

    def _finish(self, wall_time: float) -> RunDir:
        summary = {"run": self.recipe.run_name, "epochs": self.total_epochs,
                   "wall_time_s": wall_time, "device": str(self.device),
                   "skipped_images": {s.name: s.skipped for s in
                                      (self.data.train, self.data.val, self.data.test)}}
        for source in (self.data.val, self.data.test):
            reuse = self._last_val if source is self.data.val else None
            result = reuse or self._evaluate(source)
            self.run.write_logits(source.name, result["logits"], source.labels.numpy(),
                                  source.ids, source.classes)
            summary[f"{source.name}_top1"] = result["top1"]
        self.run.write_summary(summary)
        return self.run

    # -- state -----------------------------------------------------------------------------
    def _save(self, next_epoch: int, wall_time: float) -> None:
        save_atomic(self._state(next_epoch, wall_time), self.run.checkpoint_file)

    def _state(self, next_epoch: int, wall_time: float) -> dict:
        return {"next_epoch": next_epoch, "wall_time_s": wall_time,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "objective": self.objective.state_dict(),
                "recipe": self.recipe.to_dict()}

    def _restore(self) -> tuple[int, float]:
        if not self.run.checkpoint_file.exists():
            return 0, 0.0
        state = load_checkpoint(self.run.checkpoint_file)
        with restoring_from(self.run.checkpoint_file):
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.ema is not None and state.get("ema") is not None:
                self.ema.load_state_dict(state["ema"])
            self.objective.load_state_dict(state.get("objective") or {})
            log.info("resumed %s at epoch %d", self.run.path, state["next_epoch"])
            return int(state["next_epoch"]), float(state["wall_time_s"])

    def _autocast(self):
        if use_bf16(self.recipe.amp, self.device):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()


def _classifier_width(model: torch.nn.Module) -> int:
    """The width of the features the classifier sees (0 for a model without one)."""
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    return getattr(classifier, "in_features", 0)


def use_bf16(amp: str, device: torch.device) -> bool:
    """bf16 autocast where it pays: on CUDA, and on CPUs with native bf16 (AVX512-BF16,
    AMX). On an AVX2-only CPU, measured here, it is 6-40x slower than fp32."""
    if amp != "auto":
        return amp == "bf16"
    if device.type == "cuda":
        return True
    capability = torch.backends.cpu.get_cpu_capability()
    return device.type == "cpu" and ("AMX" in capability or "BF16" in capability)


def _train_batch_size(requested: int, available: int) -> int:
    """The batch size actually used: at most the data, and even (timm's Mixup pairs samples)."""
    size = min(requested, available)
    return max(2, size - size % 2)


def _micro_batch_size(recipe: Recipe, batch_size: int, world_size: int) -> int:
    """Images per forward pass: the global batch over processes and accumulation steps."""
    parts = world_size * recipe.accum_steps
    if batch_size % parts:
        raise VipnbError(
            f"{recipe.name}: batch_size {batch_size} does not split into {world_size} "
            f"process(es) × accum_steps {recipe.accum_steps}; choose a batch_size divisible "
            f"by {parts}"
        )
    micro = batch_size // parts
    if micro % 2 and (recipe.mixup_alpha > 0 or recipe.cutmix_alpha > 0):
        raise VipnbError(f"{recipe.name}: Mixup/CutMix need an even micro-batch, got {micro}")
    return micro


def _make_mixup(recipe: Recipe, num_classes: int) -> Mixup | None:
    if recipe.mixup_alpha <= 0 and recipe.cutmix_alpha <= 0:
        return None
    return Mixup(mixup_alpha=recipe.mixup_alpha, cutmix_alpha=recipe.cutmix_alpha,
                 prob=recipe.mixup_prob, switch_prob=recipe.mixup_switch_prob,
                 label_smoothing=recipe.label_smoothing, num_classes=num_classes)


def _seed_epoch(seed: int, epoch: int) -> torch.Generator:
    """Seed every random source from (seed, epoch), so resuming at an epoch boundary
    replays exactly what an uninterrupted run would have drawn."""
    epoch_seed = seed * 100_003 + epoch
    random.seed(epoch_seed)
    np.random.seed(epoch_seed % 2**32)
    torch.manual_seed(epoch_seed)
    return torch.Generator().manual_seed(epoch_seed)


def configure_determinism(recipe: Recipe) -> None:
    if recipe.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
