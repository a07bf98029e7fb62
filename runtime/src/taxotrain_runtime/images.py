"""Reading an image the one way taxotrain does, and preparing it for a model: the code that ``prepare``, evaluation,
``predict`` and an exported bundle all use, so each sees the same pixels.

- :func:`open_image`: the header's size is checked before anything is decoded, the file is decoded in full (a
  truncated one is refused) and any mode (palette, alpha, CMYK, 16-bit) becomes 8-bit greyscale or RGB
  (:func:`to_8bit`: alpha composited onto white, 16-bit stretched to its own range).
- :func:`load_image`: that image as a ``uint8`` array ``[H, W, C]`` with 1 or 3 channels.
- :func:`resize_pad`: the longer side resized to the model's size (aspect kept, antialiased), the shorter side padded
  to a square. (The test-time flips and turns are in :mod:`taxotrain_runtime.views`.)

Normalisation (mean/std) is the model's first step: in an exported bundle it is inside the graph, so raw pixel values
go in.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# Largest image accepted (Pillow's decompression-bomb limit), checked from the header before decoding: a file that
# claims more (a crafted 69-byte PNG can claim 100,000 x 100,000 px) is refused, not decoded.
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp"}


class ImageRefused(ValueError):
    """A file that is not an image taxotrain reads; the message is the reason, in a few words."""


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


def open_image(raw: bytes, gray: bool = False) -> tuple[Image.Image, str | None, str]:
    """Decode encoded image bytes to an 8-bit L or RGB PIL image; returns it with the file's format and original
    mode. With ``gray`` a JPEG is decoded straight to its luma, as libjpeg (and so torchvision, which training
    decodes with) does. Raises :class:`ImageRefused` with the reason for an empty, oversized, truncated or non-image
    file."""
    if not raw:
        raise ImageRefused("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(raw)) as img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise ImageRefused(f"header claims {width * height:,} px ({width} x {height}), above the "
                                   f"{MAX_PIXELS:,} px limit (a corrupt or crafted file?)")
            fmt, mode = img.format, img.mode
            if gray and fmt == "JPEG" and mode in ("RGB", "L"):
                img.draft("L", img.size)
            img.load()
            out = img if mode in ("L", "RGB") else to_8bit(img)
            if out is img:
                out = img.copy()
    except UnidentifiedImageError as exc:
        raise ImageRefused("not an image (unrecognised format)") from exc
    except Image.DecompressionBombError as exc:  # Pillow checks the header's size as it opens the file
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(claimed.group(1)):,} px" if claimed else "too many pixels"
        raise ImageRefused(f"header claims {size}, above the {MAX_PIXELS:,} px limit (a corrupt or crafted "
                           "file?)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageRefused):
            raise
        text = str(exc)
        raise ImageRefused("truncated image" if "truncated" in text.lower() else f"cannot decode: {text}") from exc
    if out.size[0] == 0 or out.size[1] == 0:
        raise ImageRefused("image has no pixels")
    return out, fmt, mode


def load_image(source: str | Path | bytes | np.ndarray, channels: int) -> np.ndarray:
    """An image file (or its bytes) as ``uint8`` ``[H, W, channels]``: greyscale for 1 channel, RGB for 3 (a
    writable array of its own)."""
    raw = Path(source).read_bytes() if isinstance(source, str | Path) else bytes(source)
    img, _, _ = open_image(raw, gray=channels == 1)
    arr = np.array(img.convert("L" if channels == 1 else "RGB"))
    return arr[:, :, None] if arr.ndim == 2 else arr


def resize_pad(image: np.ndarray, size: int, fill: str | int = "edge") -> np.ndarray:
    """Resize ``uint8`` ``[H, W, C]`` so its longer side is ``size`` (aspect kept; Pillow's antialiased bilinear
    filter), then pad the shorter side on both ends to a ``size`` x ``size`` square: ``fill`` is ``"edge"`` (repeat
    the border) or a pixel value. Elongated organisms are never squashed."""
    h, w = image.shape[:2]
    short = max(1, int(size * min(h, w) / max(h, w)))  # as torchvision sizes it for training
    new_h, new_w = (size, short) if h > w else (short, size) if w > h else (size, size)
    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    resized = np.asarray(pil.resize((new_w, new_h), Image.BILINEAR))
    resized = resized[:, :, None] if resized.ndim == 2 else resized
    pad = [(0, 0), (0, 0), (0, 0)]
    gap = size - min(new_h, new_w)
    pad[0 if new_h < new_w else 1] = (gap // 2, gap - gap // 2)
    if fill == "edge":
        return np.pad(resized, pad, mode="edge")
    return np.pad(resized, pad, mode="constant", constant_values=int(fill))


def pad_value(fill: str, mean: list[float] | tuple[float, ...]) -> str | int:
    """The pixel value of ``data.pad_fill``: ``edge`` as it is, ``zero`` 0, ``mean`` the dataset mean (0-255)."""
    return {"edge": "edge", "zero": 0}.get(fill, round(float(np.mean(mean)) * 255))


def find_images(inputs: list[str | Path] | tuple[str | Path, ...]) -> list[Path]:
    """Files given directly, plus image files found recursively (sorted, hidden ones skipped) under given folders.
    Raises ``FileNotFoundError`` for a path that does not exist."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                            and not any(part.startswith(".") for part in f.relative_to(p).parts))
        elif p.exists():
            found.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder to predict")
    return found
