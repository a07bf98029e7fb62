"""The embedding model of ``task: embedding``: backbone -> optional projection -> L2-normalised embedding -> one
margin head per rank (:class:`~taxotrain.models.margin.MultiRankMargin`).

It keeps the interface of every taxotrain model (``forward_features`` the embedding, ``forward_head`` logits per
rank), so evaluate, predict, calibrate and export need no special case. Its logits are the margin-free scaled cosine
similarities ``s * cos(theta_j)`` to each class centre (the nearest sub-centre), and ``softmax(s * cos / T)`` is the
probability that prediction reports (``T``: the rank's temperature, 1 unless calibrated). The margin only shapes
training: :meth:`EmbeddingClassifier.margin_loss` applies it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from taxotrain.models.classifier import TaxonomicClassifier
from taxotrain.models.margin import MultiRankMargin, MultiRankMarginOutput


class CosineLogits(nn.Module):
    """A head that scores an embedding by each rank's margin head without its margin: ``{rank: s * cos}``."""

    def __init__(self, margin: MultiRankMargin) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, emb: torch.Tensor) -> dict[str, torch.Tensor]:
        cos = self.margin.cosine(emb)
        return {rank: self.margin.heads[str(i)].scale * c for i, (rank, c) in enumerate(cos.items())}


class EmbeddingClassifier(TaxonomicClassifier):
    """Backbone, projection to ``embed_dim`` (``None``: none), L2 normalisation and the margin heads.

    ``forward_features`` is the unit-length embedding (what retrieval, galleries and export use), ``forward_head``
    the scaled cosine logits per rank (less the prior offsets, divided by the temperature outside training, as
    :class:`TaxonomicClassifier` does).
    """

    def __init__(self, backbone: nn.Module, margin: MultiRankMargin, ranks: list[str], num_classes: list[int],
                 embed_dim: int | None = None) -> None:
        super().__init__(backbone, CosineLogits(margin), ranks, num_classes)
        width = int(backbone.num_features)
        self.projection = nn.Linear(width, embed_dim, bias=False) if embed_dim else nn.Identity()
        self.embed_dim = embed_dim or width

    @property
    def num_features(self) -> int:
        """Width of the embedding."""
        return int(self.embed_dim)

    @property
    def margin(self) -> MultiRankMargin:
        """The margin heads of every rank (they hold the class centres)."""
        return self.head.margin

    def forward_features(self, input: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:  # noqa: A002
        """The L2-normalised embedding ``[B, embed_dim]`` (``extra``: the backbone's other inputs, e.g. ``meta``)."""
        return F.normalize(self.projection(super().forward_features(input, **extra)), dim=-1)

    def margin_loss(self, emb: torch.Tensor, targets: torch.Tensor) -> MultiRankMarginOutput:
        """The margin losses of embeddings ``[B, D]`` for labels ``[B, R]`` (``-1``: unknown at that rank)."""
        return self.margin(emb, targets)

    def centre_parameters(self) -> list[nn.Parameter]:
        """Every rank's class centres (their own optimizer group, at ``optim.centre_lr_scale``)."""
        return self.margin.centre_parameters()
