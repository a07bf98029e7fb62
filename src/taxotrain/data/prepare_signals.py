"""``taxotrain prepare`` for 1-D signals: read, verify, balance, split and write ONE HDF5 store atomically.

Two streaming passes over the source, so a file larger than memory never has to fit: the first checks every row
and counts classes and lengths (only a label and a length per row are kept), the second writes the chosen rows in
batches into a preallocated array of the store.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from taxotrain.config import PrepareConfig
from taxotrain.data.ingest import IngestError
from taxotrain.data.report import PrepareResult, refuse_existing, report_path, write_report
from taxotrain.data.signals import SignalReader, create_reader, preprocess
from taxotrain.data.specs import SIGNAL_KIND
from taxotrain.data.split import stratified_split
from taxotrain.data.store import StoreWriter
from taxotrain.taxonomy import Taxonomy

RANK = "class"  # the one rank of a single-label signal set
WRITE_BATCH = 1024


def _natural(names: set[str]) -> list[str]:
    """Class names in numeric order when they are all numbers (UCR labels 1..N), else alphabetical."""
    try:
        return sorted(names, key=float)
    except ValueError:
        return sorted(names)


def _choose(labels: list[str | None], candidates: list[int], per_class: int | str | None,
            seed: int) -> tuple[list[int], int | None]:
    """Seeded downsampling of ``candidates`` to ``per_class`` rows per class (``None`` = smallest class size)."""
    if per_class == "all":
        return candidates, None
    by_class: dict[str, list[int]] = defaultdict(list)
    for i in candidates:
        by_class[labels[i]].append(i)  # type: ignore[index]
    if not by_class:
        return [], None
    k = min(len(v) for v in by_class.values()) if per_class is None else int(per_class)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for name in sorted(by_class):
        idx = np.array(by_class[name])
        chosen += idx.tolist() if len(idx) <= k else np.sort(rng.choice(idx, size=k, replace=False)).tolist()
    return sorted(int(i) for i in chosen), k


def prepare_signals(source: Path, out: Path, options: PrepareConfig | None = None, fmt: str | None = None,
                    classes: Sequence[str] | None = None, overwrite: bool = False, workers: int = 0) -> PrepareResult:
    """Read the signal source ``source`` (see ``taxotrain.data.signals``) into the store ``out``.

    ``options`` holds ``target_length``, ``examples_per_class``, ``znorm``, ``val``, ``test`` and ``seed``;
    ``classes`` optionally lists the allowed class names (a row of any other class is reported, not stored). Bad
    rows are listed (where, reason) in ``<stem>.report.csv`` next to the store. With an official test split (UCR
    folder) the TEST file is the test split, val comes from TRAIN, and downsampling touches TRAIN only. Readers
    that parse text (Capfinder CSVs) do so with ``workers`` processes (0 = every core).
    """
    refuse_existing(Path(out), overwrite)
    opts = options or PrepareConfig()
    if opts.val + opts.test >= 1:
        raise IngestError(f"val {opts.val} and test {opts.test} must sum to less than 1")
    reader = create_reader(source, fmt, workers=workers)
    allowed = set(classes) if classes else None
    labels, lengths, official, skipped, ok = [], [], [], [], []
    test_where: dict[int, str] = {}
    channels: int | None = None
    for i, row in enumerate(reader.rows()):  # pass 1: verify and count
        labels.append(row.label)
        official.append(row.official_test)
        lengths.append(0 if row.values is None else row.values.shape[-1])
        reason = row.reason
        if not reason and row.label is None:
            reason = "no class label"
        if not reason and allowed is not None and row.label not in allowed:
            reason = f"unknown class {row.label!r}; allowed: {', '.join(sorted(allowed))}"
        if not reason and channels is not None and row.values.shape[0] != channels:
            reason = f"{row.values.shape[0]} channel(s), expected {channels}"
        if not reason and channels is None:
            channels = row.values.shape[0]
        if reason:
            skipped.append((row.where, reason))
        else:
            ok.append(i)
            if row.official_test:
                test_where[i] = row.where
    train_classes = {labels[i] for i in ok if not official[i]}
    kept_test = []
    for i in (i for i in ok if official[i]):
        if labels[i] in train_classes:
            kept_test.append(i)
        else:
            skipped.append((test_where[i], f"class {labels[i]!r} of a test series does not occur in TRAIN"))
    if not ok:
        raise IngestError(f"no usable series in {source}; see the reasons in {report_path(Path(out))}")
    chosen, per_class = _choose(labels, [i for i in ok if not official[i]], opts.examples_per_class, opts.seed)
    keep = sorted(chosen + kept_test)
    length = opts.target_length or max(lengths[i] for i in keep)
    names = _natural({labels[i] for i in keep})  # type: ignore[arg-type]
    taxonomy = Taxonomy.from_rows([RANK], [(n,) for n in names])
    y = np.array([[taxonomy.index(0, labels[i])] for i in keep], dtype=np.int64)  # type: ignore[arg-type]
    is_test = np.array([official[i] for i in keep], dtype=bool)
    if reader.has_official_split:
        rest = np.flatnonzero(~is_test)
        parts, too_small = stratified_split(y[rest], opts.val, 0.0, opts.seed)
        splits = {"train": rest[parts["train"]], "val": rest[parts["val"]], "test": np.flatnonzero(is_test)}
    else:
        splits, too_small = stratified_split(y, opts.val, opts.test, opts.seed)
    splits = {k: np.sort(v).astype(np.int64) for k, v in splits.items()}

    out = Path(out)
    _write(out, reader, keep, y, splits, taxonomy, channels or 1, length, opts, per_class, source)
    write_report(report_path(out), skipped)
    counts = Counter(labels[i] for i in keep)
    result = PrepareResult(out, report_path(out), len(keep), len(skipped), {RANK: len(names)},
                           {k: len(v) for k, v in splits.items()}, len(too_small), what="series",
                           unit="row(s)")
    result.extra = (f"length {length} ({'z-normalised' if opts.znorm else 'raw values'}); per class "
                    + ", ".join(f"{n} {counts[n]}" for n in names))
    if opts.znorm and (channels or 1) > 1:
        result.extra += (f"; note: --znorm gave each of the {channels} channels of every series mean 0 and std 1, "
                         "which removes each channel's level; prepare again without it if levels can tell the "
                         "classes apart (JapaneseVowels: top-1 0.86 with it, 0.98 without)")
    return result


def _write(out: Path, reader: SignalReader, keep: list[int], y: np.ndarray, splits: dict[str, np.ndarray],
           taxonomy: Taxonomy, channels: int, length: int, opts: PrepareConfig, per_class: int | None,
           source: Path) -> None:
    """Pass 2: stream the chosen rows into the store's dense payload in batches, with the train statistics."""
    position = {i: n for n, i in enumerate(keep)}  # source row -> store record
    in_train = np.zeros(len(keep), dtype=bool)
    in_train[splits["train"]] = True
    sums, sq, count = np.zeros(channels), np.zeros(channels), 0
    ids: list[str] = []
    wheres: list[str] = []
    lengths = np.zeros(len(keep), dtype=np.int32)
    attrs = {"source": str(Path(source).resolve()), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "seed": opts.seed, "val_fraction": opts.val, "test_fraction": opts.test, "reader": reader.name,
             "official_test_split": reader.has_official_split, "target_length": length, "znorm": opts.znorm,
             "channels": channels, "examples_per_class": per_class if per_class is not None else "all",
             "command": json.dumps(sys.argv)}
    with StoreWriter(out, SIGNAL_KIND, attrs) as writer:
        values = writer.dense((len(keep), channels, length), lengths)
        buf: list[np.ndarray] = []
        start = 0
        for i, row in enumerate(reader.rows()):
            n = position.get(i)
            if n is None:
                continue
            x = preprocess(row.values, length, opts.znorm)  # type: ignore[arg-type]
            lengths[n] = min(row.values.shape[-1], length)  # type: ignore[union-attr]
            if in_train[n]:
                real = x[:, : lengths[n]].astype(np.float64)
                sums += real.sum(-1)
                sq += (real**2).sum(-1)
                count += real.shape[-1]
            ids.append(row.read_id)
            wheres.append(row.where)
            buf.append(x)
            if len(buf) == WRITE_BATCH:
                values[start : start + len(buf)] = np.stack(buf)
                start += len(buf)
                buf = []
        if buf:
            values[start : start + len(buf)] = np.stack(buf)
        writer.file["signals/length"][...] = lengths
        mean = sums / max(1, count)
        writer.attrs.update({"mean_signal": mean.tolist(),
                             "std_signal": np.sqrt(np.maximum(sq / max(1, count) - mean**2, 1e-12)).tolist()})
        writer.write_records(ids, y, taxonomy, splits)
        writer.file.create_dataset("records/where", data=np.array(wheres, dtype=h5py.string_dtype()))
