"""Signal transforms: standardisation and online augmentation (time-warp, jitter, scaling).

Capfinder augments offline: it writes each training series three times (as is, squished and stretched) before
training. Here every epoch draws a fresh warp factor per series instead, so the model sees a different version
each time and the store stays one copy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from taxotrain.config import SignalAugmentConfig


class TimeWarp(nn.Module):
    """Squish or stretch a series ``[C, L]`` along time by a random factor in ``[1 - max_warp, 1 + max_warp]``
    (linear interpolation), then crop or zero-pad at the end back to ``L``: the pattern changes speed, not place."""

    def __init__(self, max_warp: float = 0.2, p: float = 0.5) -> None:
        super().__init__()
        self.max_warp, self.p = max_warp, p

    def forward(self, x: torch.Tensor, factor: float | None = None) -> torch.Tensor:
        if factor is None:
            if self.max_warp <= 0 or torch.rand(()) >= self.p:
                return x
            factor = 1.0 + float(torch.empty(()).uniform_(-self.max_warp, self.max_warp))
        length = x.shape[-1]
        new = max(2, round(length * factor))
        warped = F.interpolate(x[None], size=new, mode="linear", align_corners=True)[0]
        return warped[..., :length] if new >= length else F.pad(warped, (0, length - new))


class Jitter(nn.Module):
    """Add Gaussian noise of standard deviation ``sigma``."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.randn_like(x) * self.sigma


class Scaling(nn.Module):
    """Multiply each channel by a random factor drawn from N(1, sigma)."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (1 + torch.randn(x.shape[0], 1) * self.sigma)


class Standardise(nn.Module):
    """``(x - mean) / std`` per channel, with the train split's statistics."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(-1, 1).clamp_min(1e-8),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def build_signal_transforms(mean: Sequence[float] | None, std: Sequence[float] | None, train: bool,
                            augment: SignalAugmentConfig | None = None) -> nn.Sequential:
    """Transforms of a float series ``[C, L]``: standardise (when ``mean``/``std`` are given), then the switched-on
    augmentations for training. Z-normalised stores pass ``None``: each series is already mean 0, std 1."""
    steps: list[nn.Module] = [Standardise(mean, std)] if mean is not None and std is not None else []
    if train and augment is not None:
        if augment.time_warp > 0 and augment.time_warp_prob > 0:
            steps.append(TimeWarp(augment.time_warp, augment.time_warp_prob))
        if augment.scaling > 0:
            steps.append(Scaling(augment.scaling))
        if augment.jitter > 0:
            steps.append(Jitter(augment.jitter))
    return nn.Sequential(*steps)


def series_tensor(values: np.ndarray) -> torch.Tensor:
    """A series from the store (a read-only ``[C, L]`` view) as a float32 tensor of its own (the dataset's ``read``)."""
    return torch.from_numpy(np.array(values, dtype=np.float32))
