"""``taxotrain prepare`` for images: ingest, verify every file, split, and write ONE HDF5 store atomically."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from rich.progress import track

from taxotrain.data.ingest import Ingested, IngestError, from_folder, from_manifest
from taxotrain.data.report import PrepareResult, refuse_existing, report_path, write_report
from taxotrain.data.specs import IMAGE_KIND
from taxotrain.data.split import stratified_split
from taxotrain.data.store import StoreWriter
from taxotrain.data.verify import Verified, verify_image

COPY_CHUNK = 64 << 20


def prepare_images(
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
) -> PrepareResult:
    """Ingest images from a class-folder tree (``source``) or a ``manifest`` CSV into the store ``out``.

    Every file is decoded once; unreadable ones are skipped and listed (path, reason) in ``<stem>.report.csv``
    next to the store. The store is written to a temporary file and renamed at the end, so an interrupted run
    leaves no half store. ``workers=0`` uses every CPU core. An existing ``out`` is replaced only with
    ``overwrite``.
    """
    refuse_existing(Path(out), overwrite)
    if manifest is not None:
        ingested = from_manifest(manifest, ranks, taxonomy)
        origin = manifest
    elif source is not None:
        ingested = from_folder(source, ranks, taxonomy)
        origin = source
    else:
        raise IngestError("give a folder of class folders or --manifest FILE.csv")
    if not 0 <= val < 1 or not 0 <= test < 1 or val + test >= 1:
        raise IngestError(f"--val {val} and --test {test} must be fractions in [0, 1) that sum to less than 1")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    show = sys.stderr.isatty() if progress is None else progress
    spool = out.with_name(f".{out.name}.{os.getpid()}.bytes.tmp")
    try:
        kept, skipped = _verify_all(ingested, spool, workers, show)
        if not kept:
            raise IngestError(f"no readable image in {origin}; see the reasons in {report_path(out)}")
        labels = np.stack([ingested.taxonomy.encode(ingested.records[i].names) for i, _ in kept])
        splits, too_small = stratified_split(labels, val, test, seed)
        _write_store(out, spool, ingested, kept, labels, splits, origin, seed, val, test)
        write_report(report_path(out), ingested.skipped + skipped)
    finally:
        spool.unlink(missing_ok=True)
    classes = dict(zip(ingested.ranks, ingested.taxonomy.num_classes, strict=True))
    return PrepareResult(out, report_path(out), len(kept), len(ingested.skipped) + len(skipped), classes,
                         {k: len(v) for k, v in splits.items()}, len(too_small))


def _verified(paths: list[Path], workers: int) -> Iterator[Verified]:
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(paths) < 64:
        yield from map(verify_image, paths)
        return
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with ctx.Pool(workers) as pool:
        yield from pool.imap(verify_image, paths, chunksize=32)


def _verify_all(
    ingested: Ingested, spool: Path, workers: int, show: bool
) -> tuple[list[tuple[int, Verified]], list[tuple[str, str]]]:
    """Decode all records and append accepted bytes to ``spool``; returns kept (record index, result) and skips."""
    kept: list[tuple[int, Verified]] = []
    skipped: list[tuple[str, str]] = []
    paths = [r.path for r in ingested.records]
    results = _verified(paths, workers)
    with spool.open("wb") as fh:
        for i, res in enumerate(track(results, total=len(paths), description="verifying", disable=not show)):
            if not res.ok:
                skipped.append((ingested.records[i].relpath, res.reason))
                continue
            fh.write(res.data)
            res.nbytes, res.data = len(res.data), b""  # the bytes now live in the spool: memory stays flat
            kept.append((i, res))
    return kept, skipped


def _channel_stats(items: list[Verified]) -> dict[str, list[float]]:
    n = sum(v.pixels for v in items)
    sums = np.sum([v.sums for v in items], axis=0)
    sq = np.sum([v.sq_sums for v in items], axis=0)
    mean = sums / n
    std = np.sqrt(np.maximum(sq / n - mean**2, 1e-12))
    return {"mean_rgb": mean[:3].tolist(), "std_rgb": std[:3].tolist(), "mean_gray": [float(mean[3])],
            "std_gray": [float(std[3])]}


def _write_store(out: Path, spool: Path, ingested: Ingested, kept: list[tuple[int, Verified]], labels: np.ndarray,
                 splits: dict[str, np.ndarray], origin: Path, seed: int, val: float, test: float) -> None:
    verified = [v for _, v in kept]
    stats = _channel_stats([verified[i] for i in splits["train"]] or verified)
    attrs = {"source": str(Path(origin).resolve()), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "seed": seed, "val_fraction": val, "test_fraction": test, "grayscale": all(v.gray for v in verified),
             "command": json.dumps(sys.argv), **stats}
    with StoreWriter(out, IMAGE_KIND, attrs) as writer:
        writer.write_records([ingested.records[i].relpath for i, _ in kept], labels, ingested.taxonomy, splits)
        data = writer.encoded(np.array([v.nbytes for v in verified]), np.array([v.height for v in verified]),
                              np.array([v.width for v in verified]))
        with spool.open("rb") as fh:
            pos = 0
            while chunk := fh.read(COPY_CHUNK):
                data[pos : pos + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
                pos += len(chunk)
