"""Taxonomy-aware mixup/cutmix: mix an input with a partner from the same node at a chosen rank, or with anyone.

Cutmix pastes a box of the partner's pixels into an image, or a window of the partner's samples into a series.

timm's ``Mixup`` pairs a batch with its reverse and mixes one-hot targets of a single label; here targets are label
indices at several ranks (with nulls) and partners may be restricted to the same genus, so the loss is taken as
``lam * L(y) + (1 - lam) * L(y_partner)`` by ``MultiRankLoss``.
"""

from __future__ import annotations

import numpy as np
import torch

from taxotrain.config import ConfigError, MixConfig
from taxotrain.taxonomy import NULL


def partners(labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random partner index for each row among the rows with the same label; unknown (``NULL``) rows keep
    themselves. ``labels`` is ``[B]``."""
    b = len(labels)
    out = torch.arange(b)
    known = labels != NULL
    for value in torch.unique(labels[known]):
        idx = torch.nonzero(labels == value).flatten()
        out[idx] = idx[torch.randperm(len(idx), generator=generator)]
    return out


class TaxonomyMixer:
    """Mixes a batch per the ``mix`` config; ``within`` names the rank whose node partners must share."""

    def __init__(self, cfg: MixConfig, ranks: list[str]) -> None:
        if cfg.within is not None and cfg.within not in ranks:
            raise ConfigError(f"bad value for 'mix.within': {cfg.within!r} is not a rank; the ranks are "
                              f"{', '.join(ranks)}")
        self.cfg = cfg
        self.rank = ranks.index(cfg.within) if cfg.within is not None else None

    @property
    def enabled(self) -> bool:
        """Whether any mixing is configured."""
        return (self.cfg.mixup_alpha > 0 or self.cfg.cutmix_alpha > 0) and self.cfg.prob > 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        """Returns (mixed images, partner targets or None, lam)."""
        if not self.enabled or float(torch.rand(())) >= self.cfg.prob:
            return x, None, 1.0
        perm = torch.randperm(len(x)) if self.rank is None else partners(y[:, self.rank].cpu())
        perm = perm.to(x.device)
        use_cutmix = self.cfg.cutmix_alpha > 0 and (self.cfg.mixup_alpha == 0 or float(torch.rand(())) < 0.5)
        alpha = self.cfg.cutmix_alpha if use_cutmix else self.cfg.mixup_alpha
        lam = float(np.random.beta(alpha, alpha))
        if use_cutmix:
            x, lam = _cutmix(x, perm, lam)
        else:
            x = lam * x + (1.0 - lam) * x[perm]
        return x, y[perm], lam


def _cutmix(x: torch.Tensor, perm: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
    """Paste the partners' pixels into a random box (images ``[B, C, H, W]``: an area of ``1 - lam``) or the partners'
    samples into a random window of time (series ``[B, C, L]``: a length of ``1 - lam``); returns the mixed batch
    and the kept fraction."""
    x = x.clone()
    if x.ndim == 3:
        length = x.shape[-1]
        cut = int(length * (1.0 - lam))
        centre = int(torch.randint(length, ()))
        t0, t1 = max(centre - cut // 2, 0), min(centre + cut - cut // 2, length)
        x[..., t0:t1] = x[perm][..., t0:t1]
        return x, 1.0 - (t1 - t0) / length
    h, w = x.shape[-2:]
    cut = np.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    x[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    return x, 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
