"""Learning-rate schedules: warmup + cosine as a function of fractional epochs, and the Lightning scheduler config
of every ``optim.schedule``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from taxotrain.config import OptimConfig


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
    ``lr * min_lr_ratio`` and ``lr`` (each parameter group's own ``lr``), half cycle ``cycle_epochs``, per step.
    sgdr: ``CosineAnnealingWarmRestarts`` with ``T_0 = cycle_epochs`` and ``T_mult = cycle_mult``, per step.
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
            peaks = [g["lr"] for g in optimizer.param_groups]  # each group's own (e.g. class centres' x10)
            cyclic = sched.CyclicLR(optimizer, base_lr=[p * opt_cfg.min_lr_ratio for p in peaks], max_lr=peaks,
                                    step_size_up=cycle, mode="triangular2", cycle_momentum=False)
            return {"scheduler": cyclic, "interval": "step"}
        sgdr = sched.CosineAnnealingWarmRestarts(optimizer, T_0=cycle, T_mult=opt_cfg.cycle_mult, eta_min=low)
        return {"scheduler": sgdr, "interval": "step"}
    return {"scheduler": sched.LambdaLR(optimizer, lambda _step: cosine_factor()), "interval": "step"}
