"""Transforms keep the aspect ratio (pad, never squash); decoding of odd files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from taxotrain.config import AugmentConfig
from taxotrain.data.images import PadToSquare, build_transforms, read_image_file


def _extent(x: torch.Tensor) -> tuple[int, int]:
    mask = x[0] > 0.5
    rows, cols = np.flatnonzero(mask.any(1).numpy()), np.flatnonzero(mask.any(0).numpy())
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def test_elongated_organism_keeps_its_aspect() -> None:
    img = torch.zeros(1, 20, 80, dtype=torch.uint8)
    img[:, 5:15, 10:70] = 255  # a 10 x 60 bar
    out = build_transforms(48, [0.0], [1.0], train=False, pad_fill="zero")(img)
    assert out.shape == (1, 48, 48)
    h, w = _extent(out)
    assert abs(w / h - 6.0) < 1.0, f"bar squashed to {h}x{w}"


def test_random_train_transforms_keep_shape_and_aspect() -> None:
    torch.manual_seed(0)
    img = torch.zeros(1, 30, 90, dtype=torch.uint8)
    img[:, 10:20, 10:80] = 255
    tf = build_transforms(48, [0.0], [1.0], train=True, augment=AugmentConfig(), pad_fill="zero")
    for _ in range(8):
        out = tf(img)
        h, w = _extent(out)
        assert out.shape == (1, 48, 48) and max(h, w) / min(h, w) > 4  # flips/rot90 never squash


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment"])
def test_policies_and_erasing_run(policy: str) -> None:
    img = torch.randint(0, 255, (3, 40, 30), dtype=torch.uint8)
    aug = AugmentConfig(policy=policy, random_erasing=1.0, rotate_degrees=15)
    out = build_transforms(32, [0.5] * 3, [0.25] * 3, train=True, augment=aug)(img)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32


def test_pad_to_square_edge_repeats_border() -> None:
    img = torch.tensor([[[1, 2, 3, 4]]], dtype=torch.uint8).expand(1, 2, 4).clone()
    out = PadToSquare("edge")(img)
    assert out.shape == (1, 4, 4) and torch.equal(out[0, 0], img[0, 0]) and torch.equal(out[0, -1], img[0, -1])


def test_read_image_file_handles_tiff_16bit_and_errors(tmp_path: Path) -> None:
    arr = (np.arange(64 * 32, dtype=np.uint16).reshape(32, 64) * 30)
    Image.fromarray(arr).save(tmp_path / "deep.tif")
    x = read_image_file(tmp_path / "deep.tif", 1)
    assert x.shape == (1, 32, 64) and x.dtype == torch.uint8 and x.max() == 255
    assert read_image_file(tmp_path / "deep.tif", 3).shape == (3, 32, 64)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        read_image_file(tmp_path / "empty.png", 1)
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(ValueError, match="not an image"):
        read_image_file(tmp_path / "text.jpg", 1)
