"""Softmax temperature: one number per rank that makes a model's confidence match how often it is right.

``fit_temperature`` minimises the log loss of held-out scores (ridge heads: their leave-one-out scores; networks:
the val split's logits, ``taxotrain calibrate``). Networks keep theirs in :class:`TaxonomicClassifier`'s
``temperature`` buffer, which divides the logits of every rank; it is 1 while training.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def fit_temperature(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The softmax temperature that minimises the log loss of ``scores`` [N, K] for labels ``y`` (column indices),
    and that loss. The targets are smoothed by 1/N: when every score is right (often, on a few dozen held-out series)
    the plain log loss falls without end as T -> 0, and N records cannot show an error rate below ~1/N."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    n, k = scores.shape
    eps = 1.0 / max(n, 2)
    target = np.full((n, k), eps / k)
    target[np.arange(n), y] += 1.0 - eps

    def loss(log_t: float) -> float:
        return float(-(target * log_softmax(scores / np.exp(log_t), axis=1)).sum(1).mean())

    best = minimize_scalar(loss, bounds=(-7.0, 5.0), method="bounded")
    temperature = float(np.exp(best.x))
    nll = float(-log_softmax(scores / temperature, axis=1)[np.arange(n), y].mean())
    return temperature, nll


def reset_temperatures(model: nn.Module) -> None:
    """Set every rank's temperature in ``model`` (and in its members) back to 1: training sees raw logits."""
    for module in model.modules():
        temperature = getattr(module, "temperature", None)
        if isinstance(temperature, torch.Tensor):
            temperature.fill_(1.0)
