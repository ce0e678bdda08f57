"""The trainer of the MTL-MoE notebook: a sparsely gated mixture of experts shared by a
classification task and a box-regression task (or classification alone), on box data.

It keeps the conventions of `vipnb.engine.trainer` (run directory named by the recipe hash,
per-epoch metrics, atomic checkpoints, seeded per epoch, resumable) with a loop of its own:
the batches carry boxes, the model returns two heads and its gates, and the curves the paper
plots are test accuracy per epoch.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2

from vipnb.data.box_augment import BoxEvalTransform, BoxTrainTransform
from vipnb.data.box_data import BoxData, BoxSplit, load_box_data
from vipnb.engine.checkpoint import load_checkpoint, restoring_from, save_atomic
from vipnb.engine.recipe import Recipe
from vipnb.engine.rundir import RunDir
from vipnb.errors import VipnbError
from vipnb.eval.boxes import box_metrics
from vipnb.models.mtl_moe import MtlMoE, freeze_for_transfer, replace_classifier
from vipnb.progress import progress_bar


def build_mtl_moe(recipe: Recipe, num_classes: int) -> MtlMoE:
    tasks = ("classify", "box") if recipe.box_task else ("classify",)
    return MtlMoE(recipe.model, num_classes, num_experts=recipe.experts, k=recipe.gate_k,
                  tasks=tasks, dropout=recipe.drop_rate, backbone_kwargs=recipe.model_kwargs)


def train_mtl(recipe: Recipe, run: RunDir, starts_from: dict[str, RunDir],
              device: torch.device, progress: bool) -> RunDir:
    run.write_recipe(recipe)
    return MtlTrainer(recipe, run, load_box_data(recipe), device, progress,
                      starts_from.get("init_from")).fit()


class MtlTrainer:
    def __init__(self, recipe: Recipe, run: RunDir, data: BoxData, device: torch.device,
                 progress: bool, init_from: RunDir | None = None):
        self.recipe, self.run, self.data, self.device, self.progress = (
            recipe, run, data, device, progress)
        torch.manual_seed(recipe.seed)
        self.model = self._model(init_from).to(device)
        self.batch_size = min(recipe.batch_size, len(data.train))
        self.steps_per_epoch = len(data.train) // self.batch_size
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = create_optimizer_v2(trainable, opt=recipe.optimizer, lr=recipe.lr,
                                             weight_decay=recipe.weight_decay,
                                             momentum=recipe.momentum)
        self.scheduler, self.total_epochs = create_scheduler_v2(
            self.optimizer, sched=recipe.sched, num_epochs=recipe.epochs,
            warmup_epochs=recipe.warmup_epochs, warmup_lr=recipe.warmup_lr,
            min_lr=recipe.min_lr, step_on_epochs=False, updates_per_epoch=self.steps_per_epoch)
        self.train_transform = BoxTrainTransform(recipe.input_size, tuple(recipe.scale),
                                                 tuple(recipe.ratio), recipe.hflip,
                                                 tuple(recipe.mean), tuple(recipe.std))
        self.eval_transform = BoxEvalTransform(recipe.input_size, tuple(recipe.mean),
                                               tuple(recipe.std))

    def _model(self, init_from: RunDir | None) -> MtlMoE:
        """A fresh model, or (transfer) the base run's model with a new classifier for this
        recipe's classes, frozen as `freeze` says."""
        num_classes = len(self.data.classes)
        if init_from is None:
            if self.recipe.freeze:
                raise VipnbError(f"{self.recipe.name}: `freeze: {self.recipe.freeze}` fine-tunes "
                                 "a trained model; name its recipe in `init_from`")
            return build_mtl_moe(self.recipe, num_classes)
        base_recipe = init_from.recipe
        model = build_mtl_moe(base_recipe, len(init_from.logits("test").classes))
        model.load_state_dict(load_checkpoint(init_from.checkpoint_file)["model"])
        replace_classifier(model, num_classes)
        freeze_for_transfer(model, self.recipe.freeze or "none")
        return model

    def fit(self) -> RunDir:
        start_epoch, wall_time = self._restore()
        self.run.truncate_metrics(start_epoch)
        bar = progress_bar(range(start_epoch, self.total_epochs), desc=self.recipe.run_name,
                           total=self.total_epochs, initial=start_epoch,
                           disable=not self.progress, mininterval=2.0, ncols=110)
        test = None
        for epoch in bar:
            started = time.perf_counter()
            losses = self._train_one_epoch(epoch)
            test = self.evaluate(self.data.test)
            wall_time += time.perf_counter() - started
            self.run.append_metrics({"epoch": epoch, **losses,
                                     "lr": self.optimizer.param_groups[0]["lr"],
                                     **{f"test_{k}": v for k, v in test["metrics"].items()},
                                     "wall_time_s": wall_time})
            save_atomic(self._state(epoch + 1, wall_time), self.run.checkpoint_file)
            bar.set_postfix(loss=f"{losses['train_loss']:.3f}",
                            acc=f"{test['metrics']['top1']:.3f}")
        bar.close()
        return self._finish(wall_time, test or self.evaluate(self.data.test))

    def _train_one_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        generator = torch.Generator().manual_seed(self.recipe.seed * 100_003 + epoch)
        torch.manual_seed(self.recipe.seed * 100_003 + epoch)  # the gates' noise
        order = torch.randperm(len(self.data.train), generator=generator)
        order = order[: self.steps_per_epoch * self.batch_size]
        size = self.recipe.cache_size
        crops, flips = self.train_transform.sample(len(order), size, size, generator)
        totals: dict[str, float] = {}
        for step in range(self.steps_per_epoch):
            positions = torch.arange(step * self.batch_size, (step + 1) * self.batch_size)
            index = order[positions]
            images, boxes = self.train_transform.apply(
                self.data.train.images[index].to(self.device),
                self.data.train.boxes[index].to(self.device), crops[positions], flips[positions])
            output = self.model(images)
            loss, parts = self.model.loss(output, self.data.train.labels[index].to(self.device),
                                          boxes, box_weight=self.recipe.box_loss_weight,
                                          label_smoothing=self.recipe.label_smoothing)
            if not torch.isfinite(loss):
                raise VipnbError(f"{self.recipe.run_name}: non-finite loss at epoch {epoch}, "
                                 f"step {step}; lower `lr`")
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step_update(epoch * self.steps_per_epoch + step + 1)
            for key, value in {"train_loss": float(loss.detach()), **parts}.items():
                totals[key] = totals.get(key, 0.0) + value / self.steps_per_epoch
        self.scheduler.step(epoch + 1)
        return totals

    @torch.inference_mode()
    def evaluate(self, split: BoxSplit) -> dict:
        """Logits, predicted boxes, gates per task and the metrics on `split`."""
        self.model.eval()
        logits, boxes, gates = [], [], {}
        for start in range(0, len(split), self.recipe.eval_batch_size):
            images = split.images[start : start + self.recipe.eval_batch_size].to(self.device)
            output = self.model(self.eval_transform(images))
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

    def _finish(self, wall_time: float, test: dict) -> RunDir:
        """Writes the last epoch's test evaluation `test`, summary and saved gates."""
        split = self.data.test
        ids = [str(i) for i in range(len(split))]
        self.run.write_logits("test", test["logits"].numpy(), split.labels.numpy(), ids,
                              self.data.classes)
        np.savez_compressed(self.run.path / "boxes_gates_test.npz",
                            boxes=(np.zeros((0, 4)) if test["boxes"] is None
                                   else test["boxes"].numpy()),
                            target_boxes=split.boxes.numpy(),
                            **{f"gates_{task}": g.numpy() for task, g in test["gates"].items()})
        self.run.write_summary({"run": self.recipe.run_name, "epochs": self.total_epochs,
                                "wall_time_s": wall_time, "device": str(self.device),
                                **{f"test_{k}": v for k, v in test["metrics"].items()}})
        return self.run

    def _state(self, next_epoch: int, wall_time: float) -> dict:
        return {"next_epoch": next_epoch, "wall_time_s": wall_time,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "recipe": self.recipe.to_dict()}

    def _restore(self) -> tuple[int, float]:
        if not self.run.checkpoint_file.exists():
            return 0, 0.0
        state = load_checkpoint(self.run.checkpoint_file)
        with restoring_from(self.run.checkpoint_file):
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            return int(state["next_epoch"]), float(state["wall_time_s"])
