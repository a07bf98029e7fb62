"""What ``prepare`` keeps of each accepted image once its bytes are in the spool file: a few numbers, on disk.

A verified image arrives from a worker as a :class:`~taxotrain.data.verify.Verified` object (its bytes, sizes, pixel
sums, hashes: about a kilobyte of Python objects). :class:`KeptImages` packs the facts prepare needs later into one
fixed-width row per image (about 150 bytes) and appends it to a temporary file, so memory does not grow with the
corpus; the columns are read back a piece at a time, and only those that must be whole (record indices, sizes,
hashes for the leak check) become whole arrays.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from taxotrain.data.duplicates import WORDS
from taxotrain.data.verify import Verified

DIGEST_CHARS = 20  # data/duplicates.fingerprint's pixel digest: 20 hex characters
ROW = np.dtype([("record", "<i8"), ("nbytes", "<i8"), ("height", "<i4"), ("width", "<i4"), ("gray", "?"),
                ("pixels", "<i8"), ("sums", "<f8", (4,)), ("sq_sums", "<f8", (4,)), ("phash", "<u8", (WORDS,)),
                ("digest", f"S{DIGEST_CHARS}")])  # sums: R, G, B, grey sums of values in [0, 1]
READ_ROWS = 1 << 15  # rows read back per piece (about 5 MB)
BUFFER_ROWS = 1 << 10  # rows packed in memory before they are appended to the file


class KeptImages:
    """The accepted images of one prepare, in the order kept: their record index and verification facts."""

    def __init__(self, directory: str | Path | None = None) -> None:
        """``directory``: where the temporary file goes (default: the system's, ``$TMPDIR``)."""
        # unlinked at once, so nothing is left behind; closed by close() or when this object is collected
        self._file = tempfile.TemporaryFile(prefix="taxotrain-kept-", dir=directory)  # noqa: SIM115
        self._buffer = np.zeros(BUFFER_ROWS, dtype=ROW)
        self._buffered = 0
        self._rows = 0

    def add(self, record: int, v: Verified, nbytes: int) -> None:
        """Keep image ``record`` (its bytes, ``nbytes`` of them, are already in the spool)."""
        row = self._buffer[self._buffered]
        row["record"], row["nbytes"], row["height"], row["width"] = record, nbytes, v.height, v.width
        row["gray"], row["pixels"], row["sums"], row["sq_sums"] = v.gray, v.pixels, v.sums, v.sq_sums
        row["phash"] = v.phash
        row["digest"] = v.digest.encode("ascii")[:DIGEST_CHARS]
        self._buffered += 1
        self._rows += 1
        if self._buffered == BUFFER_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._buffered:
            self._file.write(self._buffer[: self._buffered].tobytes())
            self._buffered = 0
        self._file.flush()

    def __len__(self) -> int:
        return self._rows

    def pieces(self, fields: list[str]) -> Iterator[np.ndarray]:
        """The rows, READ_ROWS at a time, holding only ``fields``."""
        self._flush()
        self._file.seek(0)
        try:
            for start in range(0, self._rows, READ_ROWS):
                piece = np.frombuffer(self._file.read(min(READ_ROWS, self._rows - start) * ROW.itemsize), dtype=ROW)
                yield piece[fields]
        finally:
            self._file.seek(0, 2)

    def _whole(self, name: str) -> np.ndarray:
        dtype = ROW.fields[name][0]
        out = np.empty((self._rows, *dtype.shape), dtype=dtype.base)
        pos = 0
        for piece in self.pieces([name]):
            out[pos : pos + len(piece)] = piece[name]
            pos += len(piece)
        return out

    def record_at(self, i: int) -> int:
        """The ingested record index of kept image ``i``."""
        if self._rows - i <= self._buffered:  # still in the buffer
            return int(self._buffer[self._buffered - (self._rows - i)]["record"])
        self._flush()
        self._file.seek(int(i) * ROW.itemsize)
        value = int(np.frombuffer(self._file.read(ROW.itemsize), dtype=ROW)[0]["record"])
        self._file.seek(0, 2)
        return value

    def total_bytes(self) -> int:
        """The encoded bytes of every kept image."""
        return int(sum(int(piece["nbytes"].sum()) for piece in self.pieces(["nbytes"])))

    @property
    def records(self) -> np.ndarray:
        """Record index (into the ingested records) of each kept image."""
        return self._whole("record")

    def column(self, name: str) -> np.ndarray:
        """``nbytes``, ``height``, ``width``, ``gray`` or ``pixels`` of every kept image."""
        return self._whole(name)

    def all_gray(self) -> bool:
        """Whether every kept image is greyscale (read a piece at a time)."""
        return all(bool(piece["gray"].all()) for piece in self.pieces(["gray"]))

    def phashes(self) -> np.ndarray:
        """Perceptual hashes ``[N, WORDS]`` uint64."""
        return self._whole("phash").reshape(self._rows, WORDS)

    def digests(self) -> np.ndarray:
        """Pixel digests ``[N]`` (fixed-width bytes; equal digests mean identical pixels)."""
        return self._whole("digest")

    def channel_stats(self, rows: np.ndarray | None = None) -> dict[str, list[float]]:
        """Per-channel mean and std (0-1 scale) of RGB and grey over the images ``rows`` (default all), summed a
        piece at a time."""
        chosen = None
        if rows is not None:
            chosen = np.zeros(self._rows, dtype=bool)
            chosen[np.asarray(rows, dtype=np.int64)] = True
        sums, sq, n = np.zeros(4), np.zeros(4), 0.0
        pos = 0
        for piece in self.pieces(["sums", "sq_sums", "pixels"]):
            take = slice(None) if chosen is None else chosen[pos : pos + len(piece)]
            pos += len(piece)
            sums += piece["sums"][take].sum(0)
            sq += piece["sq_sums"][take].sum(0)
            n += float(piece["pixels"][take].astype(np.float64).sum())
        mean = sums / n
        std = np.sqrt(np.maximum(sq / n - mean**2, 1e-12))
        return {"mean_rgb": mean[:3].tolist(), "std_rgb": std[:3].tolist(), "mean_gray": [float(mean[3])],
                "std_gray": [float(std[3])]}

    def close(self) -> None:
        """Drop the temporary file."""
        self._file.close()
