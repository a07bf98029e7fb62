"""An ensemble of trained classifiers on the same inputs: the mean of their probabilities at every rank.

``forward`` returns, per rank, the log of the members' mean softmax, so ``softmax(logits)`` (what evaluation,
``predict`` and export compute) is that mean exactly, and the rest of taxotrain treats an ensemble as one model. The
embedding is the members' embeddings side by side.
"""

from __future__ import annotations

import torch
from torch import nn


class EnsembleClassifier(nn.Module):
    """Members (each ``forward(input=x) -> {rank: logits}`` with ``forward_features``/``forward_head``) averaged."""

    def __init__(self, members: list[nn.Module], ranks: list[str]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.ranks = list(ranks)
        self.widths = [int(m.num_features) for m in members]

    @property
    def num_features(self) -> int:
        """Width of the embedding: the members' widths summed."""
        return sum(self.widths)

    @property
    def input_names(self) -> tuple[str, ...]:
        """Every input a member takes (``input``, and ``meta`` when one uses place/date metadata)."""
        names = [n for m in self.members for n in getattr(m, "input_names", ("input",))]
        return tuple(dict.fromkeys(names))

    @property
    def closed_form(self) -> bool:
        """Whether a member is fitted in closed form (then the ensemble cannot be exported)."""
        return any(bool(getattr(getattr(m, "backbone", m), "closed_form", False)) for m in self.members)

    def forward_features(self, input: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:  # noqa: A002
        """The members' embeddings, concatenated ``[B, sum of widths]``; each member gets the extra inputs it takes."""
        return torch.cat([m.forward_features(input, **{k: v for k, v in extra.items() if k in getattr(
            m, "input_names", ())}) for m in self.members], dim=1)

    def forward_head(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Log of the mean of the members' probabilities per rank."""
        parts = features.split(self.widths, dim=1)
        logits = [m.forward_head(f) for m, f in zip(self.members, parts, strict=True)]
        tiny = torch.finfo(torch.float32).tiny
        return {rank: torch.stack([out[rank].float().softmax(-1) for out in logits]).mean(0).clamp_min(tiny).log()
                for rank in self.ranks}

    def forward(self, input: torch.Tensor, **extra: torch.Tensor) -> dict[str, torch.Tensor]:  # noqa: A002
        return self.forward_head(self.forward_features(input, **extra))
