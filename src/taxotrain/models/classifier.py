"""The assembled model: backbone -> embedding -> logits per rank, with one small interface for every task.

``forward_features`` gives the embedding (used by retrieval and export), ``forward_head`` the per-rank logits.
"""

from __future__ import annotations

import torch
from torch import nn

from taxotrain.config import ModelConfig
from taxotrain.models.backbones import create_backbone
from taxotrain.models.heads import create_head
from taxotrain.models.signal_nets import create_signal_net
from taxotrain.taxonomy import Taxonomy


class TaxonomicClassifier(nn.Module):
    """Backbone + head; ``forward`` returns ``{rank name: logits}``."""

    def __init__(self, backbone: nn.Module, head: nn.Module, ranks: list[str]) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.ranks = ranks

    @property
    def num_features(self) -> int:
        """Width of the embedding."""
        return int(self.backbone.num_features)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled embedding ``[B, D]``."""
        return self.backbone(x)

    def forward_head(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per rank from an embedding."""
        return self.head(features)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_head(self.forward_features(x))


def build_model(cfg: ModelConfig, taxonomy: Taxonomy, in_chans: int, pretrained: bool | None = None,
                task: str = "image") -> nn.Module:
    """Create the model a config describes; ``pretrained=False`` skips weight downloads (used when restoring).

    ``task="signal"`` takes the backbone from the signal-network registry (with ``cfg.kwargs``), else from timm.
    """
    use_pretrained = cfg.pretrained if pretrained is None else pretrained
    if task == "signal":
        backbone = create_signal_net(cfg.backbone, in_chans=in_chans, **(cfg.kwargs or {}))
    else:
        backbone = create_backbone(cfg.backbone, pretrained=use_pretrained,
                                   pretrained_path=cfg.pretrained_path if use_pretrained else None,
                                   in_chans=in_chans, drop_path_rate=cfg.drop_path_rate)
    extra = {"condition": cfg.head_condition} if cfg.head == "conditional" else {}
    head = create_head(cfg.head, backbone.num_features, taxonomy, drop_rate=cfg.drop_rate, **extra)
    return TaxonomicClassifier(backbone, head, list(taxonomy.ranks))
