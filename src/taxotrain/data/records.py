"""The ingested records of one prepare, held so that memory does not grow with the corpus.

A prepare of millions of files cannot keep a Python object per file. :class:`RecordTable` keeps each record's
relative path in a temporary file on disk (its offset in a typed array: 8 bytes), and its label names and group as
indices into the few distinct values (4 bytes each), so a record costs about 16 bytes of memory whatever its path.
Records are still read one at a time as :class:`Record` views (``table[i]``, ``for r in table``), and in bulk by
the columnar methods that prepare uses (:meth:`RecordTable.relpaths`, :meth:`RecordTable.name_ids`,
:meth:`RecordTable.group_ids`).
"""

from __future__ import annotations

import os
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

READ_CHUNK = 1 << 16  # records read back from the path file per piece


@dataclass(frozen=True, slots=True)
class Record:
    """One candidate file with its label names per rank (``None`` = unknown at that rank)."""

    base: str
    relpath: str  # relative to ``base`` (or absolute)
    names: tuple[str | None, ...]
    group: str | None = None  # what must not straddle splits (prepare --group-by), when given

    @property
    def path(self) -> str:
        """Where the file is."""
        return os.path.join(self.base, self.relpath)


class _Interned:
    """Distinct values and the index of each."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self._index: dict[Any, int] = {}

    def id(self, value: Any) -> int:
        found = self._index.get(value)
        if found is None:
            found = self._index[value] = len(self.values)
            self.values.append(value)
        return found


class RecordTable:
    """Records in the order added; see the module docstring. Close it (or use it as a context manager) to drop its
    temporary path file; it is also dropped when the table is garbage-collected."""

    def __init__(self) -> None:
        # unlinked at once, so nothing is left behind; closed by close() or when the table is collected
        self._file = tempfile.TemporaryFile(prefix="taxotrain-records-")  # noqa: SIM115
        self._offsets = array("q", [0])  # where each path starts in the file; the last: the bytes written
        self._bases, self._names, self._groups = _Interned(), _Interned(), _Interned()
        self._base, self._name, self._group = array("i"), array("i"), array("i")
        self._flushed = True

    def add(self, base: str, relpath: str, names: tuple[str | None, ...], group: str | None = None) -> None:
        """Append one record."""
        data = relpath.encode("utf-8", "surrogateescape")
        self._file.write(data)
        self._offsets.append(self._offsets[-1] + len(data))
        self._base.append(self._bases.id(base))
        self._name.append(self._names.id(names))
        self._group.append(self._groups.id(group))
        self._flushed = False

    def __len__(self) -> int:
        return len(self._base)

    def __bool__(self) -> bool:
        return len(self) > 0

    def _span(self, start: int, stop: int) -> bytes:
        if not self._flushed:
            self._file.flush()
            self._flushed = True
        self._file.seek(self._offsets[start])
        data = self._file.read(self._offsets[stop] - self._offsets[start])
        self._file.seek(0, os.SEEK_END)
        return data

    def relpath(self, i: int) -> str:
        """Record ``i``'s path relative to its base."""
        return self._span(i, i + 1).decode("utf-8", "surrogateescape")

    def __getitem__(self, i: int) -> Record:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        return Record(self._bases.values[self._base[i]], self.relpath(i), self._names.values[self._name[i]],
                      self._groups.values[self._group[i]])

    def __iter__(self) -> Iterator[Record]:
        for start, paths in self._pieces(range(len(self))):
            for j, rel in enumerate(paths):
                i = start + j
                yield Record(self._bases.values[self._base[i]], rel, self._names.values[self._name[i]],
                             self._groups.values[self._group[i]])

    def _pieces(self, indices: Iterable[int]) -> Iterator[tuple[int, list[str]]]:
        """Runs of consecutive ``indices`` (ascending) read READ_CHUNK at a time: ``(first index, their paths)``."""
        run: list[int] = []
        for i in indices:
            if run and (i != run[-1] + 1 or len(run) >= READ_CHUNK):
                yield run[0], self._decode(run[0], run[-1] + 1)
                run = []
            run.append(int(i))
        if run:
            yield run[0], self._decode(run[0], run[-1] + 1)

    def _decode(self, start: int, stop: int) -> list[str]:
        data = self._span(start, stop)
        base = self._offsets[start]
        return [data[self._offsets[i] - base:self._offsets[i + 1] - base].decode("utf-8", "surrogateescape")
                for i in range(start, stop)]

    def relpaths(self, indices: Sequence[int] | np.ndarray | None = None) -> Iterator[str]:
        """The relative paths of ``indices`` (ascending; default every record), read from disk a piece at a time."""
        for _, paths in self._pieces(range(len(self)) if indices is None else indices):
            yield from paths

    def paths(self) -> Iterator[str]:
        """Every record's full path, in order."""
        bases = self._bases.values
        for start, rels in self._pieces(range(len(self))):
            for j, rel in enumerate(rels):
                yield os.path.join(bases[self._base[start + j]], rel)

    def path_view(self, indices: np.ndarray) -> PathView:
        """The relative paths of ``indices`` (ascending) as a sequence that reads slices from disk on demand."""
        return PathView(self, np.asarray(indices, dtype=np.int64))

    def name_ids(self) -> tuple[np.ndarray, list[tuple[str | None, ...]]]:
        """Each record's index into the distinct label-name tuples, and those tuples."""
        return np.array(self._name, dtype=np.int32), self._names.values

    def group_ids(self) -> tuple[np.ndarray, list[str | None]]:
        """Each record's index into the distinct groups, and those groups."""
        return np.array(self._group, dtype=np.int32), self._groups.values

    def close(self) -> None:
        """Drop the temporary path file."""
        self._file.close()

    def __enter__(self) -> RecordTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PathView(Sequence[str]):
    """Relative paths of chosen records, read from the table's file a slice at a time (for ``StoreWriter``)."""

    def __init__(self, table: RecordTable, indices: np.ndarray) -> None:
        self._table, self._indices = table, indices

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, slice):
            return list(self._table.relpaths(self._indices[key]))
        return self._table.relpath(int(self._indices[key]))
