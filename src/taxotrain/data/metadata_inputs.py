"""Place/date metadata as model input: per-record rows of raw values, from a store or from a CSV to predict.

A model with metadata takes, per record, one float per raw value of each component it encodes, in its encoder's
order (``place`` gives lat, lon; ``date`` gives day_of_year; ...), NaN where the component is missing: the encoders
(``models/metadata.py``) turn a non-finite value into an all-zero feature, so "missing" needs no separate mask in a
batch. :func:`metadata_matrix` builds that ``[N, F]`` array from the arrays of :meth:`Store.metadata` or of
:func:`~taxotrain.data.metadata.parse_metadata` (values and ``<component>_valid`` masks); :class:`WithMetadata` adds
each record's row to a dataset's samples under a key (``meta`` beside an image or a series; ``input`` for a
metadata-only model).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from taxotrain.data.ingest import PATH_COLUMN, IngestError, _read_csv
from taxotrain.data.metadata import (
    COMPONENTS,
    Metadata,
    MetadataError,
    MetadataLayout,
    _columns_of,
    layout_for,
    parse_metadata,
)
from taxotrain.data.store import Store

Fields = Sequence[tuple[str, Sequence[str]]]  # (component, its raw value names) in the model's order


def store_layout(store: Store) -> MetadataLayout:
    """The metadata layout of ``store`` (empty when it has none)."""
    text = store.metadata_layout
    return MetadataLayout.from_json(text) if text else MetadataLayout()


def blank_arrays(n: int) -> dict[str, np.ndarray]:
    """Arrays of ``n`` records with every component missing (NaN values, False masks)."""
    out: dict[str, np.ndarray] = {}
    for component, names in COMPONENTS.items():
        out.update({name: np.full(n, np.nan, dtype=np.float32) for name in names})
        out[f"{component}_valid"] = np.zeros(n, dtype=bool)
    return out


def complete_arrays(arrays: Mapping[str, np.ndarray] | None, n: int) -> dict[str, np.ndarray]:
    """``arrays`` (some components) with the missing components added as missing: every component's arrays."""
    out = blank_arrays(n)
    out.update({k: np.asarray(v) for k, v in (arrays or {}).items()})
    return out


def concat_arrays(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Complete arrays of several record lists, one after the other."""
    return {name: np.concatenate([p[name] for p in parts]) for name in blank_arrays(0)}


def metadata_matrix(arrays: Mapping[str, np.ndarray], fields: Fields) -> np.ndarray:
    """``[N, F]`` float32: the raw values of ``fields`` (component, value names) side by side, NaN where the
    component's ``<component>_valid`` mask is False or the component is absent from ``arrays``."""
    n = len(next(iter(arrays.values()))) if arrays else 0
    columns = []
    for component, names in fields:
        valid = np.asarray(arrays.get(f"{component}_valid", np.zeros(n, dtype=bool)), dtype=bool)
        for name in names:
            values = np.asarray(arrays.get(name, np.full(n, np.nan)), dtype=np.float32)
            columns.append(np.where(valid, values, np.float32(np.nan)))
    return np.stack(columns, axis=1).astype(np.float32) if columns else np.zeros((n, 0), dtype=np.float32)


def columns_for(components: Sequence[str]) -> str:
    """The Darwin Core columns that give ``components`` (``decimalLatitude+decimalLongitude, eventDate or month``)."""
    return ", ".join(_columns_of(MetadataLayout(tuple(components))))


def require_components(given: MetadataLayout, components: Sequence[str], source: str) -> None:
    """A one-line :class:`MetadataError` naming ``source`` unless ``given`` has every one of ``components``."""
    expected = MetadataLayout(tuple(components))
    expected.require_same(MetadataLayout(tuple(c for c in given.components if c in components)), source)


def lacking(store: Store, components: Sequence[str]) -> tuple[list[str], str]:
    """Which of ``components`` the store has no values for, and what it has (``metadata: place, date`` or ``no
    metadata``), for one-line errors."""
    layout = store_layout(store)
    has = f"metadata: {', '.join(layout.components)}" if layout else "no metadata"
    return [c for c in components if c not in layout.components], has


def store_matrix(store: Store, fields: Fields, what: str) -> np.ndarray:
    """The ``[N_store, F]`` metadata rows of every record of ``store``; a one-line error naming the components when
    the store lacks one of ``fields``' (``what``: who asks, for the message)."""
    components = [c for c, _ in fields]
    missing, has = lacking(store, components)
    if missing:
        raise MetadataError(f"{what} takes {', '.join(components)} but {store.path} has {has} (no "
                            f"{', '.join(missing)}); prepare the store from data with those columns "
                            "(docs/data.md#place-and-date-metadata), or change model.metadata")
    return metadata_matrix(store.metadata() or {}, fields)


class WithMetadata(Dataset):
    """The samples of ``base`` (dicts with the store ``index``), each with its metadata row ``matrix[index]`` added
    as ``key`` (a float32 tensor ``[F]``, NaN where missing)."""

    def __init__(self, base: Dataset, matrix: np.ndarray, key: str = "meta") -> None:
        self.base, self.matrix, self.key = base, np.ascontiguousarray(matrix, dtype=np.float32), key

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = self.base[i]
        sample[self.key] = torch.from_numpy(self.matrix[int(sample["index"])].copy())
        return sample


def no_payload(data: np.ndarray) -> torch.Tensor:
    """The payload of an occurrence record: nothing (its input is its metadata row)."""
    return torch.zeros(0)


def is_manifest(path: str | Path) -> bool:
    """Whether a prediction input is a CSV of records (a manifest), not a file to read itself."""
    return Path(path).suffix.lower() == ".csv" and Path(path).is_file()


def read_rows(path: Path, components: Sequence[str] = ()) -> tuple[list[dict[str, str]], Metadata]:
    """The rows of a CSV to predict and their parsed metadata (complete arrays: every component, missing where the
    CSV has no column for it); a one-line error when its header lacks one of ``components``."""
    columns, rows = _read_csv(path)
    layout = layout_for(columns)
    if components:
        require_components(layout, components, str(path))
    metadata = parse_metadata(rows, columns, ids=[f"{path.name} line {i + 2}" for i in range(len(rows))])
    metadata.arrays = complete_arrays(metadata.arrays, len(rows))
    return rows, metadata


def manifest_files(path: Path, components: Sequence[str] = ()) -> tuple[list[Path], dict[str, np.ndarray]]:
    """The files of a manifest CSV to predict (its ``filepath`` column, relative to the CSV's folder, as ``prepare
    --manifest`` reads it) and their metadata (complete arrays); rows with an empty filepath are left out."""
    rows, metadata = read_rows(path, components)
    if rows and PATH_COLUMN not in rows[0]:
        raise IngestError(f"{path}: a manifest to predict needs a '{PATH_COLUMN}' column (each image's path, "
                          "relative to the CSV) beside its metadata columns (decimalLatitude, decimalLongitude, "
                          "eventDate, ...)")
    keep = [i for i, r in enumerate(rows) if r.get(PATH_COLUMN)]
    files = [path.parent / rows[i][PATH_COLUMN] for i in keep]
    return files, {k: v[keep] for k, v in metadata.arrays.items()}
