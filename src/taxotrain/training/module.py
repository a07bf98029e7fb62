"""The LightningModule: optimisation, logging and checkpoint metadata around any task's model and objective.

It knows nothing of ranks, images or series: the task's ``training_step`` returns the loss and its named parts, its
``metrics()`` the validation metrics by name, and its spec is what the checkpoint records for inference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import timm.optim
import torch
from torch import nn

from taxotrain import __version__
from taxotrain.config import OptimConfig, config_to_dict
from taxotrain.run import CKPT_KEY
from taxotrain.stages import Stage, expand_stages, stage_at
from taxotrain.tasks import Task
from taxotrain.training.schedules import build_scheduler, warmup_cosine


def to_channels_last(model: nn.Module) -> None:
    """Put the 4-D (image convolution) weights and buffers of ``model`` in channels_last memory format, in place.
    ``Module.to(memory_format=...)`` would also try 5-D tensors (e.g. Hydra's kernels) and fail."""
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            if tensor.ndim == 4:
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)


def own_group(optimizer: torch.optim.Optimizer, params: list[nn.Parameter], lr: float, weight_decay: float) -> None:
    """Move ``params`` out of the optimizer's groups into a group of their own at ``lr`` (before any step: the
    optimizer has no state yet). Groups left empty are dropped; the new group is last, so group 0 (the LR that
    ``metrics.csv`` logs) stays the base one."""
    moved = {id(p) for p in params}
    for group in optimizer.param_groups:
        group["params"] = [p for p in group["params"] if id(p) not in moved]
    optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
    optimizer.add_param_group({"params": list(params), "lr": lr, "weight_decay": weight_decay})


class TaskModule(L.LightningModule):
    """Trains ``model`` on ``task``. ``store`` facts (path, fingerprint) go into every checkpoint with the task's
    config, taxonomy and preprocessing spec, so evaluate and predict need nothing else."""

    trainer_overrides: ClassVar[dict[str, Any]] = {}  # Trainer arguments a kind of module needs (see closed_form.py)

    def __init__(self, task: Task, model: nn.Module, stages: list[Stage] | None = None, monitor: str | None = None,
                 store: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.task = task
        self.config = task.config
        self.stages = stages or expand_stages(self.config)
        self.epoch_progress = 0.0  # fractional epochs done, read by the cosine LR schedule
        self.monitor = monitor or task.default_monitor()
        self.store_info = store or {}
        self.model = model
        for name, part in task.modules().items():  # loss buffers, GradNorm weights: moved and checkpointed with us
            self.add_module(name, part)
        self.val_metrics = task.metrics()
        self._train_loss_sum = 0.0
        self._train_batches = 0
        self._synced_loss_mean: float | None = None
        self.channels_last = self.config.trainer.channels_last
        if self.channels_last:
            to_channels_last(self.model)

    def forward(self, input: torch.Tensor) -> dict[str, torch.Tensor]:  # noqa: A002
        return self.model(input=input)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x = batch["input"]
        if self.channels_last and x.ndim == 4:
            batch["input"] = x.contiguous(memory_format=torch.channels_last)
        return batch

    # ------------------------------------------------------------------ steps

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.task.training_step(self.model, batch)
        self.log_dict({f"train/{k}": v for k, v in out.parts.items()}, on_step=True, on_epoch=False,
                      batch_size=out.batch_size)
        self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        self._train_loss_sum += float(out.loss.detach())
        self._train_batches += 1
        return out.loss

    def on_fit_start(self) -> None:
        self.task.reset_temperatures(self.model)  # a calibrated run resumed: training sees raw logits

    def on_train_epoch_start(self) -> None:
        self._train_loss_sum, self._train_batches = 0.0, 0
        self._synced_loss_mean = None

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # the scheduler steps after this batch's optimizer step and sets the LR of the next batch
        self.epoch_progress = self.current_epoch + (batch_idx + 1) / max(1, self.trainer.num_training_batches)
        # the fraction of the training done before this batch: the metadata masking schedule follows it
        done = self.current_epoch + batch_idx / max(1, self.trainer.num_training_batches)
        self.task.set_progress(done / max(1, self.trainer.max_epochs or 1), self.global_step)

    def lr_factor(self, epoch: float) -> float:
        """LR multiplier at fractional ``epoch``: warmup + cosine over all epochs, times the stage's ``lr_scale``."""
        opt_cfg: OptimConfig = self.config.optim
        base = warmup_cosine(epoch, opt_cfg.warmup_epochs, float(self.trainer.max_epochs or 1),
                             opt_cfg.min_lr_ratio, opt_cfg.schedule)
        return base * stage_at(self.stages, epoch).lr_scale

    @property
    def train_loss_mean(self) -> float:
        """Mean training loss over the current epoch's batches so far; under DDP, once the epoch's validation has
        started, the mean over every process's batches."""
        if self._synced_loss_mean is not None:
            return self._synced_loss_mean
        return self._train_loss_sum / max(1, self._train_batches)

    def on_validation_epoch_start(self) -> None:
        if self.trainer.world_size > 1 and self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            # every process runs this hook, so metrics.csv (written by process 0) gets the mean over all shards
            both = torch.tensor([self._train_loss_sum, float(self._train_batches)], device=self.device)
            both = self.trainer.strategy.reduce(both, reduce_op="sum")
            self._synced_loss_mean = float(both[0]) / max(1.0, float(both[1]))

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self.task.validation_step(self.model, batch)
        self.log("val/loss", out.loss, on_epoch=True, batch_size=out.batch_size, sync_dist=True)
        self.val_metrics.update(out.outputs, batch)

    def on_validation_epoch_end(self) -> None:
        self.log_dict({f"val/{k}": v for k, v in self.val_metrics.compute().items()}, sync_dist=True)
        self.val_metrics.reset()

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self) -> dict[str, Any]:
        opt_cfg: OptimConfig = self.config.optim
        kwargs: dict[str, Any] = {"momentum": opt_cfg.momentum} if opt_cfg.name == "sgd" else {}
        optimizer = timm.optim.create_optimizer_v2(self.model, opt=opt_cfg.name, lr=opt_cfg.lr,
                                                   weight_decay=opt_cfg.weight_decay, **kwargs)
        for params, scale in self.task.param_groups(self.model):  # e.g. class centres at a higher LR
            own_group(optimizer, params, opt_cfg.lr * scale, opt_cfg.weight_decay)
        per_epoch = max(1, int(self.trainer.estimated_stepping_batches) // max(1, self.trainer.max_epochs or 1))
        return {"optimizer": optimizer, "lr_scheduler": build_scheduler(
            optimizer, opt_cfg, per_epoch, self.monitor, self.config.trainer.monitor_mode,
            lambda: self.lr_factor(self.epoch_progress))}

    # ------------------------------------------------------------------ checkpoint metadata

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # a calibrated checkpoint resumed: training (and an EMA copy restored from this state) sees raw logits
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.endswith("temperature")]:
            state[key] = torch.ones_like(state[key])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store what inference needs, as plain types (checkpoints load with ``weights_only=True``)."""
        checkpoint[CKPT_KEY] = {"version": __version__, "task": self.task.name,
                                "config": config_to_dict(self.config), "taxonomy": self.task.taxonomy.to_dict(),
                                "spec": self.task.spec.to_dict(), **self.store_info}


def save_checkpoint(task: Task, model: nn.Module, path: str | Path, store: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as a checkpoint of ``task`` the way ``fit`` writes them (state dict and taxotrain metadata),
    without training: e.g. an ensemble, or a model to export or benchmark. ``extra`` joins the metadata."""
    module = TaskModule(task, model, store=store)
    checkpoint: dict[str, Any] = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    checkpoint[CKPT_KEY].update(extra or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path
