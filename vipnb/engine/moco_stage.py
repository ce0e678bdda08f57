"""MoCo-v2 pretraining as a recipe stage (`stage: moco`): the MoE paper's self-supervised
initialisation (§3.1), trained on the training images without their labels.

A `Trainer` with another model (`vipnb.ssl.MoCo` around the recipe's backbone), another step
(two augmented views, InfoNCE) and another evaluation: kNN top-1 of the backbone's features
on val, a label-free check that the features learn something. The checkpoint keeps the
query backbone's weights under `backbone`, which `init_from` loads.
"""

from __future__ import annotations

import time

import timm
import torch
import torch.nn.functional as F

from vipnb.data.sources import SplitSource
from vipnb.engine.rundir import RunDir
from vipnb.engine.trainer import Trainer, _seed_epoch
from vipnb.ssl import MoCo, TwoCropTransform, knn_top1


class MocoTrainer(Trainer):
    def _build_model(self, starts_from: dict[str, RunDir]) -> torch.nn.Module:
        recipe = self.recipe
        backbone = timm.create_model(recipe.model, pretrained=False, num_classes=0,
                                     drop_path_rate=recipe.drop_path_rate, **recipe.model_kwargs)
        self.two_crops = TwoCropTransform(recipe.input_size, mean=tuple(recipe.mean),
                                          std=tuple(recipe.std))
        return MoCo(backbone, backbone.num_features, recipe.moco_dim, recipe.moco_queue,
                    recipe.moco_momentum, recipe.moco_temperature)

    def _train_one_epoch(self, epoch: int) -> tuple[float, float]:
        self.model.train()
        generator = _seed_epoch(self.recipe.seed, epoch)
        order = torch.randperm(len(self.data.train), generator=generator)
        order = order[: self.steps_per_epoch * self.batch_size]
        total_loss = torch.zeros((), device=self.device)
        started = time.perf_counter()
        for step, (images, _) in enumerate(self.data.train.batches(order, self.batch_size)):
            view_q, view_k = self.two_crops(images.to(self.device), generator)
            with self._autocast():
                loss = self.model(view_q.contiguous(memory_format=self.memory_format),
                                  view_k.contiguous(memory_format=self.memory_format))
            self._check_finite(loss, epoch, step)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step_update(epoch * self.steps_per_epoch + step + 1)
            total_loss += loss.detach()
        self.scheduler.step(epoch + 1)
        elapsed = time.perf_counter() - started
        return float(total_loss / max(1, self.steps_per_epoch)), len(order) / max(elapsed, 1e-9)

    @torch.inference_mode()
    def _features(self, source: SplitSource) -> torch.Tensor:
        backbone = self.model.encoder_q.backbone
        backbone.eval()
        batches = source.batches(torch.arange(len(source)), self.recipe.eval_batch_size)
        return torch.cat([F.normalize(backbone(self.eval_transform(images.to(self.device))).float(),
                                      dim=1) for images, _ in batches])

    def _evaluate(self, source: SplitSource) -> dict:
        accuracy = knn_top1(self._features(self.data.train), self.data.train.labels,
                            self._features(source), source.labels)
        return {"top1": accuracy, "loss": float("nan")}

    def _finish(self, wall_time: float) -> RunDir:
        summary = {"run": self.recipe.run_name, "epochs": self.total_epochs,
                   "wall_time_s": wall_time, "device": str(self.device),
                   "val_knn_top1": self._evaluate(self.data.val)["top1"],
                   "test_knn_top1": self._evaluate(self.data.test)["top1"]}
        self.run.write_summary(summary)
        return self.run

    def _state(self, next_epoch: int, wall_time: float) -> dict:
        return {**super()._state(next_epoch, wall_time),
                "backbone": self.model.backbone_state_dict()}
