"""The objective of ``task: prior``: per-rank classification, or, with ``loss.prior_background``, presence-only
training with random background points (SINR, Cole et al. 2023, its "assume negative full" loss).

Occurrence records say where a taxon was seen, not where it is absent. With ``loss.prior_background: w > 0`` each
rank's logits are read as independent presence scores ``sigmoid(z_j)``. For a record of class ``y``, the observed
class is pushed towards presence with weight ``K`` (the rank's number of classes; SINR's positive weight
``lambda``, which balances the one positive against the ``K - 1`` assumed absences) and every other class towards
absence, averaged over the ``K`` classes; for one random background point per record (uniform on the sphere for
place, a uniform day of year and hour; other components missing) every class is pushed towards absence, with
weight ``w`` (1 = SINR's). The per-rank losses are weighted over ranks as classification's (``loss.rank_weights``,
``loss.coarse_weight``). Validation keeps the cross-entropy as its ``val/loss``.

Such a prior reports, per rank, the presence scores normalised to sum to 1 (``sigmoid(z) / sum sigmoid(z)``): at a
place where several taxa are present it does not prefer the commonly recorded one, as a softmax prior would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from taxotrain.config import Config, ConfigError
from taxotrain.tasks.base import StepOutput
from taxotrain.tasks.classification import RankClassification, RankProbabilities
from taxotrain.taxonomy import NULL, Taxonomy

DAYS = 365.25


def background_points(n: int, fields: Sequence[tuple[str, Sequence[str]]],
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` random metadata rows ``[n, F]``: place uniform on the sphere (latitude ``asin(2u - 1)``), day of year
    uniform in [1, 366.25), hour uniform in [0, 24); any other component missing (NaN)."""
    columns: list[torch.Tensor] = []

    def uniform() -> torch.Tensor:
        return torch.rand(n, generator=generator)

    for name, inputs in fields:
        if name == "place":
            columns += [torch.rad2deg(torch.asin(2 * uniform() - 1)), 360 * uniform() - 180]
        elif name == "date":
            columns.append(1 + DAYS * uniform())
        elif name == "hour":
            columns.append(24 * uniform())
        else:
            columns += [torch.full((n,), float("nan")) for _ in inputs]
    return torch.stack(columns, dim=1)


def presence_loss(logits: torch.Tensor, target: torch.Tensor, background: torch.Tensor,
                  weight: float) -> torch.Tensor:
    """SINR's "assume negative full" loss of one rank: ``logits`` ``[B, K]`` of the records (``target`` ``[B]``,
    ``NULL`` = unknown: left out) and ``background`` ``[B, K]`` of the random points."""
    k = logits.shape[1]
    known = target != NULL
    absent_bg = F.softplus(background).mean()  # -log(1 - sigmoid(z))
    if not known.any():
        return weight * absent_bg
    z, y = logits[known], target[known][:, None]
    absent = F.softplus(z)
    present = F.softplus(-z.gather(1, y)).squeeze(1)  # -log sigmoid(z_y)
    observed = (absent.sum(1) - absent.gather(1, y).squeeze(1) + k * present) / k
    return observed.mean() + weight * absent_bg


class PresenceProbabilities(RankProbabilities):
    """Per rank the presence scores ``sigmoid(z)`` normalised to sum to 1, then the embedding."""

    def forward(self, input: torch.Tensor, **extra: torch.Tensor) -> tuple[torch.Tensor, ...]:  # noqa: A002
        features = self.model.forward_features(self.preprocess(input), **extra)
        logits = self.model.forward_head(features)
        tiny = torch.finfo(torch.float32).tiny
        scores = [logits[rank].float().sigmoid() for rank in self.ranks]
        return (*(s / s.sum(-1, keepdim=True).clamp_min(tiny) for s in scores), features)


class PriorObjective(RankClassification):
    """Per-rank classification of metadata rows; with ``loss.prior_background`` the presence-only loss."""

    def __init__(self, config: Config, taxonomy: Taxonomy, class_counts: list[np.ndarray] | None,
                 fields: Sequence[tuple[str, Sequence[str]]]) -> None:
        super().__init__(config, taxonomy, class_counts)
        self.fields = list(fields)
        loss = config.loss
        if loss.prior_background > 0:
            unused = [key for key, off in (("loss.label_smoothing", loss.label_smoothing == 0),
                                           ("loss.class_weights", loss.class_weights == "none"),
                                           ("loss.logit_adjustment", loss.logit_adjustment != "train"),
                                           ("loss.weighting", loss.weighting == "static")) if not off]
            if unused:
                raise ConfigError(f"'{unused[0]}' does nothing with loss.prior_background (the presence-only loss "
                                  "has no smoothing, class weights, train-time logit adjustment or GradNorm); remove "
                                  "it, or set loss.prior_background: 0")

    @property
    def presence(self) -> bool:
        """Whether the prior is trained presence-only (``loss.prior_background`` > 0)."""
        return self.config.loss.prior_background > 0

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        """Cross-entropy per rank; with ``loss.prior_background``, the presence loss on the records and as many
        background points."""
        if not self.presence:
            return super().training_step(model, batch)
        x, y = batch["input"], batch["target"]
        points = background_points(len(x), self.fields).to(x.device, x.dtype)
        logits = model(input=torch.cat([x, points]))
        n = len(x)
        per_rank = [presence_loss(logits[rank][:n], y[:, r], logits[rank][n:], self.config.loss.prior_background)
                    for r, rank in enumerate(self.ranks)]
        parts = self.loss.combine(per_rank)
        return StepOutput(parts["loss"], parts, {rank: z[:n] for rank, z in logits.items()}, n)

    def inference(self, model: nn.Module, preprocess: nn.Module) -> RankProbabilities:
        """Softmax probabilities per rank, or normalised presence scores for a presence-only prior."""
        cls = PresenceProbabilities if self.presence else RankProbabilities
        return cls(model, preprocess, self.ranks)
