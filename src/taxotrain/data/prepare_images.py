"""``taxotrain prepare`` for images: ingest, verify every file, split, and write ONE HDF5 store atomically."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import track

from taxotrain.data.duplicates import NEAR_DISTANCE, WORDS, FirstOfEach, duplicate_pairs
from taxotrain.data.ingest import Ingested, IngestError, from_folder, from_manifest
from taxotrain.data.kept import KeptImages
from taxotrain.data.metadata import Metadata, metadata_report_rows
from taxotrain.data.pool import ordered_map
from taxotrain.data.report import PrepareResult, refuse_existing, report_path, write_report
from taxotrain.data.specs import IMAGE_KIND
from taxotrain.data.split import (
    choose_holdout,
    class_mix_distance,
    grouped_split,
    holdout_split,
    stratified_split,
)
from taxotrain.data.store import HELDOUT, StoreWriter
from taxotrain.data.verify import Verified, verify_image
from taxotrain.files import atomic_path

COPY_CHUNK = 8 << 20  # spool -> store in pieces this big: a constant, whatever the corpus size


def prepare_images(source: Path | None, out: Path, ranks: Sequence[str], taxonomy: Path | None = None,
                   **options: Any) -> PrepareResult:
    """Ingest images from a class-folder tree (``source``), a ``manifest`` CSV, an EcoTaxa or COCO Camera Traps
    export or a Darwin Core Archive (``dwca``) into the store ``out``; see :func:`_prepare` for every option.

    Images packed in a Darwin Core Archive are extracted beside ``out`` for the length of the prepare and removed
    after it, whether it succeeds or fails.
    """
    unpacked = Path(out).with_name(f".{Path(out).name}.{os.getpid()}.unpacked")
    try:
        return _prepare(unpacked, source, out, ranks, taxonomy, **options)
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)


def _prepare(
    unpacked: Path,
    source: Path | None,
    out: Path,
    ranks: Sequence[str],
    taxonomy: Path | None = None,
    manifest: Path | None = None,
    val: float = 0.1,
    test: float = 0.1,
    seed: int = 0,
    workers: int = 0,
    progress: bool | None = None,
    overwrite: bool = False,
    group_by: str | None = None,
    dedupe: bool = False,
    ecotaxa: Path | None = None,
    coco_ct: Path | None = None,
    near_distance: int = NEAR_DISTANCE,
    leak_check: bool = True,
    holdout_classes: str | None = None,
    holdout_rank: str | None = None,
    dwca: Path | None = None,
) -> PrepareResult:
    """Ingest images from a class-folder tree (``source``) or a ``manifest`` CSV into the store ``out``.

    Every file is decoded once; unreadable ones are skipped and listed (path, reason) in ``<stem>.report.csv``
    next to the store. The store is written to a temporary file and renamed at the end, so an interrupted run
    leaves no half store. ``workers=0`` uses every CPU core. An existing ``out`` is replaced only with
    ``overwrite``. ``group_by`` (a manifest column: site, cruise, observation id, date) keeps each group's records
    inside one split, stratified as far as the groups allow. ``ecotaxa`` (an EcoTaxa TSV export) and ``coco_ct`` (a
    COCO Camera Traps JSON) are read by ``data/importers.py``, with ``source`` as the folder their file names are
    relative to (default: the export's folder), grouped by sample or location unless ``group_by`` says otherwise
    (``none``: no groups). Every prepare lists the exact and near-duplicate images that straddle splits in
    ``<stem>.leaks.csv``; ``dedupe`` keeps only the first of each set of copies. Near means perceptual hashes at
    most ``near_distance`` bits apart (of 256); the check compares every pair (N^2/2), so ``leak_check=False`` skips
    it for corpora of millions. ``holdout_classes`` (a fraction of the classes at ``holdout_rank``, default the
    finest, or a file of class names) moves those classes' records out of train/val/test into a ``heldout`` split:
    new species for few-shot and open-set evaluation.
    """
    refuse_existing(Path(out), overwrite)
    if not 0 <= near_distance <= 256:
        raise IngestError(f"--near-distance {near_distance}: give a number of bits from 0 to 256 (default "
                          f"{NEAR_DISTANCE})")
    if sum(x is not None for x in (manifest, ecotaxa, coco_ct, dwca)) > 1:
        raise IngestError("give one of --manifest, --ecotaxa, --coco-ct and --dwca")
    if dwca is not None:  # images named by a Darwin Core Archive's multimedia extension
        from taxotrain.data.prepare_occurrences import dwca_ingested

        ingested, origin = dwca_ingested(dwca, ranks, taxonomy, group_by, source, unpacked, workers), dwca
    elif ecotaxa is not None or coco_ct is not None:
        from taxotrain.data.importers import from_coco_ct, from_ecotaxa

        origin = ecotaxa or coco_ct
        read = from_ecotaxa if ecotaxa is not None else from_coco_ct
        ingested = read(origin, ranks, taxonomy, group_by, images=source, workers=workers)
    elif manifest is not None:
        ingested = from_manifest(manifest, ranks, taxonomy, None if group_by == "none" else group_by, workers)
        origin = manifest
    elif group_by not in (None, "none"):
        raise IngestError(f"--group-by {group_by} reads a column of a manifest; give --manifest FILE.csv with a "
                          f"'{group_by}' column")
    elif source is not None:
        ingested = from_folder(source, ranks, taxonomy)
        origin = source
    else:
        raise IngestError("give a folder of class folders, --manifest FILE.csv, --ecotaxa EXPORT.tsv or --coco-ct "
                          "FILE.json")
    group_by = ingested.group_by
    if not 0 <= val < 1 or not 0 <= test < 1 or val + test >= 1:
        raise IngestError(f"--val {val} and --test {test} must be fractions in [0, 1) that sum to less than 1")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    show = sys.stderr.isatty() if progress is None else progress
    spool = out.with_name(f".{out.name}.{os.getpid()}.bytes.tmp")
    try:
        kept, skipped = _verify_all(ingested, spool, workers, show, near_distance if dedupe else None)
        if not kept:
            raise IngestError(f"no readable image in {origin}; see the reasons in {report_path(out)}")
        rows = kept.records  # the ingested record of each kept image
        labels = ingested.labels(rows)
        heldout = _heldout(labels, ingested, holdout_classes, holdout_rank, seed)
        rest = np.setdiff1d(np.arange(len(labels)), heldout) if heldout is not None else np.arange(len(labels))
        if group_by is None:
            local, too_small = stratified_split(labels[rest], val, test, seed)
        else:
            groups = ingested.group_names(rows[rest])
            local, too_small = grouped_split(labels[rest], groups, val, test, seed), []
            empty = [name for name, f in (("val", val), ("test", test)) if f > 0 and len(local[name]) == 0]
            if empty:
                raise IngestError(f"--group-by {group_by}: only {len(set(groups))} group(s), too few to give "
                                  f"{' and '.join(empty)} a whole group each; group by a finer column, or "
                                  f"--group-by none")
        distance = class_mix_distance(labels[rest], local)
        splits = {name: rest[idx] for name, idx in local.items()}
        if heldout is not None:
            splits[HELDOUT] = heldout
        grouping = {"group_by": group_by, "class_mix_distance": json.dumps(distance)}
        metadata = ingested.metadata.select(rows) if ingested.metadata is not None else None
        _write_store(out, spool, ingested, kept, rows, labels, splits, origin, seed, val, test, grouping, metadata)
        write_report(report_path(out), ingested.skipped + skipped + metadata_report_rows(metadata))
        leaks = (write_leaks(leaks_path(out), kept, splits, ingested.records.path_view(rows),
                             near_distance) if leak_check else None)
    finally:
        spool.unlink(missing_ok=True)
    classes = dict(zip(ingested.ranks, ingested.taxonomy.num_classes, strict=True))
    parts = [metadata.summary()] if metadata is not None else []
    if group_by is not None:
        n_groups = len(np.unique(ingested.records.group_ids()[0][rows]))
        parts.append(f"{n_groups} groups by '{group_by}', each inside one split; class mix distance from the whole "
                     "(total variation) " + ", ".join(f"{k} {v:.3f}" for k, v in distance.items()))
    if leaks is not None:
        parts.append(f"leak check: {leaks['exact']} exact and {leaks['near']} near-duplicate pair(s) straddle "
                     "splits" + (f", listed in {leaks_path(out)} (--dedupe keeps one of each)"
                                 if leaks["exact"] + leaks["near"] else ""))
    extra = "; ".join(parts)
    return PrepareResult(out, report_path(out), len(kept), len(ingested.skipped) + len(skipped), classes,
                         {k: len(v) for k, v in splits.items()}, len(too_small), extra=extra)


def _heldout(labels: np.ndarray, ingested: Ingested, spec: str | None, rank: str | None,
             seed: int) -> np.ndarray | None:
    """The records of the classes ``--holdout-classes`` holds out (``None`` when it is not given)."""
    if spec is None:
        return None
    ranks = list(ingested.ranks)
    if rank is not None and rank not in ranks:
        raise IngestError(f"--holdout-rank {rank}: not one of the ranks ({', '.join(ranks)})")
    r = ranks.index(rank) if rank is not None else len(ranks) - 1
    try:
        classes = choose_holdout(labels, ingested.taxonomy.names[r], r, spec, seed)
    except ValueError as exc:
        raise IngestError(str(exc)) from None
    return holdout_split(labels, r, classes)


VERIFY_CHUNK = 32  # paths per task sent to a worker
IN_FLIGHT = 8  # tasks per worker sent ahead of the one awaited


def _verify_chunk(paths: list[str]) -> list[Verified]:
    return [verify_image(p) for p in paths]


def _verified(paths: Iterable[str], count: int, workers: int) -> Iterator[Verified]:
    """``verify_image`` of each path, in order, by ``workers`` processes, ``VERIFY_CHUNK`` paths per task and at
    most ``IN_FLIGHT`` tasks per worker sent ahead (``data/pool.py``)."""
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or count < 64:
        yield from map(verify_image, paths)
        return
    for done in ordered_map(_verify_chunk, _chunks(paths, VERIFY_CHUNK), workers, IN_FLIGHT):
        yield from done


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _verify_all(
    ingested: Ingested, spool: Path, workers: int, show: bool, dedupe: int | None = None
) -> tuple[KeptImages, list[tuple[str, str]]]:
    """Decode all records and append accepted bytes to ``spool``; returns what is kept of each accepted image and
    the skips.
    With ``dedupe`` (a distance in bits), an image that copies one already kept (same pixels, or a perceptual hash
    at most that far) is skipped with the name of the one kept."""
    kept = KeptImages(spool.parent)  # beside the store, as the spool: a tmpfs /tmp would hold it in memory
    skipped: list[tuple[str, str]] = []
    count = len(ingested.records)
    results = _verified(ingested.records.paths(), count, workers)  # each path read from disk when it is sent
    first = FirstOfEach(dedupe) if dedupe is not None else None
    with spool.open("wb") as fh:
        for i, res in enumerate(track(results, total=count, description="verifying", disable=not show)):
            if not res.ok:
                skipped.append((ingested.records.relpath(i), res.reason))
                continue
            copy = first.seen(res.phash, res.digest) if first is not None else None
            if copy is not None:
                twin = ingested.records.relpath(kept.record_at(copy[0]))
                skipped.append((ingested.records.relpath(i), f"--dedupe: {'a copy' if copy[1] == 0 else 'a near copy'}"
                                f" of {twin} (perceptual hashes {copy[1]} bits apart); kept that one"))
                continue
            fh.write(res.data)
            kept.add(i, res, len(res.data))  # the bytes now live in the spool, a few numbers in `kept`
    return kept, skipped


def _write_store(out: Path, spool: Path, ingested: Ingested, kept: KeptImages, rows: np.ndarray, labels: np.ndarray,
                 splits: dict[str, np.ndarray], origin: Path, seed: int, val: float, test: float,
                 grouping: dict[str, str | None], metadata: Metadata | None = None) -> None:
    stats = kept.channel_stats(splits["train"] if len(splits["train"]) else None)
    attrs = {"source": str(Path(origin).resolve()), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "seed": seed, "val_fraction": val, "test_fraction": test, "grayscale": kept.all_gray(),
             "command": json.dumps(sys.argv), **stats,
             **{k: v for k, v in grouping.items() if v is not None}}
    with StoreWriter(out, IMAGE_KIND, attrs) as writer:
        writer.write_records(ingested.records.path_view(rows), labels, ingested.taxonomy, splits)
        phash = writer.file.create_dataset("records/phash", shape=(len(kept), WORDS), dtype=np.uint64)
        if metadata is not None:
            writer.write_metadata(metadata.layout.to_json(), metadata.arrays)
        index = writer.encoded_index(len(kept), kept.total_bytes())
        pos = 0
        for piece in kept.pieces(["nbytes", "height", "width", "phash"]):  # a piece at a time: memory stays flat
            index.fill(pos, piece["nbytes"], piece["height"], piece["width"])
            phash[pos : pos + len(piece)] = piece["phash"]
            pos += len(piece)
        data = index.data
        with spool.open("rb") as fh:
            pos = 0
            while chunk := fh.read(COPY_CHUNK):
                data[pos : pos + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
                pos += len(chunk)


def leaks_path(store: Path) -> Path:
    """Where the leak check's pairs go: next to the store, ``<stem>.leaks.csv``."""
    return store.with_name(store.stem + ".leaks.csv")


def write_leaks(path: Path, kept: KeptImages, splits: dict[str, np.ndarray],
                paths: Sequence[str], near_distance: int = NEAR_DISTANCE) -> dict[str, int]:
    """Write the duplicate pairs whose two images lie in different splits to ``path`` (closest first) and count
    them (``exact``, ``near``) and every duplicate pair (``within``: both in one split)."""
    split_of = np.empty(len(kept), dtype=object)
    for name, idx in splits.items():
        split_of[idx] = name
    counts = {"exact": 0, "near": 0, "within": 0}
    rows = []
    for pair in duplicate_pairs(kept.phashes(), kept.digests(), near_distance):
        if split_of[pair.a] == split_of[pair.b]:
            counts["within"] += 1
            continue
        counts["exact" if pair.exact else "near"] += 1
        rows.append({"kind": "exact" if pair.exact else "near", "distance": pair.distance,
                     "split_a": split_of[pair.a], "path_a": paths[pair.a], "split_b": split_of[pair.b],
                     "path_b": paths[pair.b]})
    rows.sort(key=lambda r: (r["distance"], r["path_a"]))
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["kind", "distance", "split_a", "path_a", "split_b", "path_b"])
        writer.writeheader()
        writer.writerows(rows)
    return counts
