"""The HDF5 store written by ``taxotrain prepare``: one file per dataset, read by every command after it.

Layout common to every store::

    attrs: format=taxotrain-store, format_version, kind (image|signal), source, created, taxotrain_version, seed,
           val_fraction, test_fraction, command, fingerprint (sha256 of labels, splits, paths and payload)
    records/path     str [N]         the source path (images) or read id (signals)
    labels           int32 [N, R]    label index per rank, -1 = null (unknown at this rank)
    taxonomy/        ranks attr; rank{r}/names, rank{r}/parent, rank{r}/ancestors
    splits/train, splits/val, splits/test    int64 record indices
    splits/heldout                           optional: records of whole classes kept out of the other splits
    metadata/<name>  float32 [N] / bool [N]  optional: place, date, hour, elevation values and <component>_valid
                                            masks (attr ``layout``: data/metadata.MetadataLayout as JSON)

and one payload:

- encoded files (``kind=image``, format version 1): ``images/bytes`` uint8 ``[total]`` (the files back to back,
  contiguous so it can be memory-mapped), ``images/offsets`` int64 ``[N + 1]`` (record i is
  ``bytes[offsets[i]:offsets[i + 1]]``), ``images/height``, ``images/width`` int32 ``[N]``; attrs ``grayscale``,
  ``mean_rgb``, ``std_rgb``, ``mean_gray``, ``std_gray`` (train split, 0-1 scale);
- dense arrays (``kind=signal``, format version 2): ``signals/values`` float32 ``[N, C, L]`` (contiguous),
  ``signals/length`` int32 ``[N]`` (samples before padding), ``records/where`` (file and line); attrs
  ``target_length``, ``znorm``, ``channels``, ``mean_signal``, ``std_signal`` (per channel, train split),
  ``reader``, ``official_test_split``, ``examples_per_class``.

Both prepares write through :class:`StoreWriter`; :class:`Store` reads any kind and hands out a record's payload
(encoded bytes or an array) through :meth:`Store.read`, leaving its interpretation to the task.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from taxotrain import __version__
from taxotrain.data.specs import IMAGE_KIND
from taxotrain.errors import TaxotrainError
from taxotrain.taxonomy import NULL, Taxonomy

FORMAT = "taxotrain-store"
READS_UP_TO = 2
SPLITS = ("train", "val", "test")
HELDOUT = "heldout"  # optional split: whole classes kept out of train/val/test (prepare --holdout-classes)
HASH_CHUNK = 16 << 20
STRING_CHUNK = 65_536  # strings hashed at once


class StoreError(TaxotrainError):
    """The store is missing, unreadable or not a taxotrain store."""


class EncodedFiles:
    """Payload of encoded files (images) back to back in one contiguous byte array."""

    group = "images"
    version = 1

    def __init__(self, f: h5py.File) -> None:
        self.offsets = np.asarray(f["images/offsets"][()], dtype=np.int64)
        self.sizes = np.stack([f["images/height"][()], f["images/width"][()]], axis=1)
        self.data_offset = f["images/bytes"].id.get_offset()
        self.total = int(self.offsets[-1])

    def open(self, path: Path) -> np.ndarray:
        """The byte array, memory-mapped where possible."""
        if self.total == 0 or self.data_offset is None:
            with h5py.File(path, "r") as f:
                return np.asarray(f["images/bytes"][()])
        return np.memmap(path, dtype=np.uint8, mode="r", offset=self.data_offset, shape=(self.total,))

    def record(self, data: np.ndarray, index: int) -> np.ndarray:
        """Encoded bytes of record ``index`` (a read-only uint8 view)."""
        return data[self.offsets[index] : self.offsets[index + 1]]


class DenseArrays:
    """Payload of same-shape float32 arrays (1-D signals ``[C, L]``) in one contiguous ``[N, C, L]`` array."""

    group = "signals"
    version = 2

    def __init__(self, f: h5py.File) -> None:
        self.shape = tuple(f["signals/values"].shape)
        self.lengths = np.asarray(f["signals/length"][()], dtype=np.int64)
        self.data_offset = f["signals/values"].id.get_offset()

    def open(self, path: Path) -> np.ndarray:
        """The ``[N, C, L]`` array, memory-mapped (read-only) where possible."""
        if self.data_offset is None or 0 in self.shape:
            with h5py.File(path, "r") as f:
                return np.asarray(f["signals/values"][()])
        return np.memmap(path, dtype=np.float32, mode="r", offset=self.data_offset, shape=self.shape)

    def record(self, data: np.ndarray, index: int) -> np.ndarray:
        """Series ``index`` as ``[C, L]`` (a read-only view)."""
        return data[index]


class MetadataOnly:
    """No payload: occurrence records (``kind=occurrence``) are their labels and ``metadata/`` arrays."""

    group = "metadata"
    version = 1

    def __init__(self, f: h5py.File) -> None:
        self.count = len(f["labels"])

    def open(self, path: Path) -> np.ndarray:
        """An empty array: there is nothing to map."""
        return np.zeros(0, dtype=np.uint8)

    def record(self, data: np.ndarray, index: int) -> np.ndarray:
        """An empty array (the record's inputs are its metadata: :meth:`Store.metadata`)."""
        return data


# searched in this order: image and signal stores may also hold metadata/
PAYLOADS: tuple[type[EncodedFiles] | type[DenseArrays] | type[MetadataOnly], ...] = (EncodedFiles, DenseArrays,
                                                                                       MetadataOnly)


class Store:
    """Metadata of a store in memory, record payloads read through a per-process memory map.

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
            self.kind: str = self.attrs.get("kind", IMAGE_KIND)
            self.taxonomy = Taxonomy.from_h5(f["taxonomy"])
            self.labels = np.asarray(f["labels"][()], dtype=np.int64).reshape(-1, len(self.taxonomy.ranks))
            self.splits = {s: np.asarray(f["splits"][s][()], dtype=np.int64) for s in (*SPLITS, HELDOUT)
                           if s in f["splits"]}
            layout = next((p for p in PAYLOADS if p.group in f), None)
            if layout is None:
                raise StoreError(f"{self.path} holds no record payload ({', '.join(p.group for p in PAYLOADS)}); "
                                 "re-run `taxotrain prepare`")
            self.payload = layout(f)
        self._data: np.ndarray | None = None
        self._pid: int | None = None
        self._paths: list[str] | None = None

    @property
    def metadata_layout(self) -> str | None:
        """The JSON layout of the store's place/date/elevation arrays (``None``: the store has none)."""
        with h5py.File(self.path, "r") as f:
            return str(f["metadata"].attrs["layout"]) if "metadata" in f else None

    def metadata(self) -> dict[str, np.ndarray] | None:
        """Every metadata array ``[N]`` by name (values and ``<component>_valid`` masks), or ``None``."""
        with h5py.File(self.path, "r") as f:
            return {k: np.asarray(v[()]) for k, v in f["metadata"].items()} if "metadata" in f else None

    @property
    def paths(self) -> list[str]:
        """Each record's source path (images) or id (signals), read on first use: training never needs them, so a
        store of millions of records costs only its label arrays in memory there."""
        if self._paths is None:
            with h5py.File(self.path, "r") as f:
                self._paths = [p.decode() if isinstance(p, bytes) else str(p) for p in f["records/path"][()]]
        return self._paths

    def read_phashes(self) -> np.ndarray | None:
        """Each image's 256-bit perceptual hash as 4 uint64 words (``records/phash``, ``[N, 4]``, for leak checks),
        or ``None`` for a store written before the leak check or a signal store."""
        with h5py.File(self.path, "r") as f:
            return np.asarray(f["records/phash"][()], dtype=np.uint64) if "records/phash" in f else None

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_data"], state["_pid"], state["_paths"] = None, None, None
        return state

    @property
    def ranks(self) -> list[str]:
        """Rank names, coarse to fine."""
        return self.taxonomy.ranks

    @property
    def fingerprint(self) -> str | None:
        """sha256 of the store's labels, splits, paths and payload (``None`` for stores written before it existed)."""
        return self.attrs.get("fingerprint")

    def data(self) -> np.ndarray:
        """The whole payload array (memory-mapped where possible), opened once per process."""
        if self._data is None or self._pid != os.getpid():
            self._data = self.payload.open(self.path)
            self._pid = os.getpid()
        return self._data

    def read(self, index: int) -> np.ndarray:
        """The payload of record ``index``: its encoded bytes (image stores) or its array (signal stores)."""
        return self.payload.record(self.data(), index)


@dataclass
class EncodedIndex:
    """The datasets of an encoded-files payload being written: the bytes, and each record's offset and size."""

    data: h5py.Dataset
    offsets: h5py.Dataset
    height: h5py.Dataset
    width: h5py.Dataset

    def fill(self, start: int, sizes: np.ndarray, heights: np.ndarray, widths: np.ndarray) -> None:
        """Describe records ``start``.. (in order: each piece right after the one before)."""
        n = len(sizes)
        base = int(self.offsets[start])
        self.offsets[start + 1 : start + n + 1] = base + np.cumsum(np.asarray(sizes, dtype=np.int64))
        self.height[start : start + n] = np.asarray(heights, dtype=np.int32)
        self.width[start : start + n] = np.asarray(widths, dtype=np.int32)


class StoreWriter:
    """Writes a store to a temporary file beside ``out`` and renames it into place only when the block succeeds, so
    an interrupted prepare leaves no half store and the old one (if any) is kept.

    Use :meth:`write_records` once, and :meth:`encoded_index` or :meth:`dense` for the payload::

        with StoreWriter(out, IMAGE_KIND, attrs={...}) as w:
            w.write_records(paths, labels, taxonomy, splits)
            index = w.encoded_index(len(sizes), int(sum(sizes)))
            index.fill(0, sizes, heights, widths)  # in pieces for a large corpus
            index.data[...] = encoded_bytes
    """

    def __init__(self, out: str | Path, kind: str, attrs: dict[str, Any]) -> None:
        self.out = Path(out)
        self.tmp = self.out.with_name(f".{self.out.name}.{os.getpid()}.tmp")
        self.kind = kind
        self.attrs = attrs
        self.f: h5py.File | None = None
        self._version = 1

    def __enter__(self) -> StoreWriter:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.f = h5py.File(self.tmp, "w")
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self.f is not None
        done = False
        try:
            if kind is None:
                self.f.attrs.update({"format": FORMAT, "format_version": self._version, "kind": self.kind,
                                     "taxotrain_version": __version__, **_h5_attrs(self.attrs)})
                self.f.attrs["fingerprint"] = _fingerprint(self.f)
                done = True
        finally:
            self.f.close()
            if done:
                os.replace(self.tmp, self.out)
            self.tmp.unlink(missing_ok=True)

    @property
    def file(self) -> h5py.File:
        """The open HDF5 file (for payload-specific datasets such as ``records/where``)."""
        assert self.f is not None, "use StoreWriter as a context manager"
        return self.f

    def write_records(self, paths: Sequence[str], labels: np.ndarray, taxonomy: Taxonomy,
                      splits: dict[str, np.ndarray]) -> None:
        """Paths (or ids), label indices per rank, the taxonomy and the split indices."""
        f = self.file
        names = f.create_dataset("records/path", shape=(len(paths),), dtype=h5py.string_dtype())
        for start in range(0, len(paths), STRING_CHUNK):  # in pieces: no second copy of every path at once
            names[start : start + STRING_CHUNK] = np.array(paths[start : start + STRING_CHUNK], dtype=object)
        f.create_dataset("labels", data=np.asarray(labels).astype(np.int32))
        f["labels"].attrs["null"] = NULL
        taxonomy.to_h5(f.create_group("taxonomy"))
        for name in (*SPLITS, HELDOUT):
            if name in splits or name != HELDOUT:
                f.create_dataset(f"splits/{name}", data=np.asarray(splits[name], dtype=np.int64))

    def write_metadata(self, layout: str, arrays: dict[str, np.ndarray]) -> None:
        """Place/date/elevation per record (``metadata/<name>``: float32 values, NaN where missing, and a bool
        ``<component>_valid`` mask each) and their layout (JSON, attr ``metadata_layout``)."""
        group = self.file.create_group("metadata")
        group.attrs["layout"] = layout
        for name, values in arrays.items():
            group.create_dataset(name, data=values)

    def encoded_index(self, count: int, total_bytes: int) -> EncodedIndex:
        """Create the encoded-files payload of ``count`` records, ``total_bytes`` in all, to be described a piece at
        a time (:meth:`EncodedIndex.fill`) and filled with the bytes (``.data``): no array of every record at once."""
        group = self.file.create_group(EncodedFiles.group)
        offsets = group.create_dataset("offsets", shape=(count + 1,), dtype=np.int64)
        offsets[0] = 0
        index = EncodedIndex(group.create_dataset("bytes", shape=(total_bytes,), dtype=np.uint8),  # mmap-able
                             offsets, group.create_dataset("height", shape=(count,), dtype=np.int32),
                             group.create_dataset("width", shape=(count,), dtype=np.int32))
        self._version = EncodedFiles.version
        return index

    def dense(self, shape: tuple[int, int, int], lengths: np.ndarray) -> h5py.Dataset:
        """Create the dense-array payload ``[N, C, L]``; returns the float32 dataset to fill."""
        f = self.file
        group = f.create_group(DenseArrays.group)
        data = group.create_dataset("values", shape=shape, dtype=np.float32)
        group.create_dataset("length", data=np.asarray(lengths, dtype=np.int32))
        self._version = DenseArrays.version
        return data


def _fingerprint(f: h5py.File) -> str:
    """sha256 over every dataset of the store (names and contents, in name order), read back in chunks."""
    digest = hashlib.sha256()

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            digest.update(name.encode())
            if h5py.check_string_dtype(obj.dtype) is not None or obj.dtype == object:
                strings = obj.asstr()
                for start in range(0, len(obj), STRING_CHUNK):  # the same bytes as one join, in bounded memory
                    part = "\0".join(str(v) for v in strings[start : start + STRING_CHUNK])
                    digest.update((("\0" if start else "") + part).encode())
                return
            step = max(1, HASH_CHUNK // max(1, obj.dtype.itemsize * int(np.prod(obj.shape[1:], dtype=np.int64))))
            for start in range(0, obj.shape[0] if obj.shape else 1, step):
                digest.update(np.ascontiguousarray(obj[start : start + step] if obj.shape else obj[()]).tobytes())

    names: list[str] = []
    f.visit(names.append)
    for name in sorted(names):
        visit(name, f[name])
    return digest.hexdigest()


def _h5_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attribute values HDF5 can hold: float lists as arrays, ``None`` as the string ``"null"`` is avoided by
    leaving such keys out."""
    out = {}
    for k, v in attrs.items():
        if v is None:
            continue
        out[k] = np.asarray(v, dtype=np.float64) if isinstance(v, list | tuple) else v
    return out


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
