"""``taxotrain predict`` for a signal run: classify every series of Capfinder CSVs, ``.ts`` or NumPy files.

One CSV row per series: ``read_id`` (the CSV's read id, or the row index in a ``.ts``/NumPy file), ``source`` (file
and line), the predicted ``class`` with its score, the top-k classes and, when the input carries a label,
``true_class``. A bad row (non-numeric value, empty series) gets its ``error`` and empty predictions.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from taxotrain.data.signal_data import build_signal_transforms
from taxotrain.data.signals import SignalRow, create_reader, preprocess
from taxotrain.evaluation.metrics import model_probs
from taxotrain.files import atomic_path
from taxotrain.run import LoadedRun, RunError, torch_threads


def _rows(inputs: Sequence[str | Path]) -> Iterator[SignalRow]:
    for item in inputs:
        yield from create_reader(Path(item)).rows()


def write_signal_predictions(run: LoadedRun, inputs: Sequence[str | Path], out: str | Path, topk: int = 5,
                             batch_size: int = 256) -> tuple[Path, int, int]:
    """Predict every series in ``inputs`` (files or folders any signal reader accepts) streaming in batches;
    returns (csv, rows, errors)."""
    for item in inputs:
        if not Path(item).exists():
            raise RunError(f"{item}: no such file or folder to predict")
    meta, tax = run.meta, run.taxonomy
    length, znorm = int(meta["length"]), bool(meta.get("znorm"))
    transform = build_signal_transforms(meta["mean"], meta["std"], train=False)
    rank = tax.finest
    k = min(topk, tax.num_classes[-1])
    columns = ["read_id", "source", rank, f"{rank}_score"]
    columns += [c for i in range(1, k + 1) for c in (f"{rank}_top{i}", f"{rank}_top{i}_score")]
    columns += ["true_class", "error"]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = errors = 0
    rows = _rows(inputs)
    with torch_threads(run.config.trainer.cpu_threads), atomic_path(out) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        while batch := list(islice(rows, batch_size)):
            good = [r for r in batch if r.values is not None and r.values.shape[0] == run.in_chans]
            probs = np.zeros((0, tax.num_classes[-1]))
            if good:
                x = torch.stack([transform(torch.from_numpy(preprocess(r.values, length, znorm))) for r in good])
                probs = model_probs(run.model, x, tax.ranks)[rank]
            scored = dict(zip(map(id, good), probs, strict=True))
            for r in batch:
                row: dict[str, object] = {"read_id": r.read_id, "source": r.where, "true_class": r.label or ""}
                p = scored.get(id(r))
                if p is None:
                    row["error"] = r.reason or f"{r.values.shape[0]} channel(s), the model takes {run.in_chans}"
                    errors += 1
                else:
                    order = np.argsort(-p)[:k]
                    row[rank], row[f"{rank}_score"] = tax.names[-1][order[0]], round(float(p[order[0]]), 6)
                    for i, c in enumerate(order, 1):
                        row[f"{rank}_top{i}"], row[f"{rank}_top{i}_score"] = tax.names[-1][c], round(float(p[c]), 6)
                writer.writerow(row)
                n += 1
    if n == 0:
        raise RunError(f"no series found in {', '.join(map(str, inputs))}")
    return out, n, errors
