"""Decode every image once: keep those the training decoder reads, explain the rest.

``prepare`` runs this in worker processes; each result carries the bytes to store and the pixel sums for the
train-split statistics. It opens images with :func:`taxotrain_runtime.images.open_image`, as evaluate, predict and
exported bundles do, so all of them refuse the same files and convert alpha, palette, CMYK and 16-bit images alike.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image

from taxotrain.data.duplicates import fingerprint
from taxotrain_runtime.images import MAX_PIXELS, ImageRefused, open_image, to_8bit

__all__ = ["MAX_PIXELS", "Verified", "to_8bit", "verify_bytes", "verify_image"]

# Formats stored as they are; anything else is re-encoded losslessly as PNG so training can decode it quickly.
RAW_FORMATS = {"JPEG", "PNG"}
GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114])


@dataclass
class Verified:
    """Outcome of verifying one file."""

    ok: bool
    reason: str = ""
    data: bytes = b""
    nbytes: int = 0
    height: int = 0
    width: int = 0
    gray: bool = False
    pixels: int = 0
    sums: np.ndarray | None = None  # [4]: R, G, B, grey sums of values in [0, 1]
    sq_sums: np.ndarray | None = None
    phash: tuple[int, ...] = ()  # perceptual hash (uint64 words) and pixel digest: the leak check (data/duplicates)
    digest: str = ""


def verify_image(path: str | Path) -> Verified:
    """Read and fully decode ``path``; never raises."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        return Verified(False, f"unreadable: {exc.strerror or exc}")
    return verify_bytes(raw)


def verify_bytes(raw: bytes) -> Verified:
    """Decode an encoded image the one way taxotrain does (:func:`taxotrain_runtime.images.open_image`: header size
    checked first, full decode, any mode to 8-bit L or RGB); never raises.

    JPEG and PNG files in greyscale or RGB are kept as they are; any other format or mode is re-encoded losslessly
    as PNG. ``Verified.data`` is what the store holds and the training decoder reads; the pixel sums are for the
    train-split statistics.
    """
    try:
        img, fmt, pil_mode = open_image(raw)
    except ImageRefused as exc:
        return Verified(False, str(exc))
    rgb = np.asarray(img.convert("RGB"))
    data = raw if fmt in RAW_FORMATS and pil_mode in ("L", "RGB") else b""
    if data and not _torchvision_reads(data):
        data = b""
    if not data:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG")
        data = buf.getvalue()
    is_gray = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
    px = rgb.reshape(-1, 3).astype(np.float64) / 255.0
    gray_px = px @ GRAY_WEIGHTS
    sums = np.concatenate([px.sum(0), [gray_px.sum()]])
    sq = np.concatenate([(px**2).sum(0), [(gray_px**2).sum()]])
    phash, digest = fingerprint(img, rgb)
    return Verified(True, "", data, len(data), rgb.shape[0], rgb.shape[1], is_gray, px.shape[0], sums, sq, phash,
                    digest)


def _torchvision_reads(data: bytes) -> bool:
    try:
        decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        return True
    except RuntimeError:
        return False
