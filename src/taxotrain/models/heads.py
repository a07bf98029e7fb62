"""Classifier heads: a registry, one ``create_head`` and the per-rank linear head.

A head maps the embedding ``[B, D]`` to a dict ``{rank name: logits [B, C_rank]}``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from taxotrain.taxonomy import Taxonomy

_HEADS: dict[str, Callable[..., nn.Module]] = {}


def register_head(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that makes a head constructor available as ``model.head: <name>``."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _HEADS[name] = fn
        return fn

    return wrap


def list_heads() -> list[str]:
    """Names of the registered heads."""
    return sorted(_HEADS)


def create_head(name: str, in_features: int, taxonomy: Taxonomy, **kwargs: object) -> nn.Module:
    """Build the head registered as ``name``; ``None`` keyword arguments keep the head's own defaults."""
    if name not in _HEADS:
        raise ValueError(f"unknown head '{name}'; model.head takes one of: {', '.join(list_heads())}")
    return _HEADS[name](in_features, taxonomy, **{k: v for k, v in kwargs.items() if v is not None})


@register_head("linear")
class LinearHeads(nn.Module):
    """One independent linear classifier per rank (the flat multi-task baseline)."""

    def __init__(self, in_features: int, taxonomy: Taxonomy, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.ranks = list(taxonomy.ranks)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.ModuleDict({str(r): nn.Linear(in_features, n) for r, n in enumerate(taxonomy.num_classes)})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.drop(x)
        return {rank: self.fc[str(r)](x) for r, rank in enumerate(self.ranks)}
