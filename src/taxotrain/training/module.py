"""The LightningModule: optimisation and per-rank validation metrics around any taxotrain model and loss."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import timm.optim
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from taxotrain import __version__
from taxotrain.config import Config, OptimConfig, config_to_dict
from taxotrain.losses import GradNorm, MultiRankLoss
from taxotrain.run import CKPT_KEY
from taxotrain.taxonomy import NULL, Taxonomy
from taxotrain.training.mixing import TaxonomyMixer
from taxotrain.training.progressive import Stage, expand_stages, stage_at


def rank_metrics(num_classes: int) -> MetricCollection:
    """top-1, top-5 (top-k capped at the class count) and macro-F1 for one rank; nulls ignored."""
    return MetricCollection({
        "top1": MulticlassAccuracy(num_classes, top_k=1, average="micro", ignore_index=NULL),
        "top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro", ignore_index=NULL),
        "macro_f1": MulticlassF1Score(num_classes, average="macro", ignore_index=NULL),
    })


def warmup_cosine(epoch: float, warmup: float, total: float, min_ratio: float, schedule: str) -> float:
    """LR multiplier at ``epoch`` (fractional: 2.5 = half-way through the third epoch): linear warmup over
    ``warmup`` epochs, then cosine down to ``min_ratio`` at ``total`` epochs (or constant).

    The schedule is a function of training progress in epochs, not of a step count, so it stays continuous when a
    progressive stage changes the batch size (and with it the number of steps per epoch)."""
    if warmup > 0 and epoch < warmup:
        return max(epoch / warmup, 1e-3)
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (epoch - warmup) / max(1e-9, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, opt_cfg: OptimConfig, per_epoch: int, monitor: str, mode: str,
                    cosine_factor: Callable[[], float]) -> dict[str, Any]:
    """The Lightning scheduler config of ``optim.schedule``.

    cosine/constant: linear warmup then cosine (or flat), per step, as a function of fractional epochs
    (``cosine_factor`` gives the current multiplier, progressive stages' ``lr_scale`` included). ``per_epoch`` is the
    number of optimizer steps per epoch (the cycle length unit of cyclic and sgdr). plateau: torch
    ``ReduceLROnPlateau`` on the monitored val metric, per epoch. cyclic: ``CyclicLR(mode="triangular2")`` between
    ``lr * min_lr_ratio`` and ``lr``, half cycle ``cycle_epochs``, per step. sgdr: ``CosineAnnealingWarmRestarts``
    with ``T_0 = cycle_epochs`` and ``T_mult = cycle_mult``, per step.
    """
    sched = torch.optim.lr_scheduler
    low = opt_cfg.lr * opt_cfg.min_lr_ratio
    if opt_cfg.schedule == "plateau":
        plateau = sched.ReduceLROnPlateau(optimizer, mode=mode, factor=opt_cfg.plateau_factor,
                                          patience=opt_cfg.plateau_patience, min_lr=low)
        return {"scheduler": plateau, "interval": "epoch", "monitor": monitor, "strict": True}
    if opt_cfg.schedule in ("cyclic", "sgdr"):
        cycle = max(1, round(opt_cfg.cycle_epochs * per_epoch))
        if opt_cfg.schedule == "cyclic":
            cyclic = sched.CyclicLR(optimizer, base_lr=low, max_lr=opt_cfg.lr, step_size_up=cycle,
                                    mode="triangular2", cycle_momentum=False)
            return {"scheduler": cyclic, "interval": "step"}
        sgdr = sched.CosineAnnealingWarmRestarts(optimizer, T_0=cycle, T_mult=opt_cfg.cycle_mult, eta_min=low)
        return {"scheduler": sgdr, "interval": "step"}
    return {"scheduler": sched.LambdaLR(optimizer, lambda _step: cosine_factor()), "interval": "step"}


class ClassifierModule(L.LightningModule):
    """Trains ``model`` with ``loss``; knows ranks only by name, never what they mean."""

    def __init__(self, model: nn.Module, loss: MultiRankLoss, config: Config, taxonomy: Taxonomy,
                 meta: dict[str, Any], stages: list[Stage] | None = None, monitor: str | None = None) -> None:
        super().__init__()
        self.stages = stages or expand_stages(config)
        self.epoch_progress = 0.0  # fractional epochs done, read by the cosine LR schedule
        self.monitor = monitor or f"val/{taxonomy.finest}/top1"
        self.model = model
        self.loss = loss
        self.config = config
        self.taxonomy = taxonomy
        self.meta = meta
        self.val_metrics = nn.ModuleDict({
            str(r): rank_metrics(n) for r, n in enumerate(taxonomy.num_classes)})
        self._train_loss_sum = 0.0
        self._train_batches = 0
        self.mixer = TaxonomyMixer(config.mix, taxonomy.ranks)
        self.gradnorm = (GradNorm(len(taxonomy.ranks), config.loss.gradnorm_alpha, config.loss.gradnorm_lr)
                         if config.loss.weighting == "gradnorm" else None)
        self.channels_last = config.trainer.channels_last and config.task == "image"
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(x)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x, y = batch
        return (x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x), y

    # ------------------------------------------------------------------ steps

    def _shared_parameter(self) -> torch.Tensor:
        """The last weight matrix/kernel of the backbone: where GradNorm measures each rank's gradient."""
        return [p for p in self.model.backbone.parameters() if p.ndim > 1][-1]

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        x, partner, lam = self.mixer(x, y)
        per_rank = self.loss.rank_losses(self.model(x), y, partner, lam)
        weights = self.gradnorm.step(per_rank, self._shared_parameter()) if self.gradnorm is not None else None
        parts = self.loss.combine(per_rank, weights)
        if weights is not None:
            parts.update({f"{rank}/weight": w for rank, w in zip(self.taxonomy.ranks, weights, strict=True)})
        self.log_dict({f"train/{k}": v for k, v in parts.items()}, on_step=True, on_epoch=False,
                      batch_size=len(x))
        self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        self._train_loss_sum += float(parts["loss"].detach())
        self._train_batches += 1
        return parts["loss"]

    def on_train_epoch_start(self) -> None:
        self._train_loss_sum, self._train_batches = 0.0, 0

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # the scheduler steps after this batch's optimizer step and sets the LR of the next batch
        self.epoch_progress = self.current_epoch + (batch_idx + 1) / max(1, self.trainer.num_training_batches)

    def lr_factor(self, epoch: float) -> float:
        """LR multiplier at fractional ``epoch``: warmup + cosine over all epochs, times the stage's ``lr_scale``."""
        opt_cfg: OptimConfig = self.config.optim
        base = warmup_cosine(epoch, opt_cfg.warmup_epochs, float(self.trainer.max_epochs or 1),
                             opt_cfg.min_lr_ratio, opt_cfg.schedule)
        return base * stage_at(self.stages, epoch).lr_scale

    @property
    def train_loss_mean(self) -> float:
        """Mean training loss over the current epoch's batches so far."""
        return self._train_loss_sum / max(1, self._train_batches)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.model(x)
        parts = self.loss(logits, y)
        self.log("val/loss", parts["loss"], on_epoch=True, batch_size=len(x), sync_dist=True)
        for r, rank in enumerate(self.taxonomy.ranks):
            known = y[:, r] != NULL
            if known.any():
                self.val_metrics[str(r)].update(logits[rank][known].float(), y[known, r])

    def on_validation_epoch_end(self) -> None:
        for r, rank in enumerate(self.taxonomy.ranks):
            values = self.val_metrics[str(r)].compute()
            self.log_dict({f"val/{rank}/{k}": v for k, v in values.items()}, sync_dist=True)
            self.val_metrics[str(r)].reset()

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self) -> dict[str, Any]:
        opt_cfg: OptimConfig = self.config.optim
        kwargs: dict[str, Any] = {"momentum": opt_cfg.momentum} if opt_cfg.name == "sgd" else {}
        optimizer = timm.optim.create_optimizer_v2(self.model, opt=opt_cfg.name, lr=opt_cfg.lr,
                                                   weight_decay=opt_cfg.weight_decay, **kwargs)
        per_epoch = max(1, int(self.trainer.estimated_stepping_batches) // max(1, self.trainer.max_epochs or 1))
        return {"optimizer": optimizer, "lr_scheduler": build_scheduler(
            optimizer, opt_cfg, per_epoch, self.monitor, self.config.trainer.monitor_mode,
            lambda: self.lr_factor(self.epoch_progress))}

    # ------------------------------------------------------------------ checkpoint metadata

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store what inference needs, as plain types (checkpoints load with ``weights_only=True``)."""
        checkpoint[CKPT_KEY] = {"version": __version__, "config": config_to_dict(self.config),
                                "taxonomy": self.taxonomy.to_dict(), **self.meta}
