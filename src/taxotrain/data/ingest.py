"""Find the records of a dataset: a folder of class folders, or a CSV manifest, plus an optional taxonomy table.

Nothing is decoded here; this only decides which file carries which labels, and what is skipped and why.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taxotrain.data.metadata import Metadata, metadata_columns, parse_metadata
from taxotrain.data.pool import ordered_map
from taxotrain.data.records import Record, RecordTable
from taxotrain.errors import TaxotrainError
from taxotrain.taxonomy import Taxonomy, TaxonomyError
from taxotrain_runtime.images import IMAGE_SUFFIXES
from taxotrain_runtime.images import find_images as runtime_find_images

__all__ = ["IMAGE_SUFFIXES", "IngestError", "Record", "RecordTable", "find_images", "from_folder", "from_manifest"]

PATH_COLUMN = "filepath"
METADATA_CHUNK = 10_000  # rows of metadata text held before they are parsed into arrays
SKIP_COLUMN = "\0skip"  # set by an importer on a row it cannot use: the reason, listed in the report


class IngestError(TaxotrainError):
    """The input cannot be ingested as given; the message names the file and the fix."""


@dataclass
class Ingested:
    """Records to verify, the taxonomy they use, and what was skipped before decoding."""

    ranks: list[str]
    records: RecordTable  # on disk but for a few bytes each: data/records.py
    taxonomy: Taxonomy
    skipped: list[tuple[str, str]] = field(default_factory=list)
    group_by: str | None = None  # the column each record's group came from (None: no groups)
    metadata: Metadata | None = None  # place/date/elevation per record, when the rows carry Darwin Core columns

    def labels(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Label indices ``[len(rows), R]`` of the records ``rows`` (default all): each distinct row encoded once."""
        ids, distinct = self.records.name_ids()
        table = self.taxonomy.encode_many(distinct, len(distinct))
        return table[ids if rows is None else ids[rows]]

    def group_names(self, rows: np.ndarray | None = None) -> list[str | None]:
        """The group of each of the records ``rows`` (default all), by name: the split orders groups by name."""
        ids, values = self.records.group_ids()
        return [values[g] for g in (ids if rows is None else ids[rows])]


def find_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Files given directly, plus image files found recursively (sorted, hidden ones skipped) under given folders
    (the runtime's search, with a path that does not exist as an :class:`IngestError`)."""
    try:
        return runtime_find_images(list(inputs))
    except FileNotFoundError as exc:
        raise IngestError(str(exc)) from exc


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    columns, rows = _stream_csv(path)
    return columns, list(rows)


def _stream_csv(path: Path) -> tuple[list[str], Iterator[dict[str, str]]]:
    """The header of a CSV and its rows (stripped), read one at a time: a manifest of millions of rows is never
    held whole."""
    if not path.is_file():
        raise IngestError(f"{path} not found")
    fh = path.open(newline="", encoding="utf-8-sig")
    reader = csv.DictReader(fh)
    columns = [c.strip() for c in (reader.fieldnames or [])]

    def rows() -> Iterator[dict[str, str]]:
        with fh:
            for row in reader:
                yield {(k or "").strip(): (v or "").strip() for k, v in row.items()}

    return columns, rows()


def _require_columns(path: Path, columns: list[str], needed: Sequence[str], what: str) -> None:
    missing = [c for c in needed if c not in columns]
    if missing:
        raise IngestError(f"{path}: missing column(s) {', '.join(missing)} ({what}); its columns are: "
                          f"{', '.join(columns)}")


def read_taxonomy_rows(path: Path, ranks: Sequence[str]) -> tuple[list[tuple[str | None, ...]], list[str]]:
    """Rows of a taxonomy CSV as name tuples (coarse to fine), with ``"file line N"`` sources for messages."""
    columns, rows = _read_csv(path)
    _require_columns(path, columns, ranks, "--ranks names these columns, coarse to fine")
    names = [tuple(row.get(r) or None for r in ranks) for row in rows]
    sources = [f"{path.name} line {i + 2}" for i in range(len(rows))]
    return names, sources


def from_folder(root: Path, ranks: Sequence[str], taxonomy_csv: Path | None) -> Ingested:
    """Records of a folder of class folders; the folder name is the finest rank's label."""
    if not root.is_dir():
        raise IngestError(f"{root} is not a folder; give a folder of class folders or --manifest FILE.csv")
    ranks = list(ranks)
    if len(ranks) > 1 and taxonomy_csv is None:
        raise IngestError(f"--ranks names {len(ranks)} ranks but a folder only gives the finest; add --taxonomy "
                          f"FILE.csv with columns {', '.join(ranks)}")
    skipped: list[tuple[str, str]] = []
    folders: list[str] = []  # each one's files are listed when its records are made: one folder's list at a time
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            skipped.append((entry.name, "hidden entry"))
        elif entry.is_dir():
            folders.append(entry.name)
        else:
            skipped.append((entry.name, "not inside a class folder"))
    if not folders:
        raise IngestError(f"{root} has no class folders; expected {root}/<class name>/<image files>")

    tax_rows: list[tuple[str | None, ...]] = []
    sources: list[str] = []
    if taxonomy_csv is not None:
        tax_rows, sources = read_taxonomy_rows(taxonomy_csv, ranks)
        Taxonomy.from_rows(ranks, tax_rows, sources)  # contradictions anywhere in the table are errors
        known = {row[-1] for row in tax_rows}
        orphans = [name for name in folders if name not in known]
        if orphans:
            shown = ", ".join(orphans[:10]) + (f" and {len(orphans) - 10} more" if len(orphans) > 10 else "")
            raise TaxonomyError(f"{taxonomy_csv}: no row for class folder(s) {shown}; add a row with "
                                f"{ranks[-1]}=<folder name> for each, or remove the folder")
        keep = [i for i, row in enumerate(tax_rows) if row[-1] in folders]
        tax_rows, sources = [tax_rows[i] for i in keep], [sources[i] for i in keep]
    else:
        tax_rows = [(name,) for name in folders]
        sources = [f"folder {name}" for name in folders]
    taxonomy = Taxonomy.from_rows(ranks, tax_rows, sources)

    records = RecordTable()
    base = str(root)
    for name in folders:
        files = _files_under(root, name)
        row = (None,) * (len(ranks) - 1) + (name,)
        if not files:
            skipped.append((f"{name}/", "empty class folder"))
        for rel in files:
            if any(part.startswith(".") for part in rel.split("/")):
                skipped.append((rel, "hidden file"))
            else:
                records.add(base, rel, row)
    return Ingested(ranks, records, taxonomy, skipped)


def _files_under(root: Path, folder: str) -> list[str]:
    """The files under ``root/folder`` (any depth, symlinked folders not followed), as paths relative to ``root``
    with ``/``, in the order of their path parts (as sorting ``Path`` objects gives)."""
    out = []
    for here, dirs, names in os.walk(root / folder):
        dirs.sort()
        rel = Path(here).relative_to(root).as_posix()
        out += [f"{rel}/{n}" for n in names if os.path.isfile(os.path.join(here, n))]
    return sorted(out, key=lambda r: r.split("/"))


def from_manifest(manifest: Path, ranks: Sequence[str], taxonomy_csv: Path | None,
                  group_by: str | None = None, workers: int = 1) -> Ingested:
    """Records of a CSV manifest with a ``filepath`` column (relative to the manifest) and one column per rank.

    Rank columns missing from the manifest are taken from ``taxonomy_csv``; an empty cell is a null label.
    ``group_by`` names the column whose value each record's group is (an empty cell: a group of its own). The rows
    are read one at a time; place/date columns are parsed by ``workers`` processes (0: every core).
    """
    columns, rows = _stream_csv(manifest)
    return from_rows(manifest, columns, rows, ranks, taxonomy_csv, group_by, workers=workers)


def from_rows(source: Path, columns: list[str], rows: Iterable[dict[str, str]], ranks: Sequence[str],
              taxonomy_csv: Path | None, group_by: str | None = None, first_line: int = 2,
              base: Path | None = None, files: bool = True, workers: int = 1) -> Ingested:
    """Records of manifest-like ``rows`` read from ``source`` (``filepath`` relative to ``base``, default the
    source's folder; line numbers in messages count from ``first_line``): what every tabular importer hands over.
    With ``files=False`` the rows are occurrence records with no file (a place/date prior's data): each is named
    by its ``occurrenceID`` (or ``id``, or its line). ``rows`` are read once, in order; their place/date columns
    are parsed by ``workers`` processes while the rows are read (0: every core)."""
    workers = workers or os.cpu_count() or 1
    ranks = list(ranks)
    if files:
        _require_columns(source, columns, [PATH_COLUMN], "the path of each image, relative to the manifest")
    if group_by is not None:
        _require_columns(source, columns, [group_by], "--group-by names the column of each record's group")
    tax_rows: list[tuple[str | None, ...]] = []
    tax_sources: list[str] = []
    if taxonomy_csv is not None:
        tax_rows, tax_sources = read_taxonomy_rows(taxonomy_csv, ranks)
    else:
        _require_columns(source, columns, ranks, "one column per --ranks name, or give --taxonomy FILE.csv")
    if ranks[-1] not in columns:
        raise IngestError(f"{source}: the finest rank column '{ranks[-1]}' is missing; its columns are: "
                          f"{', '.join(columns)}")

    base = base or source.parent
    skipped: list[tuple[str, str]] = []
    records = RecordTable()
    label_rows: dict[tuple[str | None, ...], str] = {}  # each distinct label row, with the first line that gave it
    meta_columns = metadata_columns(columns)

    def metadata_chunks() -> Iterator[tuple[list[dict[str, str | None]], list[str], list[str]]]:
        """Walk the rows into ``records``, handing out their place/date text every METADATA_CHUNK rows."""
        meta_rows: list[dict[str, str | None]] = []
        meta_ids: list[str] = []
        for i, row in enumerate(rows):
            line = f"{source.name} {'line' if source.suffix != '.json' else 'image'} {i + first_line}"
            rel = row.get(PATH_COLUMN, "") if files else (row.get("occurrenceID") or row.get("id") or line)
            names = tuple(row.get(r) or None for r in ranks)
            if not rel:
                skipped.append((line, "empty filepath"))
                continue
            if row.get(SKIP_COLUMN):
                skipped.append((rel, row[SKIP_COLUMN]))
                continue
            if all(n is None for n in names):
                skipped.append((rel, f"no label at any rank ({', '.join(ranks)})"))
                continue
            group = (row.get(group_by) or f"\0{line}") if group_by is not None else None  # empty: its own group
            records.add(str(base) if files else "", rel, names, group)
            label_rows.setdefault(names, line)
            if meta_columns:
                meta_rows.append({c: row.get(c) for c in meta_columns})
                meta_ids.append(rel)
                if len(meta_rows) == METADATA_CHUNK:
                    yield meta_rows, meta_columns, meta_ids
                    meta_rows, meta_ids = [], []
        if meta_columns:
            yield meta_rows, meta_columns, meta_ids

    # the place/date text is parsed by the workers while this process reads on (a few chunks ahead at most)
    parts = list(ordered_map(_parse_metadata_chunk, metadata_chunks(), workers if meta_columns else 1, ahead=2))
    metadata = Metadata.concat(parts) if meta_columns else None
    # a contradiction is named by the first line of each distinct row, as Taxonomy.from_rows names the first source
    taxonomy = Taxonomy.from_rows(ranks, tax_rows + list(label_rows), tax_sources + list(label_rows.values()))
    if tax_rows:  # cut each taxonomy row below its deepest node that the data uses: heads get no empty classes
        used = {(r, n) for row in label_rows for r, n in enumerate(row) if n is not None}
        cut = []
        for row in tax_rows:
            depth = max((r for r, n in enumerate(row) if (r, n) in used), default=-1)
            if depth >= 0:
                cut.append(tuple(row[: depth + 1]) + (None,) * (len(ranks) - depth - 1))
        taxonomy = Taxonomy.from_rows(ranks, cut + list(label_rows))
    return Ingested(ranks, records, taxonomy, skipped, group_by, metadata)


def _parse_metadata_chunk(chunk: tuple[list[dict[str, str | None]], list[str], list[str]]) -> Metadata:
    rows, columns, ids = chunk
    return parse_metadata(rows, columns, ids=ids)
