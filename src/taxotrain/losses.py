"""Per-rank losses: the sum over ranks of cross-entropy, null labels masked out.

The loss returns named parts (``loss``, ``<rank>/loss``) so the training loop never needs to know what a rank is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from taxotrain.config import LossConfig
from taxotrain.taxonomy import NULL


class MultiRankLoss(nn.Module):
    """Weighted sum over ranks of label-smoothed cross-entropy; records unknown at a rank do not count there."""

    def __init__(self, ranks: list[str], label_smoothing: float = 0.0, rank_weights: dict[str, float] | None = None):
        super().__init__()
        unknown = set(rank_weights or {}) - set(ranks)
        if unknown:
            raise ValueError(f"loss.rank_weights names unknown rank(s) {', '.join(sorted(unknown))}; the ranks are "
                             f"{', '.join(ranks)}")
        self.ranks = ranks
        self.label_smoothing = label_smoothing
        self.weights = [float((rank_weights or {}).get(r, 1.0)) for r in ranks]

    @classmethod
    def from_config(cls, cfg: LossConfig, ranks: list[str]) -> MultiRankLoss:
        """Build from the ``loss`` config section."""
        return cls(ranks, cfg.label_smoothing, cfg.rank_weights)

    def forward(self, logits: dict[str, torch.Tensor], targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """``targets`` is ``[B, R]`` with ``NULL`` for unknown; returns ``loss`` and ``<rank>/loss``."""
        parts: dict[str, torch.Tensor] = {}
        total = targets.new_zeros((), dtype=torch.float32)
        for r, rank in enumerate(self.ranks):
            y = targets[:, r]
            known = y != NULL
            if known.any():
                part = F.cross_entropy(logits[rank][known].float(), y[known], label_smoothing=self.label_smoothing)
            else:  # keep the graph connected so DDP sees a gradient for every head
                part = logits[rank].sum() * 0.0
            parts[f"{rank}/loss"] = part.detach()
            total = total + self.weights[r] * part
        parts["loss"] = total
        return parts
