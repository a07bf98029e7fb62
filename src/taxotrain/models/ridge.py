"""Ridge classifiers per rank, fitted in closed form on fixed features: the heads of the ROCKET family.

Per rank, scikit-learn's ``RidgeClassifierCV`` picks the penalty among ``ALPHAS`` (aeon's and the ROCKET papers'
grid) by efficient leave-one-out error on the train records with a known label. Ridge scores are not probabilities,
so a temperature per rank is fitted on the same leave-one-out scores (each record scored by a ridge that never saw
it: train records only, no val or test; targets smoothed by 1/N so that a perfect leave-one-out score does not make
every prediction certain); ``softmax(score / T)`` is then what decoding, roll-up and ensembles use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from taxotrain.models.temperature import fit_temperature
from taxotrain.taxonomy import Taxonomy

ALPHAS = np.logspace(-3, 3, 10)
ABSENT = -1e4  # logit of a class with no train record: never predicted


@dataclass
class RidgeRank:
    """A fitted rank: logits = ``features @ weight.T + bias`` (temperature folded in), and how it was chosen."""

    weight: np.ndarray  # [classes, features]
    bias: np.ndarray  # [classes]
    alpha: float
    temperature: float
    loo_top1: float  # leave-one-out top-1 on the train records with a label
    loo_loss: float  # leave-one-out log loss at that temperature
    records: int
    # each known train record's leave-one-out probabilities [records, classes] (absent classes 0): what the mean of
    # several closed-form models is scored by; not saved
    loo_probs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32), repr=False)


def mean_of_ranks(fitted: list[RidgeRank], labels: np.ndarray) -> RidgeRank:
    """What the mean of several models' probabilities scores on the same train records, left out one at a time:
    ``loo_top1``/``loo_loss`` of the averaged leave-one-out probabilities (``labels``: the known records' classes)."""
    probs = np.mean([f.loo_probs for f in fitted], axis=0)
    if probs.size == 0:
        return RidgeRank(np.zeros(0), np.zeros(0), float("nan"), float("nan"), float("nan"), float("nan"), 0)
    loss = float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())
    return RidgeRank(np.zeros(0), np.zeros(0), float("nan"), float("nan"), float((probs.argmax(1) == labels).mean()),
                     loss, len(labels), probs)


def fit_ridge_rank(features: np.ndarray, labels: np.ndarray, num_classes: int) -> RidgeRank:
    """A ridge classifier for one rank: ``labels`` holds class indices, -1 where unknown (left out)."""
    from scipy.special import softmax
    from sklearn.linear_model import RidgeClassifierCV

    known = labels >= 0
    x, y = features[known], labels[known]
    present = np.unique(y)
    weight = np.zeros((num_classes, features.shape[1]), dtype=np.float32)
    bias = np.full(num_classes, ABSENT, dtype=np.float32)
    if len(present) < 2:  # nothing to separate: the one class seen (if any) is always predicted
        bias[present] = 0.0
        loo_probs = np.zeros((len(y), num_classes), np.float32)
        loo_probs[:, present] = 1.0
        return RidgeRank(weight, bias if len(present) else np.zeros(num_classes, np.float32), float("nan"), 1.0,
                         float("nan"), float("nan"), int(known.sum()), loo_probs)
    alpha = float(RidgeClassifierCV(alphas=ALPHAS).fit(x, y).alpha_)
    # the same alpha again, scored: scikit-learn then keeps each record's leave-one-out decision values
    ridge = RidgeClassifierCV(alphas=[alpha], scoring="accuracy", store_cv_results=True).fit(x, y)
    loo = ridge.cv_results_.reshape(len(y), -1)
    coef = np.asarray(ridge.coef_).reshape(-1, features.shape[1])
    intercept = np.asarray(ridge.intercept_).reshape(-1)
    if len(present) == 2:  # one decision value d for the second class: logits (-d/2, d/2) give the same softmax
        loo = np.concatenate([-loo / 2, loo / 2], axis=1)
        coef = np.concatenate([-coef / 2, coef / 2])
        intercept = np.concatenate([-intercept / 2, intercept / 2])
    column = np.searchsorted(present, y)
    temperature, loo_loss = fit_temperature(loo, column)
    weight[present] = coef / temperature
    bias[present] = intercept / temperature
    loo_probs = np.zeros((len(y), num_classes), np.float32)
    loo_probs[:, present] = softmax(loo / temperature, axis=1)
    return RidgeRank(weight, bias, alpha, temperature, float((loo.argmax(1) == column).mean()), loo_loss,
                     int(known.sum()), loo_probs)


def features_of(backbone: nn.Module, x: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Features of ``x`` in batches (a ROCKET transform of 50k features x 10k series would not fit at once)."""
    with torch.no_grad():
        return np.concatenate([backbone(x[i:i + batch_size]).numpy() for i in range(0, len(x), batch_size)])


def fit_closed_form(model: nn.Module, x: torch.Tensor, targets: np.ndarray, taxonomy: Taxonomy
                    ) -> dict[str, RidgeRank]:
    """Fit a closed-form classifier (a ROCKET-family backbone under ``linear`` heads) on train inputs ``x`` (as the
    model sees them, standardised) and ``targets`` ``[N, ranks]`` (-1 = unknown): the backbone's transform and
    scaler, then a ridge per rank whose weights are written into the heads."""
    if hasattr(model, "members"):  # the mean of several closed-form models: each fitted, their mean scored
        per_member = [fit_closed_form(m, x, targets, taxonomy) for m in model.members]
        return {rank: mean_of_ranks([f[rank] for f in per_member], targets[targets[:, r] >= 0, r])
                for r, rank in enumerate(taxonomy.ranks)}
    model.backbone.fit(x.numpy())
    features = features_of(model.backbone, x)
    fitted: dict[str, RidgeRank] = {}
    for r, (rank, n) in enumerate(zip(taxonomy.ranks, taxonomy.num_classes, strict=True)):
        fitted[rank] = ridge = fit_ridge_rank(features, targets[:, r], n)
        layer = model.head.fc[str(r)]
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(ridge.weight))
            layer.bias.copy_(torch.from_numpy(ridge.bias))
    return fitted
