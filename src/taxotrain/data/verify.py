"""Decode every image once: keep those the training decoder reads, explain the rest.

``prepare`` runs this in worker processes; each result carries the bytes to store and the pixel sums for the
train-split statistics. ``predict`` decodes its files through the same function, so it sees the pixels training saw
(alpha, palette, CMYK and 16-bit images included) and refuses the same files.
"""

from __future__ import annotations

import io
import re
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


# Largest image accepted, checked from the header before anything is decoded (Pillow's own decompression-bomb
# limit). A file that claims more (a crafted 69-byte PNG can claim 100,000 x 100,000 px) is refused, not decoded.
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS


def verify_image(path: Path) -> Verified:
    """Read and fully decode ``path``; never raises."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return Verified(False, f"unreadable: {exc.strerror or exc}")
    return verify_bytes(raw)


def verify_bytes(raw: bytes, stats: bool = True) -> Verified:
    """Decode an encoded image the one way taxotrain does, for ``prepare`` and ``predict`` alike; never raises.

    The header's size is checked first (at most ``MAX_PIXELS``); then Pillow decodes it fully (a truncated file is
    refused). JPEG and PNG files in greyscale or RGB are kept as they are; any other format or mode (palette,
    alpha, CMYK, 16-bit) is converted to 8-bit greyscale or RGB as :func:`to_8bit` says and re-encoded losslessly
    as PNG. ``Verified.data`` is what the store holds and what the training decoder reads. With ``stats`` the pixel
    sums for the train-split statistics are computed too.
    """
    if not raw:
        return Verified(False, "empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(raw)) as img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                return Verified(False, f"header claims {width * height:,} px ({width} x {height}), above the "
                                f"{MAX_PIXELS:,} px limit (a corrupt or crafted file?)")
            fmt = img.format
            img.load()
            pil_mode = img.mode
            if pil_mode not in ("L", "RGB"):
                img = to_8bit(img)
            rgb = np.asarray(img.convert("RGB"))
    except UnidentifiedImageError:
        return Verified(False, "not an image (unrecognised format)")
    except Image.DecompressionBombError as exc:  # Pillow checks the header's size as it opens the file
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(claimed.group(1)):,} px" if claimed else "too many pixels"
        return Verified(False, f"header claims {size}, above the {MAX_PIXELS:,} px limit (a corrupt or crafted file?)")
    except (OSError, SyntaxError, ValueError) as exc:
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
    is_gray = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
    if not stats:
        return Verified(True, "", data, len(data), rgb.shape[0], rgb.shape[1], is_gray)
    px = rgb.reshape(-1, 3).astype(np.float64) / 255.0
    gray_px = px @ GRAY_WEIGHTS
    sums = np.concatenate([px.sum(0), [gray_px.sum()]])
    sq = np.concatenate([(px**2).sum(0), [(gray_px**2).sum()]])
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
