"""Metadata masking during training (as Linnaeus does): hide all of a record's metadata, or single components.

Early in training a model that sees place and date learns them before the image and leans on them; at prediction
time they may be missing. So during training each record's metadata is hidden entirely with a probability that falls
*linearly* from ``start`` to ``end`` over the first ``fraction`` of the training steps and stays at ``end`` after
(linear rather than cosine: the rate at any step is obvious from the config, and the two differ little over so short
a ramp). A record that keeps its metadata then loses each component on its own with that component's ``partial``
probability, so the model also learns to do without any one of them. Call it in training only; evaluation sees the
metadata as it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from taxotrain.models.metadata import MetadataError


def _probability(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise MetadataError(f"metadata masking {name} must be a probability in [0, 1]; got {value!r}")


@dataclass(frozen=True)
class MetadataMasking:
    """The schedule and its application: ``apply(masks, progress, generator)`` -> new validity masks.

    ``start``, ``end``: probability of hiding all of a record's metadata at the first step and from ``fraction`` of
    the training on. ``partial``: probability of hiding one component alone, the same for all (a float) or per
    component name (a mapping; a component it does not name is never hidden alone).
    """

    start: float = 1.0
    end: float = 0.05
    fraction: float = 0.3
    partial: float | Mapping[str, float] = 0.1

    def __post_init__(self) -> None:
        for name in ("start", "end", "fraction"):
            _probability(name, getattr(self, name))
        for name, p in self._partials().items():
            _probability(f"partial for {name}", p)

    def _partials(self) -> dict[str, float]:
        return dict(self.partial) if isinstance(self.partial, Mapping) else {"all components": self.partial}

    def full_probability(self, progress: float) -> float:
        """Probability of hiding all of a record's metadata at ``progress`` (0 = first step, 1 = last)."""
        progress = max(progress, 0.0)
        if progress >= self.fraction:  # also every step when fraction is 0: no ramp
            return self.end
        return self.start + (self.end - self.start) * progress / self.fraction

    def partial_probability(self, name: str) -> float:
        """Probability of hiding component ``name`` alone, in a record that keeps its metadata."""
        if isinstance(self.partial, Mapping):
            return float(self.partial.get(name, 0.0))
        return float(self.partial)

    def apply(self, masks: Mapping[str, torch.Tensor], progress: float,
              generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """New validity masks (``{component: bool [B]}``, True = present): each is False where the input was False
        or the schedule hides it. Draws the same random numbers whatever the masks hold, so a seeded ``generator``
        gives the same masking for the same batch sizes."""
        if not masks:
            return {}
        first = next(iter(masks.values()))
        size, device = first.shape[0], first.device
        draw_on = generator.device if generator is not None else device

        def draw() -> torch.Tensor:
            return torch.rand(size, generator=generator, device=draw_on).to(device)

        hidden = draw() < self.full_probability(progress)
        return {name: mask.to(torch.bool) & ~(hidden | (draw() < self.partial_probability(name)))
                for name, mask in masks.items()}
