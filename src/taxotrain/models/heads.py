"""Classifier heads: a registry, one ``create_head`` and the per-rank linear head.

A head maps the embedding ``[B, D]`` to a dict ``{rank name: logits [B, C_rank]}``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from taxotrain.registry import Registry
from taxotrain.taxonomy import Taxonomy

HEADS: Registry[Callable[..., nn.Module]] = Registry("head", choices="model.head takes one of")


def register_head(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that makes a head constructor available as ``model.head: <name>``."""
    return HEADS.register(name)


def list_heads() -> list[str]:
    """Names of the registered heads."""
    return HEADS.names()


def create_head(name: str, in_features: int, taxonomy: Taxonomy, **kwargs: object) -> nn.Module:
    """Build the head registered as ``name``; ``None`` keyword arguments keep the head's own defaults."""
    return HEADS.create(name, in_features, taxonomy, **kwargs)


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


@register_head("conditional")
class ConditionalHeads(nn.Module):
    """Coarse to fine: each finer rank's classifier also sees the coarser rank's prediction.

    ``condition="soft"`` (default) feeds the coarser softmax, so gradients flow through it; ``"hard"`` feeds the
    one-hot argmax.
    """

    def __init__(self, in_features: int, taxonomy: Taxonomy, drop_rate: float = 0.0, condition: str = "soft") -> None:
        super().__init__()
        if condition not in ("soft", "hard"):
            raise ValueError(f"model.head_condition {condition!r}: choose soft or hard")
        self.ranks = list(taxonomy.ranks)
        self.condition = condition
        self.drop = nn.Dropout(drop_rate)
        sizes = taxonomy.num_classes
        self.fc = nn.ModuleDict({str(r): nn.Linear(in_features + (sizes[r - 1] if r else 0), n)
                                 for r, n in enumerate(sizes)})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.drop(x)
        out: dict[str, torch.Tensor] = {}
        prev: torch.Tensor | None = None
        for r, rank in enumerate(self.ranks):
            inp = x if prev is None else torch.cat([x, prev], dim=1)
            logits = self.fc[str(r)](inp)
            out[rank] = logits
            probs = logits.softmax(-1)
            prev = probs if self.condition == "soft" else torch.nn.functional.one_hot(
                probs.argmax(-1), probs.shape[-1]).to(probs.dtype)
        return out


@register_head("hierarchical_softmax")
class HierarchicalSoftmax(nn.Module):
    """A softmax over the children of each node; a node's probability is the product down its path.

    Returns log-probabilities per rank (valid logits). A rank that some branches skip (a class hanging straight
    under its group) holds less than all the mass: the rest sits in the deeper nodes that skip it.
    """

    def __init__(self, in_features: int, taxonomy: Taxonomy, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.ranks = list(taxonomy.ranks)
        sizes = taxonomy.num_classes
        self.sizes = list(sizes)
        self.offsets = [sum(sizes[:r]) for r in range(len(sizes))]
        total = sum(sizes)
        parent_flat = []  # flat index of each node's nearest known ancestor, -1 = root
        for r in range(len(sizes)):
            for i in range(sizes[r]):
                p = taxonomy.parent(r, i)
                parent_flat.append(-1 if p is None else self.offsets[p[0]] + p[1])
        parent = torch.tensor(parent_flat, dtype=torch.long)
        # sibling group of each node = its parent's flat index + 1 (0 = children of the root)
        self.register_buffer("group", parent + 1, persistent=False)
        self.register_buffer("parent", parent, persistent=False)
        self.num_groups = total + 1
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, total)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.fc(self.drop(x)).float()
        b = logits.shape[0]
        index = self.group.expand(b, -1)
        peak = torch.full((b, self.num_groups), float("-inf"), device=logits.device)
        peak = peak.scatter_reduce(1, index, logits, reduce="amax", include_self=True)
        shifted = logits - peak.gather(1, index)
        sums = torch.zeros(b, self.num_groups, device=logits.device).scatter_add(1, index, shifted.exp())
        log_cond = shifted - sums.clamp_min(1e-30).log().gather(1, index)
        per_rank: list[torch.Tensor] = []
        for lo, n in zip(self.offsets, self.sizes, strict=True):  # parents sit at coarser ranks: done already
            parent = self.parent[lo : lo + n]
            step = log_cond[:, lo : lo + n]
            if per_rank:
                coarser = torch.cat(per_rank, dim=1)
                step = step + torch.where(parent >= 0, coarser[:, parent.clamp_min(0)], torch.zeros_like(step))
            per_rank.append(step)
        return dict(zip(self.ranks, per_rank, strict=True))


@register_head("flat")
class FlatHead(nn.Module):
    """One classifier at the finest rank; each coarser rank's probability is the fine softmax summed into it.

    With ``loss.rank_weights`` at 0 for the coarser ranks this is the flat baseline that hierarchical settings are
    measured against; with weights above 0 the coarser losses act on the summed (marginal) probabilities.
    Returns log-probabilities per rank. A coarser node with nothing below it at the finest rank gets no mass.
    """

    def __init__(self, in_features: int, taxonomy: Taxonomy, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.ranks = list(taxonomy.ranks)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, taxonomy.num_classes[-1])
        for r in range(len(self.ranks) - 1):
            member = torch.from_numpy(taxonomy.membership(r)).float()
            self.register_buffer(f"member{r}", member, persistent=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        log_fine = self.fc(self.drop(x)).float().log_softmax(-1)
        fine = log_fine.exp()
        out = {rank: (fine @ getattr(self, f"member{r}")).clamp_min(1e-12).log()
               for r, rank in enumerate(self.ranks[:-1])}
        out[self.ranks[-1]] = log_fine
        return out
