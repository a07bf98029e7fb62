"""1-D signal sources: a registry of readers (Capfinder CSV, UCR/UEA ``.ts``, NumPy) that stream rows.

A reader never raises on a bad row: it yields the row with a ``reason`` (non-numeric value, empty series, no class)
so that ``prepare`` lists it in the verification report and ``predict`` writes it as an error row.
"""

from __future__ import annotations

import csv
import importlib.util
import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taxotrain.data.ingest import IngestError
from taxotrain.data.specs import IMAGE_KIND, SIGNAL_KIND
from taxotrain.errors import brief

CAPFINDER_COLUMNS = ("read_id", "cap_class", "timeseries")


@dataclass
class SignalRow:
    """One series from a source: id, class name (``None`` when unlabelled), values ``[C, L]`` or the reason it is
    unusable, where it came from, and whether it belongs to the source's official test split."""

    read_id: str
    label: str | None
    values: np.ndarray | None
    where: str
    reason: str = ""
    official_test: bool = False


class SignalReader:
    """Base class: ``rows()`` yields every ``SignalRow`` of a source, in order, and may be called again."""

    name = ""
    #: True when the source carries an official train/test split (UCR ``_TRAIN``/``_TEST`` files)
    has_official_split = False

    def __init__(self, path: Path, workers: int = 1) -> None:
        self.path = Path(path)
        self.workers = workers  # processes a reader may parse with (0 = every core); readers that gain use it

    @classmethod
    def accepts(cls, path: Path) -> bool:
        """Whether this reader understands ``path``."""
        raise NotImplementedError

    def rows(self) -> Iterator[SignalRow]:
        """Yield every row; bad rows carry a ``reason`` and ``values=None``."""
        raise NotImplementedError


_READERS: dict[str, type[SignalReader]] = {}


def register_reader(name: str) -> Callable[[type[SignalReader]], type[SignalReader]]:
    """Class decorator that makes a reader available as ``--format <name>`` and to automatic detection."""

    def wrap(cls: type[SignalReader]) -> type[SignalReader]:
        cls.name = name
        _READERS[name] = cls
        return cls

    return wrap


def list_readers() -> list[str]:
    """Names of the registered signal readers."""
    return sorted(_READERS)


def create_reader(path: str | Path, name: str | None = None, workers: int = 1) -> SignalReader:
    """The reader registered as ``name``, or the first that accepts ``path`` when ``name`` is ``None``; it may
    parse with ``workers`` processes (0 = every core).

    Example:
        >>> reader = create_reader(ucr_folder("GunPoint"))
        >>> reader.name
        'ucr_ts'
    """
    path = Path(path)
    if not path.exists():
        raise IngestError(f"{path}: no such file or folder")
    if name is not None:
        if name not in _READERS:
            raise IngestError(f"unknown signal format '{name}'; choose one of: {', '.join(list_readers())}")
        if not _READERS[name].accepts(path):
            raise IngestError(f"{path} is not a {name} source (see docs/signals.md for the layouts)")
        return _READERS[name](path, workers)
    for cls in _READERS.values():
        if cls.accepts(path):
            return cls(path, workers)
    raise IngestError(f"{path}: not a signal source; give a Capfinder CSV (or a folder of them), a .ts file or a "
                      "folder with <Name>_TRAIN.ts and <Name>_TEST.ts, or a .npz / X.npy+y.npy pair")


def is_signal_source(path: str | Path) -> bool:
    """True when some registered reader accepts ``path``."""
    path = Path(path)
    return path.exists() and any(cls.accepts(path) for cls in _READERS.values())


def source_kind(source: str | Path | None, manifest: str | Path | None = None) -> str:
    """The store kind a source makes: a signal store when a signal reader accepts ``source``, else an image store."""
    if source is not None and manifest is None and is_signal_source(source):
        return SIGNAL_KIND
    return IMAGE_KIND


def parse_series(text: str) -> tuple[np.ndarray | None, str]:
    """Parse a comma-joined list of numbers; returns (values, "") or (None, reason)."""
    text = text.strip().strip("[]")
    if not text:
        return None, "empty series"
    parts = text.split(",")
    try:
        values = np.array(parts, dtype=np.float64)
    except ValueError:
        bad = next((i, p) for i, p in enumerate(parts) if not _is_number(p))
        return None, f"non-numeric value {bad[1].strip()[:20]!r} at position {bad[0] + 1}"
    if not np.isfinite(values).all():
        return None, f"non-finite value (nan/inf) at position {int(np.flatnonzero(~np.isfinite(values))[0]) + 1}"
    return values[None, :], ""


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# ------------------------------------------------------------------------------------------------ Capfinder CSV


@register_reader("capfinder_csv")
class CapfinderCSV(SignalReader):
    """Capfinder's CSV: header ``read_id,cap_class,timeseries``; ``timeseries`` is one quoted field of comma-joined
    numbers. ``path`` is one file or a folder of them (commonly one per class). Read one row at a time, so files
    larger than memory stream; the field-size limit is lifted for long reads. ``cap_class`` may be absent for
    prediction."""

    @classmethod
    def accepts(cls, path: Path) -> bool:
        if path.is_dir():
            return any(path.glob("*.csv")) and not any(p.is_dir() and not p.name.startswith(".")
                                                        for p in path.iterdir())
        return path.suffix.lower() == ".csv"

    def files(self) -> list[Path]:
        """The CSV files, sorted."""
        if self.path.is_dir():
            return sorted(p for p in self.path.glob("*.csv") if not p.name.startswith("."))
        return [self.path]

    def rows(self) -> Iterator[SignalRow]:
        raw = self._raw_rows()
        workers = self.workers or os.cpu_count() or 1
        if workers <= 1:
            yield from map(_parse_row, raw)
            return
        # turning text into numbers is the slow part: worker processes parse, in order, while this one reads
        ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ctx.Pool(workers) as pool:
            yield from pool.imap(_parse_row, raw, chunksize=16)

    def _raw_rows(self) -> Iterator[tuple[str, str | None, str | None, str, str]]:
        """``(read id, label, series text, where, reason)`` per row, unparsed."""
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a nanopore read is far beyond the 128 kB default
        for path in self.files():
            with path.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.reader(fh)
                header = [c.strip() for c in next(reader, [])]
                if "timeseries" not in header:
                    raise IngestError(f"{path}: no 'timeseries' column; a Capfinder CSV has the header "
                                      f"{','.join(CAPFINDER_COLUMNS)} (its header is: {brief(','.join(header), 200)})")
                i_id = header.index("read_id") if "read_id" in header else None
                i_cls = header.index("cap_class") if "cap_class" in header else None
                i_ts = header.index("timeseries")
                for line, row in enumerate(reader, start=2):
                    where = f"{path.name} line {line}"
                    if not row:
                        continue
                    read_id = row[i_id].strip() if i_id is not None and i_id < len(row) else str(line - 2)
                    if len(row) <= i_ts:
                        yield read_id, None, None, where, (f"{len(row)} field(s), expected {len(header)}; quote "
                                                           "the timeseries field")
                        continue
                    if len(row) > len(header):
                        yield read_id, None, None, where, (f"{len(row)} fields, expected {len(header)}; quote the "
                                                           "timeseries field")
                        continue
                    label = (row[i_cls].strip() or None) if i_cls is not None else None
                    empty_class = i_cls is not None and label is None
                    yield read_id, label, row[i_ts], where, "empty cap_class" if empty_class else ""


def _parse_row(raw: tuple[str, str | None, str | None, str, str]) -> SignalRow:
    """A Capfinder row with its series parsed (a module-level function: worker processes run it)."""
    read_id, label, text, where, reason = raw
    if text is None:
        return SignalRow(read_id, None, None, where, reason)
    values, bad = parse_series(text)
    return SignalRow(read_id, label, values, where, bad or reason)


# ------------------------------------------------------------------------------------------------ UCR / UEA .ts


def _load_ts(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    from aeon.datasets import load_from_ts_file

    try:
        X, y = load_from_ts_file(str(path))
    except Exception as exc:  # aeon raises IOError/ValueError/TsFileParseException subclasses
        raise IngestError(f"{path}: not a readable .ts file ({brief(exc)})") from exc
    series = [np.asarray(x, dtype=np.float64) for x in X]
    labels = np.full(len(series), "") if y is None or np.ndim(y) == 0 else np.asarray(y).astype(str)
    return series, labels


def _ts_rows(path: Path, official_test: bool) -> Iterator[SignalRow]:
    series, labels = _load_ts(path)
    for i, (x, label) in enumerate(zip(series, labels, strict=True)):
        where = f"{path.name} series {i + 1}"
        x = x.reshape(1, -1) if x.ndim == 1 else x
        label = label.strip() or None
        if x.size == 0 or x.shape[-1] == 0:
            yield SignalRow(str(i), label, None, where, "empty series", official_test)
        elif not np.isfinite(x).all():
            yield SignalRow(str(i), label, None, where, "missing or non-finite value (? / nan)", official_test)
        else:
            yield SignalRow(str(i), label, x, where, "", official_test)


@register_reader("ucr_ts")
class UCRTs(SignalReader):
    """UCR/UEA ``.ts`` files through aeon's ``load_from_ts_file``: one file, or a folder in the archive's layout
    (``<Name>_TRAIN.ts``, ``<Name>_TEST.ts``) whose TEST file is kept as the official test split."""

    @classmethod
    def accepts(cls, path: Path) -> bool:
        if path.is_dir():
            return bool(list(path.glob("*_TRAIN.ts")))
        return path.suffix.lower() == ".ts"

    @property
    def has_official_split(self) -> bool:  # type: ignore[override]
        return self.path.is_dir() and bool(list(self.path.glob("*_TEST.ts")))

    def rows(self) -> Iterator[SignalRow]:
        if not self.path.is_dir():
            yield from _ts_rows(self.path, official_test=False)
            return
        train = sorted(self.path.glob("*_TRAIN.ts"))
        if len(train) > 1:  # e.g. JapaneseVowels_TRAIN.ts beside its equal-length variant JapaneseVowels_eq_TRAIN.ts
            named = self.path / f"{self.path.name}_TRAIN.ts"
            if not named.is_file():
                names = ", ".join(p.name for p in train)
                raise IngestError(f"{self.path} holds {len(train)} *_TRAIN.ts files ({names}) and none is named after "
                                  "the folder; keep one _TRAIN/_TEST pair in it")
            train = [named]
        yield from _ts_rows(train[0], official_test=False)
        test = train[0].with_name(train[0].name.replace("_TRAIN.ts", "_TEST.ts"))
        if test.is_file():
            yield from _ts_rows(test, official_test=True)


def ucr_folder(name: str) -> Path:
    """Folder of a UCR dataset that ships inside the aeon wheel (GunPoint, ItalyPowerDemand, OSULeaf, ...)."""
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        raise IngestError("aeon is not installed; pip install aeon")
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name
    if not (folder / f"{name}_TRAIN.ts").is_file():
        raise IngestError(f"{name} does not ship with this aeon ({folder} has no {name}_TRAIN.ts)")
    return folder


# ------------------------------------------------------------------------------------------------ NumPy


@register_reader("numpy")
class NumpyPair(SignalReader):
    """A NumPy pair: ``data.npz`` with arrays ``X`` (``[N, L]`` or ``[N, C, L]``) and ``y`` (and optionally
    ``read_id``), or ``X.npy`` beside ``y.npy`` (give the folder or ``X.npy``). NaN marks a bad value."""

    @classmethod
    def accepts(cls, path: Path) -> bool:
        if path.is_dir():
            return (path / "X.npy").is_file()
        return path.suffix.lower() == ".npz" or (path.suffix.lower() == ".npy" and path.name.startswith("X"))

    def _arrays(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        try:
            if self.path.suffix.lower() == ".npz":
                with np.load(self.path, allow_pickle=False) as z:
                    if "X" not in z:
                        raise IngestError(f"{self.path}: no array 'X' (it holds {', '.join(z.files)}); save with "
                                          "np.savez(path, X=..., y=...)")
                    return z["X"], z.get("y"), z.get("read_id")
            x_path = self.path / "X.npy" if self.path.is_dir() else self.path
            y_path = x_path.with_name("y" + x_path.name[1:])
            X = np.load(x_path, mmap_mode="r", allow_pickle=False)
            y = np.load(y_path, allow_pickle=False) if y_path.is_file() else None
            return X, y, None
        except ValueError as exc:
            raise IngestError(f"{self.path}: cannot load ({exc}); save plain numeric X and string/int y") from exc

    def rows(self) -> Iterator[SignalRow]:
        X, y, ids = self._arrays()
        if X.ndim not in (2, 3):
            raise IngestError(f"{self.path}: X has shape {X.shape}; expected [N, L] or [N, C, L]")
        if y is not None and len(y) != len(X):
            raise IngestError(f"{self.path}: X has {len(X)} rows but y has {len(y)}")
        for i in range(len(X)):
            x = np.asarray(X[i], dtype=np.float64)
            x = x[None, :] if x.ndim == 1 else x
            read_id = str(ids[i]) if ids is not None else str(i)
            label = str(y[i]).strip() or None if y is not None else None
            where = f"{self.path.name} row {i}"
            if x.shape[-1] == 0:
                yield SignalRow(read_id, label, None, where, "empty series")
            elif not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
                yield SignalRow(read_id, label, None, where, "non-finite value (nan/inf)")
            else:
                yield SignalRow(read_id, label, x, where)


# ------------------------------------------------------------------------------------------------ preprocessing


def znormalise(x: np.ndarray) -> np.ndarray:
    """Each channel of ``x`` ``[C, L]`` to mean 0, std 1 (a constant channel becomes zeros)."""
    mean = x.mean(axis=-1, keepdims=True)
    std = x.std(axis=-1, keepdims=True)
    return (x - mean) / np.where(std > 1e-8, std, 1.0)


def fit_length(x: np.ndarray, length: int) -> np.ndarray:
    """Truncate ``x`` ``[C, L]`` to its first ``length`` samples, or zero-pad it at the end to ``length``."""
    if x.shape[-1] >= length:
        return x[..., :length]
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, length - x.shape[-1])])


def preprocess(x: np.ndarray, length: int, znorm: bool) -> np.ndarray:
    """What prepare and predict do to every series: truncate, z-normalise (optional) the kept samples, pad with 0."""
    x = x[..., :length]
    if znorm:
        x = znormalise(x)
    return fit_length(x, length).astype(np.float32)
