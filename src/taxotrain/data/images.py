"""Image decoding, torchvision v2 transforms and the Dataset over a store's split.

Resizing keeps the aspect ratio and pads to a square: elongated organisms (chaetognaths, diatom chains) must not
be squashed into blobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from taxotrain.config import AugmentConfig
from taxotrain.data.store import Store
from taxotrain_runtime.images import load_image, pad_value, resize_pad
from taxotrain_runtime.views import TTA_VIEWS


def decode_bytes(data: np.ndarray | bytes, channels: int) -> torch.Tensor:
    """Decode encoded image bytes to a uint8 tensor ``[channels, H, W]``."""
    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return decode_image(buf, mode=ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB)


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
        if self.fill == "edge":  # repeat the border by indexing: exact, and cheaper than a padding kernel
            dim = -1 if h > w else -2
            n = img.shape[dim]
            return img.index_select(dim, torch.arange(-a, n + b, device=img.device).clamp_(0, n - 1))
        padding = [a, 0, b, 0] if h > w else [0, a, 0, b]  # left, top, right, bottom
        return TF.pad(img, padding, fill=int(self.fill))


class ResizePad(torch.nn.Module):
    """Resize so the longer side is ``size`` (aspect ratio kept, antialiased), then pad to ``size`` x ``size``."""

    def __init__(self, size: int, fill: str | int = "edge") -> None:
        super().__init__()
        self.size = size
        self.pad = PadToSquare(fill)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        img = self.pad(TF.resize(img, None, max_size=self.size, antialias=True))
        if img.shape[-1] != self.size:  # guards against 1-px rounding
            img = TF.resize(img, [self.size, self.size], antialias=True)
        return img


class RandomDihedral(torch.nn.Module):
    """Random horizontal flip (probability ``hflip``), vertical flip (``vflip``) and, if ``rot90``, rotation by a
    random multiple of 90 degrees of a square image: exact (no interpolation), drawn and applied in one step."""

    def __init__(self, hflip: float = 0.5, vflip: float = 0.5, rot90: bool = True) -> None:
        super().__init__()
        self.hflip, self.vflip, self.rot90 = hflip, vflip, rot90

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        u = torch.rand(3).tolist()
        dims = [d for d, flip in ((-1, u[0] < self.hflip), (-2, u[1] < self.vflip)) if flip]
        if dims:
            img = torch.flip(img, dims)
        k = int(u[2] * 4) if self.rot90 else 0
        return torch.rot90(img, k, dims=(-2, -1)) if k else img


class ToNormalizedFloat(torch.nn.Module):
    """Integer image ``[C, H, W]`` to float32 on the 0-1 scale (divided by its dtype's maximum, 255 for uint8),
    normalised with per-channel ``mean``/``std``: what ``v2.ToDtype(float32, scale=True)`` then
    ``v2.Normalize(mean, std)`` compute, in one pass over the pixels. A float image is taken as 0-1 already and is
    not modified in place."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(-1, 1, 1), persistent=False)
        self.register_buffer("shift", self.mean * 255.0, persistent=False)  # the uint8 case, precomputed
        self.register_buffer("scale", 1.0 / (self.std * 255.0), persistent=False)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.is_floating_point():
            return (img.to(torch.float32) - self.mean) / self.std
        if img.dtype == torch.uint8:
            return img.to(torch.float32).sub_(self.shift).mul_(self.scale)
        top = float(torch.iinfo(img.dtype).max)  # e.g. 65535 for a 16-bit PNG decoded as uint16
        return img.to(torch.float32).sub_(self.mean * top).div_(self.std * top)


def build_transforms(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    train: bool,
    augment: AugmentConfig | None = None,
    pad_fill: str = "edge",
) -> v2.Compose:
    """Transforms from a decoded image (uint8, or uint16 from a 16-bit PNG) to a normalised float tensor
    ``[C, image_size, image_size]``.

    The fixed steps (resize and pad, flips and 90-degree turns, normalisation) are one module each, since on images
    this small each transform call costs more than its arithmetic; the optional ones are torchvision's.
    """
    fill = pad_value(pad_fill, mean)
    steps: list[Any] = [ResizePad(image_size, fill)]
    if train and augment is not None:
        if augment.hflip or augment.vflip or augment.rot90:
            steps.append(RandomDihedral(augment.hflip, augment.vflip, augment.rot90))
        rot_fill = 0 if fill == "edge" else fill
        if augment.rotate_degrees:
            steps.append(v2.RandomRotation(augment.rotate_degrees, fill=rot_fill))
        if augment.policy == "randaugment":
            steps.append(v2.RandAugment(magnitude=augment.magnitude, fill=rot_fill))
        elif augment.policy == "trivialaugment":
            steps.append(v2.TrivialAugmentWide(fill=rot_fill))
    steps.append(ToNormalizedFloat(mean, std))
    if train and augment is not None and augment.random_erasing:
        steps.append(v2.RandomErasing(augment.random_erasing, value=0))
    return v2.Compose(steps)


class InferenceImage:
    """What evaluate, predict and exported bundles feed a model: the image decoded by the runtime's code (Pillow),
    resized and padded by it (:func:`taxotrain_runtime.images.resize_pad`), as raw ``uint8`` ``[C, S, S]``; the
    model's first step normalises it. Takes a file's path or encoded bytes (a store record); picklable."""

    def __init__(self, channels: int, size: int, fill: str | int) -> None:
        self.channels, self.size, self.fill = channels, size, fill

    def __call__(self, source: Path | str | bytes | np.ndarray) -> torch.Tensor:
        image = resize_pad(load_image(source, self.channels), self.size, self.fill)
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()


class ImageFiles(Dataset):
    """Image files to predict: ``{"input": prepared uint8 image, "error": ""}``, or a blank input and the reason
    for a file that cannot be read (so one bad file never stops a batch)."""

    def __init__(self, files: list[Path], prepare: InferenceImage) -> None:
        self.files, self.prepare = files, prepare

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            return {"input": self.prepare(self.files[i]), "error": ""}
        except (OSError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            p = self.prepare
            return {"input": torch.zeros(p.channels, p.size, p.size, dtype=torch.uint8), "error": reason}


def image_norm(store: Store, channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (0-1 scale) of an image store's train split, for 1 (greyscale) or 3 input channels."""
    suffix = "gray" if channels == 1 else "rgb"
    return list(store.attrs[f"mean_{suffix}"]), list(store.attrs[f"std_{suffix}"])


class DecodeImage:
    """Encoded bytes from the store -> uint8 tensor ``[channels, H, W]`` (a picklable ``read`` for the dataset)."""

    def __init__(self, channels: int) -> None:
        self.channels = channels

    def __call__(self, data: np.ndarray) -> torch.Tensor:
        return decode_bytes(data, self.channels)


def tta_views(x: torch.Tensor, tta: str) -> list[torch.Tensor]:
    """Test-time views of an image batch ``[B, C, H, W]``: itself, + horizontal flip, or all 8 flips/90-degree
    rotations (the same views, in the same order, as :func:`taxotrain_runtime.views.views`)."""
    if tta not in TTA_VIEWS:
        raise ValueError(f"--tta {tta!r}: choose one of {', '.join(TTA_VIEWS)}")
    if tta == "none":
        return [x]
    if tta == "flip":
        return [x, x.flip(-1)]
    return [torch.rot90(v, k, dims=(-2, -1)) for v in (x, x.flip(-1)) for k in range(4)]


def trained_views(augment: AugmentConfig) -> str:
    """The test-time views a model trained with ``augment`` is invariant to: ``dihedral`` with both flips and
    90-degree rotations (the default for orientation-free organisms), ``flip`` with horizontal flips only."""
    if augment.rot90 and augment.hflip > 0 and augment.vflip > 0:
        return "dihedral"
    return "flip" if augment.hflip > 0 else "none"
