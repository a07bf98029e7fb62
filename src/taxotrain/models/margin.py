"""Margin heads for embedding training: ArcFace, CosFace, the combined margin and sub-centre ArcFace, with optional
sampled class centres (PartialFC), one head per rank through :class:`MultiRankMargin`.

A margin head holds its class centres (``weight [C * k, D]``, ``k`` sub-centres per class) and maps an embedding
``[B, D]`` and labels ``[B]`` (``-1`` = no label at this rank: the row adds no loss) to a :class:`MarginOutput`:
the cross-entropy of the margin logits and the plain scaled cosine logits ``s * cos(theta_j)`` for metrics.
Embedding and centres are L2-normalised inside (a no-op for an embedding that already is).

Units. Every head is the combined margin of insightface / UNICOM (``CombinedMarginLoss``): the target logit is
``s * (cos(m1 * theta + m2) - m3)``, the other logits ``s * cos(theta_j)``. ``m1`` is a multiplier, ``m2`` is an
angle in RADIANS and ``m3`` is in cosine units. ``arcface`` is ``(1, margin, 0)`` (``margin`` in radians, default
0.5 = 28.6 degrees; pytorch-metric-learning 2.9's ``ArcFaceLoss`` takes its margin in DEGREES, default 28.6),
``cosface`` is ``(1, 0, margin)`` (default 0.35, cosine units, as in pytorch-metric-learning's ``CosFaceLoss``),
``combined`` defaults to ``(1.0, 0.5, 0.0)``, which is ArcFace. The scale ``s`` defaults to 64, the value of the
ArcFace paper, insightface, UNICOM and pytorch-metric-learning.

Past pi. Once ``m1 * theta + m2`` passes pi the cosine would rise again, rewarding a worse angle. There the target
logit becomes ``s * (cos(theta) - m3 - c)``, insightface's rule (its ``theta``/``sinmm`` branch): for ArcFace
``c = m * sin(m)``, so past ``theta = pi - m`` the logit is ``s * (cos(theta) - m * sin(m))``. For ``m1 > 1``
(SphereFace-like) that line could start above the curve's end, so ``c`` is raised to ``1 + cos(theta_max)`` when
larger, which keeps the target logit non-increasing in ``theta`` for every ``(m1, m2, m3)``.

Sampled centres. With ``sample_rate < 1`` each training step scores the embedding against only the batch's positive
classes plus random other classes, ``max(#positives, round(sample_rate * C))`` classes in all (PartialFC_V2 on one
process); labels are remapped into that index space and :attr:`MarginOutput.index` names the sampled classes. In
eval mode every class is scored. Under DDP the centres are replicated like any parameter (not sharded) and each
process samples from its own batch with its own torch RNG; DDP then averages the centre gradients.

Centre learning rate. :meth:`MarginHead.centre_parameters` lists the centres, so the trainer can give them their own
optimizer group at an LR multiplier (UNICOM's ``lr_pfc_weight`` is about 10).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from taxotrain.config import ConfigError
from taxotrain.registry import Registry
from taxotrain.taxonomy import NULL, Taxonomy

MARGINS: Registry[Callable[..., MarginHead]] = Registry("margin")
_EPS = 1e-7  # keeps acos off +-1, where its gradient is infinite


def register_margin(name: str) -> Callable[[Callable[..., MarginHead]], Callable[..., MarginHead]]:
    """Decorator that makes a margin head constructor available under ``name``."""
    return MARGINS.register(name)


def list_margins() -> list[str]:
    """Names of the registered margin heads."""
    return MARGINS.names()


def create_margin_head(name: str, embed_dim: int, num_classes: int, **kwargs: object) -> MarginHead:
    """Build the margin head registered as ``name``; ``None`` keyword arguments keep the head's own defaults.

    Example: ``create_margin_head("arcface", 512, 10_000, margin=0.3, sample_rate=0.1)``.
    """
    return MARGINS.create(name, embed_dim, num_classes, **kwargs)


@dataclass
class MarginOutput:
    """What a margin head returns for one batch.

    ``loss``: mean cross-entropy of the margin logits over the labelled rows (0, still in the graph, when none is).
    ``logits``: ``s * cos`` without margin, ``[B, n]`` over the classes in ``index`` (all ``C`` when it is ``None``).
    ``labels``: the labels in the columns of ``logits`` (``-1`` kept). ``index``: sorted class ids of the columns.
    """

    loss: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor | None = None

    def predictions(self) -> torch.Tensor:
        """Class id (in ``0..C-1``) of each row's highest logit."""
        best = self.logits.argmax(-1)
        return best if self.index is None else self.index[best]


@register_margin("combined")
class MarginHead(nn.Module):
    """Combined margin ``s * (cos(m1 * theta + m2) - m3)`` on the target class (UNICOM's CombinedMarginLoss).

    ``sub_centers`` > 1 keeps that many centres per class and scores a class by its nearest one; ``sample_rate``
    < 1 samples the centres during training (see the module docstring).
    """

    def __init__(self, embed_dim: int, num_classes: int, m1: float = 1.0, m2: float = 0.5, m3: float = 0.0,
                 scale: float = 64.0, sub_centers: int = 1, sample_rate: float = 1.0) -> None:
        super().__init__()
        _check(embed_dim, num_classes, m1, m2, scale, sub_centers, sample_rate)
        self.num_classes, self.sub_centers = num_classes, sub_centers
        self.m1, self.m2, self.m3, self.scale, self.sample_rate = m1, m2, m3, scale, sample_rate
        self.weight = nn.Parameter(torch.empty(num_classes * sub_centers, embed_dim).normal_(0.0, 0.01))
        self.theta_max = (math.pi - m2) / m1  # where m1 * theta + m2 reaches pi
        self.fallback = max(m2 * math.sin(m2), 1.0 + math.cos(self.theta_max)) if self.theta_max < math.pi else 0.0

    def centre_parameters(self) -> list[nn.Parameter]:
        """The class centres, for their own optimizer group (learning-rate multiplier)."""
        return [self.weight]

    def cosine(self, emb: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Cosine similarity ``[B, C]`` (or ``[B, len(index)]``) to each class: the nearest of its sub-centres."""
        w = self.weight
        if index is not None:
            w = w.view(self.num_classes, self.sub_centers, -1)[index].reshape(-1, w.shape[1])
        cos = F.linear(F.normalize(emb, dim=-1), F.normalize(w, dim=-1)).float()
        return cos.view(cos.shape[0], -1, self.sub_centers).amax(-1) if self.sub_centers > 1 else cos

    def margin_cosine(self, cos: torch.Tensor) -> torch.Tensor:
        """Target cosine with the margin, ``cos(m1 * theta + m2) - m3``, and the linear rule past ``theta_max``."""
        theta = cos.clamp(-1.0 + _EPS, 1.0 - _EPS).acos()
        return torch.where(theta <= self.theta_max, torch.cos(self.m1 * theta + self.m2) - self.m3,
                           cos - self.m3 - self.fallback)

    def sample(self, labels: torch.Tensor) -> torch.Tensor | None:
        """Sorted ids of the classes to score this step: every positive plus random others; ``None`` for all."""
        positives = labels[labels != NULL]
        count = max(int(torch.unique(positives).numel()), round(self.sample_rate * self.num_classes))
        if count >= self.num_classes:
            return None
        score = torch.rand(self.num_classes, device=labels.device)
        score[positives] = 2.0  # above any random score: topk keeps every positive
        return score.topk(count).indices.sort().values

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> MarginOutput:
        """Loss and plain logits for embeddings ``[B, D]`` and labels ``[B]`` (``-1``: ignored)."""
        index = self.sample(labels) if self.training and self.sample_rate < 1.0 else None
        if index is not None:
            local = torch.searchsorted(index, labels.clamp_min(0))
            labels = torch.where(labels != NULL, local, labels)
        cos = self.cosine(emb, index)
        return MarginOutput(self._loss(cos, labels), self.scale * cos, labels, index)

    def _loss(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        known = labels != NULL
        if not known.any():  # keep the graph connected so DDP sees a gradient for the centres
            return cos.sum() * 0.0
        cos, y = cos[known], labels[known][:, None]
        cos = cos.scatter(1, y, self.margin_cosine(cos.gather(1, y)))
        return F.cross_entropy(self.scale * cos, y[:, 0])


def _check(embed_dim: int, num_classes: int, m1: float, m2: float, scale: float, sub_centers: int,
           sample_rate: float) -> None:
    if embed_dim < 1 or num_classes < 1:
        raise ValueError(f"a margin head needs embed_dim and num_classes >= 1, not {embed_dim} and {num_classes}")
    if m1 <= 0 or not 0.0 <= m2 < math.pi:
        raise ValueError(f"margin m1 must be > 0 and m2 (radians) in [0, pi), not m1={m1}, m2={m2}")
    if scale <= 0 or sub_centers < 1:
        raise ValueError(f"margin scale must be > 0 and sub_centers >= 1, not {scale} and {sub_centers}")
    if not 0.0 < sample_rate <= 1.0:
        raise ValueError(f"margin sample_rate must be in (0, 1], not {sample_rate}")


@register_margin("arcface")
class ArcFace(MarginHead):
    """Additive angular margin (Deng et al. 2019): target logit ``s * cos(theta + margin)``, margin in radians."""

    def __init__(self, embed_dim: int, num_classes: int, margin: float = 0.5, scale: float = 64.0,
                 sample_rate: float = 1.0) -> None:
        super().__init__(embed_dim, num_classes, 1.0, margin, 0.0, scale, 1, sample_rate)


@register_margin("cosface")
class CosFace(MarginHead):
    """Additive cosine margin (Wang et al. 2018): target logit ``s * (cos(theta) - margin)``."""

    def __init__(self, embed_dim: int, num_classes: int, margin: float = 0.35, scale: float = 64.0,
                 sample_rate: float = 1.0) -> None:
        super().__init__(embed_dim, num_classes, 1.0, 0.0, margin, scale, 1, sample_rate)


@register_margin("subcenter_arcface")
class SubCenterArcFace(MarginHead):
    """ArcFace on the nearest of ``sub_centers`` centres per class (Deng et al. 2020), robust to label noise."""

    def __init__(self, embed_dim: int, num_classes: int, margin: float = 0.5, sub_centers: int = 3,
                 scale: float = 64.0, sample_rate: float = 1.0) -> None:
        super().__init__(embed_dim, num_classes, 1.0, margin, 0.0, scale, sub_centers, sample_rate)


@dataclass
class MultiRankMarginOutput:
    """``losses``: ``loss`` (weighted sum) and ``<rank>/loss`` (detached); ``outputs``: each rank's output."""

    losses: dict[str, torch.Tensor]
    outputs: dict[str, MarginOutput]

    @property
    def logits(self) -> dict[str, torch.Tensor]:
        """Each rank's plain scaled cosine logits (over its sampled classes in training with ``sample_rate`` < 1)."""
        return {rank: out.logits for rank, out in self.outputs.items()}


class MultiRankMargin(nn.Module):
    """One margin head per rank on the shared embedding; the loss is the weighted sum over ranks.

    ``kwargs`` go to every rank's head, ``rank_kwargs[rank]`` over them for one rank (say ``sample_rate`` at the
    species rank only); ``rank_weights`` default to 1.
    """

    def __init__(self, ranks: list[str], num_classes: list[int], embed_dim: int, margin: str = "arcface",
                 rank_weights: dict[str, float] | None = None, rank_kwargs: dict[str, dict] | None = None,
                 **kwargs: object) -> None:
        super().__init__()
        unknown = (set(rank_weights or {}) | set(rank_kwargs or {})) - set(ranks)
        if unknown:
            raise ConfigError(f"margin settings name unknown rank(s) {', '.join(sorted(unknown))}; the ranks are "
                              f"{', '.join(ranks)}")
        self.ranks = list(ranks)
        self.weights = [float((rank_weights or {}).get(r, 1.0)) for r in ranks]
        self.heads = nn.ModuleDict({
            str(i): create_margin_head(margin, embed_dim, n, **{**kwargs, **(rank_kwargs or {}).get(rank, {})})
            for i, (rank, n) in enumerate(zip(ranks, num_classes, strict=True))})

    @classmethod
    def from_taxonomy(cls, taxonomy: Taxonomy, embed_dim: int, margin: str = "arcface",
                      rank_weights: dict[str, float] | None = None, **kwargs: object) -> MultiRankMargin:
        """One head per rank of ``taxonomy``, sized by its class counts."""
        return cls(list(taxonomy.ranks), list(taxonomy.num_classes), embed_dim, margin, rank_weights, **kwargs)

    def centre_parameters(self) -> list[nn.Parameter]:
        """Every rank's class centres."""
        return [p for head in self.heads.values() for p in head.centre_parameters()]

    def cosine(self, emb: torch.Tensor) -> dict[str, torch.Tensor]:
        """Plain cosine similarity ``[B, C_rank]`` to every class of each rank, for inference."""
        return {rank: self.heads[str(i)].cosine(emb) for i, rank in enumerate(self.ranks)}

    def forward(self, emb: torch.Tensor, targets: torch.Tensor) -> MultiRankMarginOutput:
        """``targets`` is ``[B, R]`` with ``-1`` for unknown; returns the named losses and each rank's output."""
        outputs = {rank: self.heads[str(i)](emb, targets[:, i]) for i, rank in enumerate(self.ranks)}
        losses = {f"{rank}/loss": out.loss.detach() for rank, out in outputs.items()}
        losses["loss"] = sum(w * out.loss for w, out in zip(self.weights, outputs.values(), strict=True))
        return MultiRankMarginOutput(losses, outputs)
