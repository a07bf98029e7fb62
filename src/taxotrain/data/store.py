"""Reader for the HDF5 store written by ``taxotrain prepare``.

Layout (format version 1)::

    attrs: format=taxotrain-store, format_version, kind=image, source, created, taxotrain_version, seed,
           val_fraction, test_fraction, grayscale, mean_rgb, std_rgb, mean_gray, std_gray
    images/bytes     uint8 [total]   encoded image files back to back (contiguous, so it can be memory-mapped)
    images/offsets   int64 [N + 1]   record i is bytes[offsets[i]:offsets[i + 1]]
    images/height, images/width      int32 [N]
    records/path     str [N]         the source path, relative to the source folder or manifest
    labels           int32 [N, R]    label index per rank, -1 = null (unknown at this rank)
    taxonomy/        ranks attr; rank{r}/names, rank{r}/parent, rank{r}/ancestors
    splits/train, splits/val, splits/test    int64 record indices

Signal stores (``kind=signal``, format version 2) hold ``signals/values`` float32 ``[N, C, L]`` (contiguous, so it can
be memory-mapped), ``signals/length`` int32 ``[N]`` (samples before padding), ``records/path`` = the read id and
``records/where`` = file and line, and the attrs ``target_length``, ``znorm``, ``channels``, ``mean_signal``,
``std_signal`` (per channel, train split), ``reader``, ``official_test_split``, ``examples_per_class``. Image stores
are still written as version 1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from taxotrain.taxonomy import Taxonomy

FORMAT = "taxotrain-store"
FORMAT_VERSION = 1
SIGNAL_FORMAT_VERSION = 2
READS_UP_TO = 2
SPLITS = ("train", "val", "test")


class StoreError(ValueError):
    """The store is missing, unreadable or not a taxotrain store."""


class Store:
    """Metadata of a store in memory, record bytes read through a per-process memory map.

    Safe to hand to DataLoader workers: the memory map is opened lazily in each process and never pickled.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(f"store {self.path} not found; create it with `taxotrain prepare ... --out {self.path}`")
        try:
            f = h5py.File(self.path, "r")
        except OSError as exc:
            raise StoreError(f"{self.path} is not a readable HDF5 file ({exc}); re-run `taxotrain prepare`") from exc
        with f:
            if f.attrs.get("format") != FORMAT:
                raise StoreError(f"{self.path} is an HDF5 file but not a taxotrain store; create one with "
                                 "`taxotrain prepare`")
            version = int(f.attrs["format_version"])
            if version > READS_UP_TO:
                raise StoreError(f"{self.path} has store format {version}, newer than this taxotrain reads "
                                 f"({READS_UP_TO}); upgrade taxotrain")
            self.attrs: dict[str, Any] = {k: _plain(v) for k, v in f.attrs.items()}
            self.kind: str = self.attrs.get("kind", "image")
            self.taxonomy = Taxonomy.from_h5(f["taxonomy"])
            self.labels = np.asarray(f["labels"][()], dtype=np.int64).reshape(-1, len(self.taxonomy.ranks))
            self.splits = {s: np.asarray(f["splits"][s][()], dtype=np.int64) for s in SPLITS}
            self.paths = [p.decode() if isinstance(p, bytes) else str(p) for p in f["records/path"][()]]
            if self.kind == "signal":
                self.shape = tuple(f["signals/values"].shape)
                self.lengths = np.asarray(f["signals/length"][()], dtype=np.int64)
                self._data_offset = f["signals/values"].id.get_offset()
            else:
                self.offsets = np.asarray(f["images/offsets"][()], dtype=np.int64)
                self.sizes = np.stack([f["images/height"][()], f["images/width"][()]], axis=1)
                self._data_offset = f["images/bytes"].id.get_offset()
        self._mmap: np.ndarray | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_mmap"], state["_pid"] = None, None
        return state

    @property
    def ranks(self) -> list[str]:
        """Rank names, coarse to fine."""
        return self.taxonomy.ranks

    @property
    def grayscale(self) -> bool:
        """True when every stored image has identical channels."""
        return bool(self.attrs.get("grayscale", False))

    def norm(self, channels: int) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the train split, for 1 (greyscale) or 3 input channels."""
        if channels == 1:
            return list(self.attrs["mean_gray"]), list(self.attrs["std_gray"])
        return list(self.attrs["mean_rgb"]), list(self.attrs["std_rgb"])

    def _data(self) -> np.ndarray:
        if self._mmap is None or self._pid != os.getpid():
            total = int(self.offsets[-1])
            if total == 0 or self._data_offset is None:
                with h5py.File(self.path, "r") as f:
                    self._mmap = np.asarray(f["images/bytes"][()])
            else:
                self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r", offset=self._data_offset, shape=(total,))
            self._pid = os.getpid()
        return self._mmap

    def signals(self) -> np.ndarray:
        """All series of a signal store, ``[N, C, L]`` float32, memory-mapped (read-only) where possible."""
        if self.kind != "signal":
            raise StoreError(f"{self.path} is an {self.kind} store, not a signal store; set task: {self.kind}")
        if self._mmap is None or self._pid != os.getpid():
            if self._data_offset is None or 0 in self.shape:
                with h5py.File(self.path, "r") as f:
                    self._mmap = np.asarray(f["signals/values"][()])
            else:
                self._mmap = np.memmap(self.path, dtype=np.float32, mode="r", offset=self._data_offset,
                                       shape=self.shape)
            self._pid = os.getpid()
        return self._mmap

    @property
    def signal_norm(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of a signal store's train split."""
        return list(self.attrs["mean_signal"]), list(self.attrs["std_signal"])

    def record_bytes(self, index: int) -> np.ndarray:
        """Encoded bytes of record ``index`` (a read-only uint8 view)."""
        return self._data()[self.offsets[index] : self.offsets[index + 1]]

    def summary(self) -> dict[str, Any]:
        """Counts per split and classes per rank, for logs and reports."""
        return {"records": len(self), "splits": {s: len(v) for s, v in self.splits.items()},
                "ranks": dict(zip(self.ranks, self.taxonomy.num_classes, strict=True))}


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str) and value.startswith("{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value
