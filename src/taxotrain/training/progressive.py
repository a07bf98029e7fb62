"""Progressive learning on the Lightning side: regularisation set per stage at each epoch start, and the GPU
batch-size probe of ``batch_size: auto``.

The stages themselves are resolved from the config in :mod:`taxotrain.stages`. The DataModule builds the train
loader of the current stage, :class:`StageRegularization` sets mixup, dropout and drop-path at each epoch start, and
the LR schedule multiplies by the stage's ``lr_scale``. Nothing is rebuilt between stages, so the optimizer state
and the LR schedule carry on.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import nn

from taxotrain.stages import Stage, max_drop_path, stage_at


def probe_batch_size(try_batch: Callable[[int], None], start: int, cap: int) -> int:
    """Largest batch size, doubling from ``start`` up to ``cap``, for which ``try_batch(n)`` runs without running
    out of memory (a CUDA OOM is caught; anything else propagates). ``start`` itself must fit."""
    best, n = None, max(1, start)
    while n <= cap:
        try:
            try_batch(n)
        except torch.OutOfMemoryError:
            break
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        best, n = n, n * 2
    if best is None:
        raise RuntimeError(f"batch size {start} does not fit in GPU memory at this image size; lower "
                           "data.batch_size or the stage's image_size")
    return best


class StageRegularization(L.Callback):
    """At each epoch start, sets the stage's mixup alpha (on the task), head dropout and drop-path (on the model)."""

    def __init__(self, stages: list[Stage]) -> None:
        self.stages = stages
        self._built_drop_path: dict[str, float] = {}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # remember each DropPath's built rate: timm grows it with depth, and stages scale that profile
        self._built_drop_path = {name: float(m.drop_prob) for name, m in pl_module.named_modules()
                                 if type(m).__name__ == "DropPath"}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stage = stage_at(self.stages, trainer.current_epoch)
        task = getattr(pl_module, "task", None)
        if task is not None:
            task.set_stage(stage)
        head = getattr(getattr(pl_module, "model", None), "head", None)
        if isinstance(head, nn.Module):
            for m in head.modules():
                if isinstance(m, nn.Dropout):
                    m.p = stage.drop_rate
        built = max_drop_path(self.stages)
        for name, m in pl_module.named_modules():
            if name in self._built_drop_path and built > 0:
                m.drop_prob = self._built_drop_path[name] * stage.drop_path_rate / built
