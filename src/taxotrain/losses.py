"""Per-rank losses: the weighted sum over ranks of cross-entropy, null labels masked out.

The loss returns named parts (``loss``, ``<rank>/loss``) so the training loop never needs to know what a rank is.
Options: uniform or taxonomy-aware label smoothing (mass to relatives by closeness in the tree), mixup partners
(``lam * L(y) + (1 - lam) * L(y_partner)``), static rank weights or GradNorm, and for imbalanced classes capped
inverse-frequency class weights and the logit-adjusted loss (Menon et al. 2021: logits + tau * log prior).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from taxotrain.config import ConfigError, LossConfig
from taxotrain.taxonomy import NULL, Taxonomy


def taxonomic_targets(taxonomy: Taxonomy, rank: int, eps: float, decay: float) -> torch.Tensor:
    """Soft target rows ``[n, n]``: ``1 - eps`` on the true class, ``eps`` spread over the other classes of the rank
    in proportion to ``exp(-decay * tree distance)``, so a species' siblings get more than a far-off family's."""
    n = taxonomy.num_classes[rank]
    if n == 1 or eps == 0:
        return torch.eye(n)
    dist = np.array([[taxonomy.tree_distance(rank, a, b) for b in range(n)] for a in range(n)], dtype=np.float64)
    w = np.exp(-decay * dist)
    np.fill_diagonal(w, 0.0)
    w /= w.sum(1, keepdims=True)
    return torch.from_numpy((1 - eps) * np.eye(n) + eps * w).float()


def class_weights(counts: np.ndarray, power: float, cap: float) -> torch.Tensor:
    """Per class ``count ** -power`` (1: inverse frequency, 0.5: its square root), scaled so that the train records'
    mean weight is 1, then capped at ``cap``; classes with no train record weigh 0."""
    counts = np.asarray(counts, dtype=np.float64)
    w = np.where(counts > 0, np.maximum(counts, 1.0) ** -power, 0.0)
    w /= (w * counts).sum() / max(counts.sum(), 1.0)
    return torch.from_numpy(np.minimum(w, cap)).float()


def log_prior(counts: np.ndarray) -> torch.Tensor:
    """Per class the log of its share of the train records (a class with none counts as one record, not -inf)."""
    counts = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    return torch.from_numpy(np.log(counts / counts.sum())).float()


def resolve_rank_weights(cfg: LossConfig, ranks: list[str]) -> dict[str, float]:
    """Weight of each rank in the summed loss: ``coarse_weight`` for every rank above the finest, 1 for the finest,
    and ``rank_weights`` over both."""
    weights = {r: (1.0 if i == len(ranks) - 1 else cfg.coarse_weight) for i, r in enumerate(ranks)}
    unknown = set(cfg.rank_weights or {}) - set(ranks)
    if unknown:
        raise ConfigError(f"bad value for 'loss.rank_weights': unknown rank(s) {', '.join(sorted(unknown))}; the "
                          f"ranks are {', '.join(ranks)}")
    return {**weights, **(cfg.rank_weights or {})}


class MultiRankLoss(nn.Module):
    """Weighted sum over ranks of (smoothed) cross-entropy; records unknown at a rank do not count there."""

    def __init__(self, ranks: list[str], label_smoothing: float = 0.0, rank_weights: dict[str, float] | None = None,
                 soft_targets: list[torch.Tensor] | None = None, class_weights: list[torch.Tensor] | None = None,
                 logit_shift: list[torch.Tensor] | None = None) -> None:
        super().__init__()
        unknown = set(rank_weights or {}) - set(ranks)
        if unknown:
            raise ConfigError(f"bad value for 'loss.rank_weights': unknown rank(s) {', '.join(sorted(unknown))}; "
                              f"the ranks are {', '.join(ranks)}")
        self.ranks = ranks
        self.label_smoothing = label_smoothing
        self.register_buffer("weights", torch.tensor([float((rank_weights or {}).get(r, 1.0)) for r in ranks]),
                             persistent=False)
        self.soft = soft_targets is not None
        for r, t in enumerate(soft_targets or []):
            self.register_buffer(f"targets{r}", t, persistent=False)
        self.weighted, self.shifted = class_weights is not None, logit_shift is not None
        for r, w in enumerate(class_weights or []):  # per class: what one record of it weighs in the loss
            self.register_buffer(f"class_weights{r}", w, persistent=False)
        for r, s in enumerate(logit_shift or []):  # per class: added to the logits (logit-adjusted loss)
            self.register_buffer(f"logit_shift{r}", s, persistent=False)

    @classmethod
    def from_config(cls, cfg: LossConfig, taxonomy: Taxonomy,
                    class_counts: list[np.ndarray] | None = None) -> MultiRankLoss:
        """Build from the ``loss`` config section; ``class_counts`` (train records per class at each rank) give
        ``class_weights`` and ``logit_adjustment: train`` (a restored run, which has none, never trains: without
        them the loss has neither)."""
        soft = None
        if cfg.smoothing == "taxonomic":
            soft = [taxonomic_targets(taxonomy, r, cfg.label_smoothing, cfg.smoothing_decay)
                    for r in range(len(taxonomy.ranks))]
        weights = shift = None
        if cfg.class_weights != "none" and class_counts is not None:
            weights = [class_weights(c, 1.0 if cfg.class_weights == "inverse" else 0.5, cfg.class_weight_cap)
                       for c in class_counts]
        if cfg.logit_adjustment == "train" and class_counts is not None:
            shift = [cfg.logit_adjustment_tau * log_prior(c) for c in class_counts]
        return cls(taxonomy.ranks, cfg.label_smoothing, resolve_rank_weights(cfg, taxonomy.ranks), soft, weights,
                   shift)

    def _one(self, r: int, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        known = y != NULL
        if not known.any():  # keep the graph connected so DDP sees a gradient for every head
            return logits.sum() * 0.0
        logits, y = logits[known].float(), y[known]
        if self.shifted:
            logits = logits + getattr(self, f"logit_shift{r}")
        if self.soft:
            per_record = -(getattr(self, f"targets{r}")[y] * F.log_softmax(logits, -1)).sum(-1)
        else:
            per_record = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing, reduction="none")
        if self.weighted:  # weights average 1 over the train split: the mean stays the weighted risk's estimate
            per_record = per_record * getattr(self, f"class_weights{r}")[y]
        return per_record.mean()

    def rank_losses(self, logits: dict[str, torch.Tensor], targets: torch.Tensor, partner: torch.Tensor | None = None,
                    lam: float = 1.0) -> list[torch.Tensor]:
        """Loss of each rank; with a mixup ``partner`` target, ``lam * L(targets) + (1 - lam) * L(partner)``."""
        out = []
        for r, rank in enumerate(self.ranks):
            part = self._one(r, logits[rank], targets[:, r])
            if partner is not None and lam < 1.0:
                part = lam * part + (1.0 - lam) * self._one(r, logits[rank], partner[:, r])
            out.append(part)
        return out

    def combine(self, parts: list[torch.Tensor], weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``loss`` (weighted sum) and ``<rank>/loss`` (detached) from per-rank losses."""
        w = self.weights if weights is None else weights
        out = {f"{rank}/loss": p.detach() for rank, p in zip(self.ranks, parts, strict=True)}
        out["loss"] = sum(wi * p for wi, p in zip(w, parts, strict=True))
        return out

    def forward(self, logits: dict[str, torch.Tensor], targets: torch.Tensor, partner: torch.Tensor | None = None,
                lam: float = 1.0) -> dict[str, torch.Tensor]:
        """``targets`` is ``[B, R]`` with ``NULL`` for unknown; returns ``loss`` and ``<rank>/loss``."""
        return self.combine(self.rank_losses(logits, targets, partner, lam))


def _mean_over_processes(x: torch.Tensor) -> torch.Tensor:
    """``x`` averaged over the processes of a DDP run (``x`` itself in one process): GradNorm's weights then move
    the same way in every process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        x = x.clone()
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x


class GradNorm(nn.Module):
    """Learnt rank weights that balance gradient norms at the last shared layer (Chen et al., ICML 2018).

    Each step: ``G_i = w_i * ||d L_i / d W||``; the weights move to shrink ``sum_i |G_i - mean(G) * r_i^alpha|``,
    where ``r_i`` is rank i's loss relative to its first value over the mean of those ratios; then they are rescaled
    to sum to the number of ranks. The network itself trains on ``sum_i w_i L_i`` with the weights held fixed.
    """

    def __init__(self, num_ranks: int, alpha: float = 1.5, lr: float = 0.025) -> None:
        super().__init__()
        self.alpha = alpha
        self.lr = lr
        # a buffer, not a parameter: the network's optimizer and DDP's gradient reduction must not touch it
        self.register_buffer("weights", torch.ones(num_ranks))
        self.register_buffer("initial", torch.zeros(num_ranks))
        self._optim: torch.optim.Optimizer | None = None  # Adam, as in the paper: steps do not scale with |grad|

    def step(self, parts: list[torch.Tensor], shared: torch.Tensor) -> torch.Tensor:
        """Update the weights from this batch's per-rank losses; returns the (detached) weights to use."""
        losses = _mean_over_processes(torch.stack([p.detach() for p in parts]))
        if not bool((self.initial > 0).all()):
            self.initial.copy_(torch.where(self.initial > 0, self.initial, losses.clamp_min(1e-8)))
        norms = []
        for p in parts:
            if p.requires_grad:
                g = torch.autograd.grad(p, shared, retain_graph=True, allow_unused=True)[0]
                norms.append(g.norm() if g is not None else shared.new_zeros(()))
            else:
                norms.append(shared.new_zeros(()))
        weights = self.weights.detach().requires_grad_(True)
        g_norm = weights * _mean_over_processes(torch.stack(norms).detach())
        ratio = losses / self.initial
        target = (g_norm.mean() * (ratio / ratio.mean()) ** self.alpha).detach()
        objective = (g_norm - target).abs().sum()
        (grad,) = torch.autograd.grad(objective, weights)
        if self._optim is None or self._optim.param_groups[0]["params"][0] is not self.weights:
            self._optim = torch.optim.Adam([self.weights], lr=self.lr)  # (again after .to() replaced the buffer)
        self.weights.grad = grad
        self._optim.step()
        self.weights.grad = None
        with torch.no_grad():
            self.weights.clamp_(min=1e-3)
            self.weights *= len(self.weights) / self.weights.sum()
        return self.weights.detach().clone()
