"""Test-time views of an image batch (numpy only, so that command-line parsers can list them without Pillow)."""

from __future__ import annotations

import numpy as np

TTA_VIEWS = {"none": 1, "flip": 2, "dihedral": 8}  # test-time view sets: name -> number of views averaged


def views(batch: np.ndarray, tta: str) -> list[np.ndarray]:
    """Test-time views of a batch ``[B, C, H, W]``: itself, + horizontal flip, or all 8 flips/90-degree rotations."""
    if tta not in TTA_VIEWS:
        raise ValueError(f"--tta {tta!r}: choose one of {', '.join(TTA_VIEWS)}")
    if tta == "none":
        return [batch]
    if tta == "flip":
        return [batch, batch[..., ::-1]]
    return [np.rot90(v, k, axes=(-2, -1)) for v in (batch, batch[..., ::-1]) for k in range(4)]
