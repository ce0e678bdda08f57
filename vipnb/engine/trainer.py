"""The one training loop: a recipe, its data and its task in, one finished run directory out.

Every kind of training (classification with its MoE, distillation, fusion and VIPF losses;
MTL-MoE with boxes; MoCo pretraining) runs through `Trainer.fit` and `_train_one_epoch`
below; its task (`vipnb.engine.tasks`) supplies the data, model, batch, loss and evaluation.
So the run is reproducible (seeded per epoch: a resumed run equals an uninterrupted one),
and DDP, bf16 autocast, gradient accumulation and EMA hold for all of them alike. timm does
what it does well (optimizers, schedulers, EMA).
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from typing import Any, NamedTuple

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3

from vipnb.engine.checkpoint import load_checkpoint, restoring_from, save_atomic
from vipnb.engine.determinism import seed_epoch
from vipnb.engine.distributed import DistInfo
from vipnb.engine.precision import autocast
from vipnb.engine.recipe import Recipe
from vipnb.engine.rundir import RunDir
from vipnb.engine.tasks import Task, task_class
from vipnb.errors import VipnbError
from vipnb.progress import progress_bar

log = logging.getLogger(__name__)


class EpochResult(NamedTuple):
    train_loss: float
    images_per_s: float  # of all processes together
    parts: dict[str, float]  # the task's named parts of the loss, averaged


class Trainer:
    """`data`: what the recipe's task loads (`task_class(recipe).load_data(recipe)`)."""

    def __init__(self, recipe: Recipe, run: RunDir, data: Any, device: torch.device,
                 progress: bool, dist_info: DistInfo | None = None,
                 starts_from: dict[str, RunDir] | None = None):
        self.recipe, self.run, self.device = recipe, run, device
        self.dist = dist_info or DistInfo()
        self.progress = progress and self.dist.is_main
        starts_from = starts_from or {}
        torch.manual_seed(recipe.seed)
        self.task: Task = task_class(recipe)(recipe, data, device, self.dist)
        self.memory_format = self.task.memory_format
        self.model = self.task.build_model(starts_from).to(device)
        self.model = self.model.to(memory_format=self.memory_format)
        if recipe.sync_bn and self.dist.enabled:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.batch_size = self.task.train_batch_size(recipe.batch_size)
        if recipe.batch_size > self.task.train_size and self.dist.is_main:  # smoke data does
            log.warning("recipe %s (profile %s): batch_size %d is more than the %d training "
                        "images, so it trains with batches of %d, not the recipe's; is the "
                        "whole dataset there?", recipe.name, recipe.profile, recipe.batch_size,
                        self.task.train_size, self.batch_size)
        self.micro_batch = _micro_batch_size(recipe, self.batch_size, self.dist.world_size)
        self.steps_per_epoch = self.task.train_size // self.batch_size
        self.optimizer = create_optimizer_v2(self.task.parameters(self.model), opt=recipe.optimizer,
                                             lr=recipe.lr, weight_decay=recipe.weight_decay,
                                             momentum=recipe.momentum)
        # timm adds the cool-down after num_epochs; a recipe's epochs include it
        self.scheduler, self.total_epochs = create_scheduler_v2(
            self.optimizer, sched=recipe.sched, num_epochs=recipe.epochs - recipe.cooldown_epochs,
            decay_epochs=recipe.decay_epochs, decay_rate=recipe.decay_rate,
            warmup_epochs=recipe.warmup_epochs, warmup_lr=recipe.warmup_lr,
            min_lr=recipe.min_lr, cooldown_epochs=recipe.cooldown_epochs,
            step_on_epochs=False, updates_per_epoch=self.steps_per_epoch,
        )
        self.ema = ModelEmaV3(self.model, decay=recipe.ema_decay) if recipe.ema_decay else None
        self.task.attach(self.model, starts_from)
        self.forward = self._wrap(self.model)

    @property
    def eval_model(self) -> torch.nn.Module:
        """What evaluation and the finished run use: the EMA of the weights when kept."""
        return self.ema.module if self.ema is not None else self.model

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
            result = self._train_one_epoch(epoch)
            if self.dist.is_main:  # evaluation, metrics and checkpoints: one process
                scores = (self.task.evaluate(self.eval_model)
                          if self.recipe.validates_after(epoch + 1)
                          else self.task.not_evaluated())
                wall_time += time.perf_counter() - started
                record = {"epoch": epoch, "train_loss": result.train_loss, **result.parts,
                          "lr": self.optimizer.param_groups[0]["lr"], **scores,
                          "images_per_s": result.images_per_s,
                          "epoch_time_s": time.perf_counter() - started,
                          "wall_time_s": wall_time}
                self.run.append_metrics(record)
                self._save(epoch + 1, wall_time)
                headline = scores.get(self.task.headline)
                bar.set_postfix(loss=f"{result.train_loss:.3f}", ips=f"{result.images_per_s:.0f}",
                                **({self.task.headline: f"{headline:.3f}"}
                                   if headline is not None else {}))
            self.dist.barrier()
        bar.close()
        if self.dist.is_main:
            self._finish(wall_time)
        self.dist.barrier()
        return self.run

    def _train_one_epoch(self, epoch: int) -> EpochResult:
        """One epoch of every task: the same order, shares, accumulation, DDP and EMA."""
        self.model.train()
        generator = seed_epoch(self.recipe.seed, epoch)
        order = torch.randperm(self.task.train_size, generator=generator)
        order = order[: self.steps_per_epoch * self.batch_size]
        # Every process draws the augmentation of the whole epoch and keeps its share, so
        # the images seen do not depend on how many processes share the work.
        draws = self.task.start_epoch(epoch, len(order), generator)
        mine = self._my_positions()
        accum = self.recipe.accum_steps
        micro_steps = max(1, self.steps_per_epoch * accum)
        total_loss = torch.zeros((), device=self.device)
        parts: dict[str, float] = {}
        started = time.perf_counter()
        for index, batch in enumerate(self.task.batches(order[mine], self.micro_batch)):
            step, micro_step = divmod(index, accum)
            positions = mine[index * self.micro_batch : (index + 1) * self.micro_batch]
            inputs, targets = self.task.inputs_targets(batch, positions, draws, generator)
            last_micro_step = micro_step == accum - 1
            # DDP all-reduces gradients on the last accumulation step only.
            no_sync = self.forward.no_sync if self.dist.enabled and not last_micro_step else None
            with no_sync() if no_sync else nullcontext():
                loss, loss_parts = self._forward_loss(inputs, targets)
                self._check_finite(loss, epoch, step)
                (loss / accum).backward()
            total_loss += loss.detach()
            for key, value in loss_parts.items():
                parts[key] = parts.get(key, 0.0) + value / micro_steps
            if last_micro_step:
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step_update(epoch * self.steps_per_epoch + step + 1)
                if self.ema is not None:
                    self.ema.update(self.model)
        self.scheduler.step(epoch + 1)
        elapsed = time.perf_counter() - started
        mean_loss = self.dist.mean(total_loss / micro_steps)
        parts = {key: float(self.dist.mean(torch.tensor(value, dtype=torch.float64,
                                                        device=self.device)))
                 for key, value in parts.items()}  # on the device: NCCL reduces no CPU tensor
        return EpochResult(float(mean_loss), len(order) / max(elapsed, 1e-9), parts)

    def _my_positions(self) -> torch.Tensor:
        """Positions in the epoch's order that this process trains on: its contiguous share
        of every global batch."""
        share = self.batch_size // self.dist.world_size
        starts = torch.arange(self.steps_per_epoch) * self.batch_size + self.dist.rank * share
        return (starts[:, None] + torch.arange(share)[None, :]).reshape(-1)

    def _forward_loss(self, inputs, targets) -> tuple[torch.Tensor, dict[str, float]]:
        try:
            with autocast(self.recipe, self.device):
                return self.task.loss(self.forward, inputs, targets)
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
            forward = DistributedDataParallel(
                forward, device_ids=ids,
                find_unused_parameters=self.task.unused_parameters(model))
        return forward

    def _finish(self, wall_time: float) -> RunDir:
        summary = {"run": self.recipe.run_name, "epochs": self.total_epochs,
                   "wall_time_s": wall_time, "device": str(self.device)}
        summary.update(self.task.finish(self.eval_model, self.run))
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
                **self.task.state_dict(self.eval_model),
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
            self.task.load_state_dict(state)
            log.info("resumed %s at epoch %d", self.run.path, state["next_epoch"])
            return int(state["next_epoch"]), float(state["wall_time_s"])


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
