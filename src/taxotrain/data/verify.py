"""Decode every image once: keep those the training decoder reads, explain the rest.

Runs in worker processes; each result carries the bytes to store and the pixel sums for the train-split statistics.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_image

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


def verify_image(path: Path) -> Verified:
    """Read and fully decode ``path``; never raises."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return Verified(False, f"unreadable: {exc.strerror or exc}")
    if not raw:
        return Verified(False, "empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(raw)) as img:
            fmt = img.format
            img.load()
            pil_mode = img.mode
            if pil_mode not in ("L", "RGB"):
                img = to_8bit(img)
            rgb = np.asarray(img.convert("RGB"))
    except UnidentifiedImageError:
        return Verified(False, "not an image (unrecognised format)")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        text = str(exc)
        reason = "truncated image" if "truncated" in text.lower() else f"cannot decode: {text}"
        return Verified(False, reason)
    if rgb.size == 0 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        return Verified(False, "image has no pixels")
    data = raw if fmt in RAW_FORMATS and pil_mode in ("L", "RGB") else b""
    if data and not _torchvision_reads(data):
        data = b""
    if not data:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG")
        data = buf.getvalue()
    px = rgb.reshape(-1, 3).astype(np.float64) / 255.0
    gray_px = px @ GRAY_WEIGHTS
    sums = np.concatenate([px.sum(0), [gray_px.sum()]])
    sq = np.concatenate([(px**2).sum(0), [(gray_px**2).sum()]])
    is_gray = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
    return Verified(True, "", data, len(data), rgb.shape[0], rgb.shape[1], is_gray, px.shape[0], sums, sq)


def to_8bit(img: Image.Image) -> Image.Image:
    """8-bit L or RGB version of any PIL image: 16-bit/float stretched to 0-255, alpha composited on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "P", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _torchvision_reads(data: bytes) -> bool:
    try:
        decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        return True
    except RuntimeError:
        return False
