"""A task's extra optimizer groups (the embedding task's class centres): moved out of the default groups, kept at
their LR multiplier by every schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from taxotrain.config import OptimConfig
from taxotrain.training.module import own_group
from taxotrain.training.schedules import build_scheduler


def _optimizer() -> tuple[torch.optim.Optimizer, nn.Parameter]:
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    centres = net[2].weight
    optimizer = torch.optim.AdamW([{"params": [net[0].weight, net[2].weight], "weight_decay": 0.05},
                                   {"params": [net[0].bias, net[1].weight, net[1].bias, net[2].bias],
                                    "weight_decay": 0.0}], lr=1e-3)
    own_group(optimizer, [centres], 1e-2, 0.05)
    return optimizer, centres


def test_own_group_moves_the_parameters_into_a_last_group_at_their_lr() -> None:
    optimizer, centres = _optimizer()
    groups = optimizer.param_groups
    assert [len(g["params"]) for g in groups] == [1, 4, 1] and groups[-1]["params"][0] is centres
    assert groups[-1]["lr"] == 1e-2 and groups[0]["lr"] == 1e-3
    assert sum(p is centres for g in groups for p in g["params"]) == 1


# sgdr's floor (torch's eta_min) is one number for every group: lr * min_lr_ratio, exact ratios only with floor 0
@pytest.mark.parametrize("schedule, floor", [("cosine", 0.1), ("cyclic", 0.1), ("sgdr", 0.0), ("constant", 0.1)])
def test_every_schedule_keeps_the_ratio_of_the_groups(schedule: str, floor: float) -> None:
    optimizer, _ = _optimizer()
    cfg = OptimConfig(lr=1e-3, schedule=schedule, warmup_epochs=0.0, min_lr_ratio=floor, cycle_epochs=1.0)
    sched = build_scheduler(optimizer, cfg, 4, "val/loss", "min", lambda: 0.5)["scheduler"]
    for _ in range(3):
        optimizer.step()
        sched.step()
        lrs = [g["lr"] for g in optimizer.param_groups]
        assert math.isclose(lrs[-1], 10 * lrs[0], rel_tol=1e-6), (schedule, lrs)
