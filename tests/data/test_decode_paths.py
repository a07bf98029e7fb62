"""prepare and predict decode every image the same way: alpha, palette, CMYK and 16-bit images give the pixels
training saw, and files whose header claims an absurd size are refused before anything is decoded."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from taxotrain.data.images import decode_bytes
from taxotrain.data.prepare import prepare_images
from taxotrain.data.store import Store
from taxotrain.data.verify import MAX_PIXELS, verify_bytes
from taxotrain_runtime.images import ImageRefused, load_image


def crafted_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` px (the file that crashed libpng through torchvision)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 8)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) is patched to claim ``width`` x ``height`` px."""
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 128, dtype=np.uint8)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _images(root: Path) -> dict[str, Path]:
    """Images in the modes that used to decode differently in prepare and predict, in two class folders."""
    rng = np.random.default_rng(0)
    out = {}
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / cls / f"plain{i}.png")
    rgba = rng.integers(0, 256, (20, 24, 4), dtype=np.uint8)
    rgba[:10, :, 3] = 0  # transparent rows, with coloured pixels under them
    Image.fromarray(rgba, mode="RGBA").save(out.setdefault("rgba", root / "a" / "rgba.png"))
    pal = Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).convert("P")
    pal.info["transparency"] = 0
    pal.save(out.setdefault("palette", root / "a" / "palette.png"), transparency=0)
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).convert("CMYK").save(
        out.setdefault("cmyk", root / "b" / "cmyk.jpg"))
    Image.fromarray(rng.integers(1000, 3000, (20, 24)).astype(np.uint16)).save(out.setdefault("deep", root / "b" /
                                                                                              "deep.png"))
    return out


def predicted_on(path: Path, channels: int) -> torch.Tensor:
    """What predict (and an exported bundle) decodes: the runtime's load_image, as ``[C, H, W]``."""
    return torch.from_numpy(load_image(path, channels)).permute(2, 0, 1)


@pytest.mark.parametrize("channels", [1, 3])
def test_predict_reads_every_mode_as_prepare_stored_it(tmp_path: Path, channels: int) -> None:
    files = _images(tmp_path / "imgs")
    colour_jpeg = tmp_path / "imgs" / "a" / "colour.jpg"  # decoded to grey the way libjpeg does for training
    Image.fromarray(np.kron(np.random.default_rng(1).integers(0, 256, (5, 6, 3)), np.ones((4, 4, 1))).astype(
        np.uint8)).save(colour_jpeg)
    files["colour_jpeg"] = colour_jpeg
    prepare_images(tmp_path / "imgs", tmp_path / "s.h5", ["class"], workers=1, progress=False)
    store = Store(tmp_path / "s.h5")
    for name, path in files.items():
        trained_on = decode_bytes(store.read(store.paths.index(path.relative_to(tmp_path / "imgs").as_posix())),
                                  channels)
        seen = predicted_on(path, channels)
        assert seen.dtype == trained_on.dtype == torch.uint8 and seen.shape == trained_on.shape, name
        # the same pixels; a colour PNG read as grey differs by libpng's and Pillow's rounding of the luma
        assert (seen.int() - trained_on.int()).abs().max() <= (1 if channels == 1 else 0), name
    rgba = predicted_on(files["rgba"], 3)
    assert (rgba[:, :10] == 255).all()  # transparent pixels composited onto white, not the colours under them


@pytest.mark.parametrize("make, claim", [(crafted_png, (100_000, 100_000)), (jpeg_claiming, (20_000, 20_000))])
def test_a_header_claiming_too_many_pixels_is_refused_before_decoding(make, claim: tuple[int, int],
                                                                      tmp_path: Path) -> None:
    raw = make(*claim)
    assert len(raw) < 2_000
    result = verify_bytes(raw)
    assert not result.ok and f"claims {claim[0] * claim[1]:,} px" in result.reason
    assert f"{MAX_PIXELS:,}" in result.reason
    (tmp_path / "big.bin").write_bytes(raw)
    with pytest.raises(ImageRefused, match="above the"):
        load_image(tmp_path / "big.bin", 3)
