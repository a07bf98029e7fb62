"""Image decoding, torchvision v2 transforms and the Dataset over a store's split.

Resizing keeps the aspect ratio and pads to a square: elongated organisms (chaetognaths, diatom chains) must not
be squashed into blobs.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from taxotrain.config import AugmentConfig
from taxotrain.data.store import Store
from taxotrain.data.verify import to_8bit


def decode(data: np.ndarray | bytes, channels: int) -> torch.Tensor:
    """Decode encoded image bytes to a uint8 tensor ``[channels, H, W]``."""
    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return decode_image(buf, mode=ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB)


def read_image_file(path: Path, channels: int) -> torch.Tensor:
    """Decode an image file to uint8 ``[channels, H, W]``; formats torchvision cannot read go through PIL.

    Raises ``ValueError`` with a short reason for an empty, truncated or non-image file.
    """
    data = Path(path).read_bytes()
    if not data:
        raise ValueError("empty file (0 bytes)")
    try:
        return decode(data, channels)
    except RuntimeError:
        pass
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            img = to_8bit(img) if img.mode not in ("L", "RGB") else img
            arr = np.asarray(img.convert("L" if channels == 1 else "RGB"))
    except UnidentifiedImageError as exc:
        raise ValueError("not an image (unrecognised format)") from exc
    except (OSError, SyntaxError) as exc:
        raise ValueError("truncated image" if "truncated" in str(exc).lower() else f"cannot decode: {exc}") from exc
    tensor = torch.from_numpy(arr.copy())
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


class PadToSquare(torch.nn.Module):
    """Pad the shorter side (both ends equally) so the image is square; ``fill`` is ``"edge"`` or a pixel value."""

    def __init__(self, fill: str | int = "edge") -> None:
        super().__init__()
        self.fill = fill

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        if h == w:
            return img
        d = abs(h - w)
        a, b = d // 2, d - d // 2
        padding = [a, 0, b, 0] if h > w else [0, a, 0, b]  # left, top, right, bottom
        if self.fill == "edge":
            return TF.pad(img, padding, padding_mode="edge")
        return TF.pad(img, padding, fill=int(self.fill))


class RandomRot90(torch.nn.Module):
    """Rotate a square image by a random multiple of 90 degrees (exact, no interpolation)."""

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        k = int(torch.randint(4, ()).item())
        return torch.rot90(img, k, dims=(-2, -1)) if k else img


def build_transforms(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    train: bool,
    augment: AugmentConfig | None = None,
    pad_fill: str = "edge",
) -> v2.Compose:
    """Transforms from a decoded uint8 image to a normalised float tensor ``[C, image_size, image_size]``."""
    fill: str | int = {"edge": "edge", "zero": 0}.get(pad_fill, round(float(np.mean(mean)) * 255))
    steps: list[Any] = [v2.Resize(size=None, max_size=image_size, antialias=True), PadToSquare(fill),
                        v2.Resize([image_size, image_size], antialias=True)]  # guards against 1-px rounding
    if train and augment is not None:
        if augment.hflip:
            steps.append(v2.RandomHorizontalFlip(augment.hflip))
        if augment.vflip:
            steps.append(v2.RandomVerticalFlip(augment.vflip))
        if augment.rot90:
            steps.append(RandomRot90())
        rot_fill = 0 if fill == "edge" else fill
        if augment.rotate_degrees:
            steps.append(v2.RandomRotation(augment.rotate_degrees, fill=rot_fill))
        if augment.policy == "randaugment":
            steps.append(v2.RandAugment(magnitude=augment.magnitude, fill=rot_fill))
        elif augment.policy == "trivialaugment":
            steps.append(v2.TrivialAugmentWide(fill=rot_fill))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if train and augment is not None and augment.random_erasing:
        steps.append(v2.RandomErasing(augment.random_erasing, value=0))
    return v2.Compose(steps)


class ImageStoreDataset(Dataset):
    """Records of one split of a store: ``(image tensor, label indices per rank)``; nulls are ``-1``."""

    def __init__(self, store: Store, indices: np.ndarray, transform: v2.Compose, channels: int,
                 labels: np.ndarray | None = None) -> None:
        self.store = store
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform
        self.channels = channels
        self.labels = store.labels if labels is None else labels  # [N_store, R]; a copy when labels are hidden

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = int(self.indices[i])
        img = decode(self.store.record_bytes(idx), self.channels)
        return self.transform(img), torch.from_numpy(self.labels[idx])
