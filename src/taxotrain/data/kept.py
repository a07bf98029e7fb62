"""What ``prepare`` keeps of each accepted image once its bytes are in the spool file: a few numbers in typed arrays.

A verified image arrives from a worker as a :class:`~taxotrain.data.verify.Verified` object (its bytes, sizes, pixel
sums, hashes: about a kilobyte of Python objects). Keeping those for every image made a prepare's memory grow by
kilobytes per image; :class:`KeptImages` keeps the same facts in ``array`` columns (about 140 bytes per image) and
hands them out as NumPy arrays.
"""

from __future__ import annotations

from array import array

import numpy as np

from taxotrain.data.duplicates import WORDS
from taxotrain.data.verify import Verified

DIGEST_CHARS = 20  # data/duplicates.fingerprint's pixel digest: 20 hex characters


class KeptImages:
    """The accepted images of one prepare, in the order kept: their record index and verification facts."""

    def __init__(self) -> None:
        self._record = array("q")
        self._nbytes = array("q")
        self._height = array("i")
        self._width = array("i")
        self._gray = array("b")
        self._pixels = array("q")
        self._sums = array("d")  # 4 per image: R, G, B, grey sums of values in [0, 1]
        self._sq_sums = array("d")
        self._phash = array("Q")  # WORDS per image
        self._digests = bytearray()

    def add(self, record: int, v: Verified, nbytes: int) -> None:
        """Keep image ``record`` (its bytes, ``nbytes`` of them, are already in the spool)."""
        self._record.append(record)
        self._nbytes.append(nbytes)
        self._height.append(v.height)
        self._width.append(v.width)
        self._gray.append(int(v.gray))
        self._pixels.append(v.pixels)
        self._sums.extend(np.asarray(v.sums, dtype=np.float64).tolist())
        self._sq_sums.extend(np.asarray(v.sq_sums, dtype=np.float64).tolist())
        self._phash.extend(v.phash)
        self._digests += v.digest.encode("ascii").ljust(DIGEST_CHARS)[:DIGEST_CHARS]

    def __len__(self) -> int:
        return len(self._record)

    @property
    def records(self) -> np.ndarray:
        """Record index (into the ingested records) of each kept image."""
        return np.frombuffer(self._record, dtype=np.int64) if len(self) else np.zeros(0, np.int64)

    def column(self, name: str) -> np.ndarray:
        """``nbytes``, ``height``, ``width``, ``gray`` or ``pixels`` of every kept image."""
        arr = getattr(self, f"_{name}")
        return np.array(arr, dtype={"b": np.bool_}.get(arr.typecode))

    def phashes(self) -> np.ndarray:
        """Perceptual hashes ``[N, WORDS]`` uint64."""
        return np.array(self._phash, dtype=np.uint64).reshape(len(self), WORDS)

    def digests(self) -> np.ndarray:
        """Pixel digests ``[N]`` (fixed-width bytes; equal digests mean identical pixels)."""
        return np.frombuffer(bytes(self._digests), dtype=f"S{DIGEST_CHARS}")

    def channel_stats(self, rows: np.ndarray | None = None) -> dict[str, list[float]]:
        """Per-channel mean and std (0-1 scale) of RGB and grey over the images ``rows`` (default all)."""
        sums = np.array(self._sums, dtype=np.float64).reshape(-1, 4)
        sq = np.array(self._sq_sums, dtype=np.float64).reshape(-1, 4)
        pixels = np.array(self._pixels, dtype=np.float64)
        if rows is not None:
            sums, sq, pixels = sums[rows], sq[rows], pixels[rows]
        n = pixels.sum()
        mean = sums.sum(0) / n
        std = np.sqrt(np.maximum(sq.sum(0) / n - mean**2, 1e-12))
        return {"mean_rgb": mean[:3].tolist(), "std_rgb": std[:3].tolist(), "mean_gray": [float(mean[3])],
                "std_gray": [float(std[3])]}
