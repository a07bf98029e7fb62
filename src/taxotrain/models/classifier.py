"""The assembled model: backbone -> embedding -> logits per rank, with one small interface for every task.

``forward_features`` gives the embedding (used by retrieval and export), ``forward_head`` the per-rank logits. The
model takes its inputs by name (``model(input=x)``; ``input_names`` lists them), so a task that adds an input, such
as place and date, adds a keyword rather than a tuple position.
"""

from __future__ import annotations

import torch
from torch import nn

from taxotrain.config import ModelConfig
from taxotrain.models.heads import create_head
from taxotrain.taxonomy import Taxonomy


class TaxonomicClassifier(nn.Module):
    """Backbone + head; ``forward(input=x)`` returns ``{rank name: logits}``."""

    input_names: tuple[str, ...] = ("input",)

    def __init__(self, backbone: nn.Module, head: nn.Module, ranks: list[str]) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.ranks = ranks

    @property
    def num_features(self) -> int:
        """Width of the embedding."""
        return int(self.backbone.num_features)

    def forward_features(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (the batch key's name)
        """Pooled embedding ``[B, D]``."""
        return self.backbone(input)

    def forward_head(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per rank from an embedding."""
        return self.head(features)

    def forward(self, input: torch.Tensor) -> dict[str, torch.Tensor]:  # noqa: A002
        return self.forward_head(self.forward_features(input))


def build_classifier(backbone: nn.Module, cfg: ModelConfig, taxonomy: Taxonomy) -> TaxonomicClassifier:
    """Put the head that ``cfg.head`` names on ``backbone`` (any module with ``num_features``)."""
    extra = {"condition": cfg.head_condition} if cfg.head == "conditional" else {}
    head = create_head(cfg.head, backbone.num_features, taxonomy, drop_rate=cfg.drop_rate, **extra)
    return TaxonomicClassifier(backbone, head, list(taxonomy.ranks))
