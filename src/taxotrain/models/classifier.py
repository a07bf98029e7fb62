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
    """Backbone + head; ``forward(input=x)`` returns ``{rank name: logits}``. A backbone that takes more inputs
    (``input_names``, e.g. ``("input", "meta")`` for place/date metadata) gets them as keywords."""

    def __init__(self, backbone: nn.Module, head: nn.Module, ranks: list[str], num_classes: list[int]) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.ranks = ranks
        # outside training, each rank's logits less its prior offset (0 unless logit-adjusted: loss.logit_adjustment
        # predict, or `taxotrain calibrate --logit-adjustment`), divided by its temperature (1 unless calibrated)
        for r, n in enumerate(num_classes):
            self.register_buffer(f"prior_offset{r}", torch.zeros(n))
        self.register_buffer("temperature", torch.ones(len(ranks)))

    def set_prior_offsets(self, offsets: list[torch.Tensor]) -> None:
        """Per rank, what to subtract from each class's logit outside training (``tau * log prior``: post-hoc logit
        adjustment, Menon et al. 2021). Saved with the model."""
        for r, offset in enumerate(offsets):
            getattr(self, f"prior_offset{r}").copy_(offset)

    @property
    def input_names(self) -> tuple[str, ...]:
        """The batch keys the model takes: ``input``, plus any its backbone adds (``meta``: place/date metadata)."""
        return tuple(getattr(self.backbone, "input_names", ("input",)))

    @property
    def num_features(self) -> int:
        """Width of the embedding."""
        return int(self.backbone.num_features)

    def forward_features(self, input: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:  # noqa: A002
        """Pooled embedding ``[B, D]`` (``extra``: the backbone's other inputs, e.g. ``meta``)."""
        return self.backbone(input, **extra) if extra else self.backbone(input)

    def forward_head(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per rank from an embedding; outside training, less the rank's prior offsets and divided by its
        temperature (training sees the head's raw logits)."""
        logits = self.head(features)
        if self.training:
            return logits
        return {rank: (logits[rank] - getattr(self, f"prior_offset{r}")) / self.temperature[r]
                for r, rank in enumerate(self.ranks)}

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object, **kwargs: object) -> None:
        # checkpoints written before these existed: not adjusted (offsets 0), not calibrated (temperature 1). Only
        # for a load of the whole model: a partial load (the batch-size probe restores batch-norm buffers alone)
        # must leave them as they are
        whole = any(k.startswith(prefix + "head.") for k in state_dict)
        for name, buffer in self.named_buffers(recurse=False) if whole else ():
            state_dict.setdefault(prefix + name, torch.zeros_like(buffer) if name.startswith("prior_offset")
                                  else torch.ones_like(buffer))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[arg-type]

    def forward(self, input: torch.Tensor, **extra: torch.Tensor) -> dict[str, torch.Tensor]:  # noqa: A002
        return self.forward_head(self.forward_features(input, **extra))


def build_classifier(backbone: nn.Module, cfg: ModelConfig, taxonomy: Taxonomy) -> TaxonomicClassifier:
    """Put the head that ``cfg.head`` names on ``backbone`` (any module with ``num_features``)."""
    extra = {"condition": cfg.head_condition} if cfg.head == "conditional" else {}
    head = create_head(cfg.head, backbone.num_features, taxonomy, drop_rate=cfg.drop_rate, **extra)
    return TaxonomicClassifier(backbone, head, list(taxonomy.ranks), list(taxonomy.num_classes))
