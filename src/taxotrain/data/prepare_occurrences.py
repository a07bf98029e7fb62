"""``taxotrain prepare`` for occurrence records with no image: a Darwin Core Archive or a manifest CSV without a
``filepath`` column. The store holds, per record, its labels and its place/date metadata (``kind=occurrence``): what
a place/date prior (``task: prior``) trains on.

A Darwin Core Archive whose occurrences carry images (a Simple Multimedia or Audubon Core extension) is an image
source instead: :func:`dwca_ingested` reads it for ``prepare_images``, with images packed in the archive extracted
beside the store for the length of the prepare.
"""

from __future__ import annotations

import csv
import json
import sys
import zipfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import numpy as np

from taxotrain.data.dwca import DwcArchive, manifest_rows, read_dwca
from taxotrain.data.ingest import PATH_COLUMN, Ingested, IngestError, _stream_csv, from_rows
from taxotrain.data.metadata import metadata_report_rows
from taxotrain.data.report import PrepareResult, refuse_existing, report_path, write_report
from taxotrain.data.specs import OCCURRENCE_KIND
from taxotrain.data.split import class_mix_distance, grouped_split, stratified_split
from taxotrain.data.store import StoreWriter


def dwca_has_images(archive: DwcArchive) -> bool:
    """Whether any occurrence of the archive names an image."""
    return any(occ.images for occ in archive.occurrences)


def dwca_ingested(path: Path, ranks: Sequence[str], taxonomy: Path | None, group_by: str | None,
                  images: Path | None, unpack_to: Path | None, workers: int = 1) -> Ingested:
    """The records of a Darwin Core Archive: one per image, labelled by the Darwin Core columns ``ranks`` (a name
    known only to a coarser rank, e.g. "Globicephala sp.", is a partial label), grouped by occurrence unless
    ``group_by`` says otherwise. Image references are resolved against ``images`` (default: the archive's folder),
    or, for files packed in the archive, extracted into ``unpack_to``; URLs are listed in the report (taxotrain
    never downloads)."""
    archive = read_dwca(path)
    columns, rows = manifest_rows(archive, ranks)
    for row in rows:
        ref = row[PATH_COLUMN]
        if "://" in ref:
            row["\0skip"] = (f"{ref} is a URL; taxotrain never downloads: fetch the images and give their folder "
                              "as SOURCE")
        elif ref and (PurePosixPath(ref).is_absolute() or ".." in PurePosixPath(ref).parts):
            row["\0skip"] = f"{ref} points outside the archive; name images relative to meta.xml"
    if images is not None:
        base = images
    elif path.is_dir():  # an unzipped archive: its images are read where they are
        base = path / archive.root if archive.root else path
    else:
        base = path.parent
        if unpack_to is not None and _unpack(path, archive.root, [r[PATH_COLUMN] for r in rows
                                                                   if r[PATH_COLUMN] and "\0skip" not in r],
                                             unpack_to):
            base = unpack_to
    rows = [r for r in rows if r[PATH_COLUMN]]  # occurrences without an image have no record in an image store
    group = None if group_by == "none" else (group_by or "id")
    ingested = from_rows(path, columns, rows, ranks, taxonomy, group, base=base, workers=workers)
    ingested.skipped = [*archive.skipped, *ingested.skipped]
    return ingested


def _unpack(archive: Path, root: str, refs: list[str], out: Path) -> bool:
    """Extract the images ``refs`` that are packed in the zip ``archive`` (relative to its ``meta.xml`` in
    ``root``) into ``out``, reading the zip's index once; whether any was packed there."""
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        packed = False
        for ref in dict.fromkeys(refs):
            name = f"{root}/{ref}" if root else ref
            if name in names:
                target = out / ref
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(name))
                packed = True
    return packed


def occurrences_ingested(source: Path, ranks: Sequence[str], taxonomy: Path | None,
                         group_by: str | None, workers: int = 1) -> Ingested:
    """The occurrence records (no images) of a Darwin Core Archive or a manifest CSV without ``filepath``."""
    if zipfile.is_zipfile(source) or source.is_dir():
        archive = read_dwca(source)
        columns, rows = manifest_rows(archive, ranks)
        columns = [c for c in columns if c != PATH_COLUMN]
        skipped = list(archive.skipped)
    else:
        columns, rows = _stream_csv(source)
        skipped = []
    ingested = from_rows(source, columns, rows, ranks, taxonomy, None if group_by == "none" else group_by,
                         files=False, workers=workers)
    ingested.skipped = [*skipped, *ingested.skipped]
    return ingested


def prepare_occurrences(source: Path, out: Path, ranks: Sequence[str], taxonomy: Path | None = None,
                        val: float = 0.1, test: float = 0.1, seed: int = 0, group_by: str | None = None,
                        overwrite: bool = False, workers: int = 0) -> PrepareResult:
    """Occurrence records (a Darwin Core Archive, or a manifest CSV with no ``filepath``) into the store ``out``:
    labels, splits and the place/date/elevation metadata of every record, for a place/date prior. Records whose
    metadata is unusable are kept (the value is stored as missing) and listed in ``<stem>.report.csv``. Their
    place/date text is parsed by ``workers`` processes (0: every core) while the rows are read."""
    refuse_existing(Path(out), overwrite)
    if not 0 <= val < 1 or not 0 <= test < 1 or val + test >= 1:
        raise IngestError(f"--val {val} and --test {test} must be fractions in [0, 1) that sum to less than 1")
    ingested = occurrences_ingested(Path(source), ranks, taxonomy, group_by, workers)
    if not ingested.records:
        raise IngestError(f"no labelled occurrence in {source}; see the reasons in {report_path(Path(out))}")
    if ingested.metadata is None or not ingested.metadata.layout:
        raise IngestError(f"{source}: no place or date columns (decimalLatitude and decimalLongitude, eventDate or "
                          "year/month/day); a place/date prior needs them")
    labels = ingested.labels()
    if ingested.group_by is None:
        splits, too_small = stratified_split(labels, val, test, seed)
    else:
        splits, too_small = grouped_split(labels, ingested.group_names(), val, test, seed), []
    attrs = {"source": str(Path(source).resolve()), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "seed": seed, "val_fraction": val, "test_fraction": test, "command": json.dumps(sys.argv),
             "class_mix_distance": json.dumps(class_mix_distance(labels, splits)),
             **({"group_by": ingested.group_by} if ingested.group_by else {})}
    metadata = ingested.metadata
    with StoreWriter(out, OCCURRENCE_KIND, attrs) as writer:
        writer.write_records(ingested.records.path_view(np.arange(len(labels))), labels, ingested.taxonomy, splits)
        writer.write_metadata(metadata.layout.to_json(), metadata.arrays)
    write_report(report_path(Path(out)), ingested.skipped + metadata_report_rows(metadata))
    classes = dict(zip(ingested.ranks, ingested.taxonomy.num_classes, strict=True))
    partial = int(np.any(labels == -1, axis=1).sum())
    extra = f"{metadata.summary()}; {partial} record(s) identified only to a coarser rank"
    return PrepareResult(Path(out), report_path(Path(out)), len(ingested.records), len(ingested.skipped), classes,
                         {k: len(v) for k, v in splits.items()}, len(too_small), what="occurrence records",
                         unit="row(s)", extra=extra)


DWCA_RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "scientificName")


def default_dwca_ranks(path: Path) -> list[str]:
    """The Darwin Core rank columns an archive fills, from ``order`` down to ``scientificName`` (``--ranks`` when
    it is not given)."""
    archive = read_dwca(path)
    filled = [r for r in DWCA_RANKS[3:] if any(occ.fields.get(r) for occ in archive.occurrences)]
    if len(filled) < 2:
        raise IngestError(f"{path}: give --ranks, coarse to fine, from its columns: {', '.join(archive.columns)}")
    return filled


def manifest_has_files(manifest: Path) -> bool:
    """Whether a manifest CSV names files (a ``filepath`` column) or is occurrence records only."""
    if not manifest.is_file():
        return True  # the image path says "not found"
    with manifest.open(newline="", encoding="utf-8-sig") as fh:
        return PATH_COLUMN in [c.strip() for c in next(csv.reader(fh), [])]

