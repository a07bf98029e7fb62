"""Backbones that take place/date metadata: an image or signal backbone fused with a metadata encoder, and the
metadata-only backbone of a place/date prior.

Both take the metadata of a batch as one float tensor ``[B, F]``: the raw values of each component the encoder
takes, side by side in its order (``place``: lat, lon; ``date``: day_of_year; ...), NaN where missing or masked
(``data/metadata_inputs.py`` builds it). :class:`MetadataVector` splits it and runs the
:class:`~taxotrain.models.metadata.MetadataEncoder`; a component with a non-finite value encodes as zeros.

Example:
    >>> enc = MetadataVector(MetadataEncoder(["place", "date"], dim=8))
    >>> enc(torch.tensor([[48.85, 2.35, float("nan")]])).shape
    torch.Size([1, 8])
"""

from __future__ import annotations

import torch
from torch import nn

from taxotrain.models.metadata import MetadataEncoder, MetadataError, create_fusion


class MetadataVector(nn.Module):
    """``[B, F]`` raw values (NaN = missing) -> the encoder's embedding ``[B, dim]``."""

    def __init__(self, encoder: MetadataEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.fields = [(name, tuple(e.inputs)) for name, e in encoder.encoders.items()]
        self.width = sum(len(inputs) for _, inputs in self.fields)

    @property
    def out_dim(self) -> int:
        """Width of the embedding."""
        return int(self.encoder.out_dim)

    def missing(self, batch: int, device: torch.device) -> torch.Tensor:
        """A batch of records with no metadata at all (every value NaN)."""
        return torch.full((batch, self.width), float("nan"), device=device)

    def forward(self, meta: torch.Tensor) -> torch.Tensor:
        if meta.ndim != 2 or meta.shape[1] != self.width:
            want = ", ".join(f"{n} ({', '.join(i)})" for n, i in self.fields)
            raise MetadataError(f"metadata of shape {list(meta.shape)} does not match the model, which takes "
                                f"[batch, {self.width}]: {want}")
        values, start = {}, 0
        for name, inputs in self.fields:
            values[name] = meta[:, start : start + len(inputs)]
            start += len(inputs)
        return self.encoder(values)


class FusedBackbone(nn.Module):
    """An image or signal backbone whose pooled features are joined to the metadata embedding by a fusion module
    (``concat`` or ``film``): ``forward(input, meta) -> [B, num_features]``. Without ``meta`` every record counts as
    having no metadata."""

    input_names = ("input", "meta")

    def __init__(self, backbone: nn.Module, metadata: MetadataVector, fusion: str = "concat") -> None:
        super().__init__()
        if getattr(backbone, "closed_form", False):
            raise MetadataError("place/date metadata needs a network trained by gradient; a model fitted in closed "
                                "form (the ROCKET family) cannot take it: choose a network backbone or set "
                                "model.metadata: []")
        self.backbone = backbone
        self.metadata = metadata
        self.fusion = create_fusion(fusion, int(backbone.num_features), metadata.out_dim)
        self.num_features = int(self.fusion.out_dim)

    def forward(self, input: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:  # noqa: A002
        features = self.backbone(input)
        if meta is None:
            meta = self.metadata.missing(len(features), features.device)
        return self.fusion(features, self.metadata(meta.to(features.device)).to(features.dtype))


class ResidualBlock(nn.Module):
    """``x + GELU(W2 GELU(W1 x))``, SINR's residual layer (Cole et al. 2023), with dropout between."""

    def __init__(self, width: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Dropout(dropout), nn.Linear(width, width),
                                 nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class PriorBackbone(nn.Module):
    """The metadata-only backbone of ``task: prior``: the metadata embedding -> a linear map to ``hidden`` ->
    ``blocks`` residual blocks (``forward(input [B, F]) -> [B, hidden]``)."""

    def __init__(self, metadata: MetadataVector, hidden: int = 256, blocks: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.metadata = metadata
        self.inp = nn.Sequential(nn.Linear(metadata.out_dim, hidden), nn.GELU())
        self.blocks = nn.Sequential(*(ResidualBlock(hidden, dropout) for _ in range(blocks)))
        self.num_features = int(hidden)

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (the batch key's name)
        return self.blocks(self.inp(self.metadata(input)))
