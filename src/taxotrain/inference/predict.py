"""``taxotrain predict``: classify image files and folders into a CSV, one row per file.

A file that cannot be read gets a row with its ``error`` and empty predictions; it never stops the batch.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from taxotrain.data.images import build_transforms, read_image_file
from taxotrain.data.ingest import IMAGE_SUFFIXES
from taxotrain.run import LoadedRun, RunError, load_run
from taxotrain.training.datamodule import resolve_workers


def find_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Files given directly, plus image files found recursively (sorted) under given folders."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                            and not any(part.startswith(".") for part in f.relative_to(p).parts))
        elif p.exists():
            found.append(p)
        else:
            raise RunError(f"{p}: no such file or folder to predict")
    return found


class _Files(Dataset):
    def __init__(self, files: list[Path], transform: torch.nn.Module, channels: int, size: int) -> None:
        self.files, self.transform, self.channels, self.size = files, transform, channels, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        try:
            return self.transform(read_image_file(self.files[i], self.channels)), ""
        except (OSError, ValueError, RuntimeError) as exc:
            return torch.zeros(self.channels, self.size, self.size), str(exc).splitlines()[0] or type(exc).__name__


@dataclass
class Prediction:
    """Top-1 per rank and the finest rank's top-k for one file."""

    path: str
    labels: dict[str, tuple[str, float]]
    topk: list[tuple[str, float]]
    error: str = ""


def predict_files(run: LoadedRun, files: list[Path], topk: int = 5, batch_size: int = 64,
                  workers: int | None = None) -> Iterator[Prediction]:
    """Yield a ``Prediction`` per file, in order."""
    meta, tax = run.meta, run.taxonomy
    size = int(meta["image_size"])
    tf = build_transforms(size, meta["mean"], meta["std"], train=False, pad_fill=meta.get("pad_fill", "edge"))
    nw = resolve_workers(run.config.data.num_workers if workers is None else workers)
    loader = DataLoader(_Files(files, tf, run.in_chans, size), batch_size=batch_size, num_workers=nw)
    k = min(topk, tax.num_classes[-1])
    start = 0
    with torch.no_grad():
        for x, errors in loader:
            out = run.model(x)
            probs = {r: out[r].float().softmax(-1).numpy() for r in tax.ranks}
            for b, err in enumerate(errors):
                path = str(files[start + b])
                if err:
                    yield Prediction(path, {}, [], err)
                    continue
                labels = {}
                for r, rank in enumerate(tax.ranks):
                    i = int(np.argmax(probs[rank][b]))
                    labels[rank] = (tax.names[r][i], float(probs[rank][b, i]))
                fine = probs[tax.finest][b]
                order = np.argsort(-fine)[:k]
                yield Prediction(path, labels, [(tax.names[-1][i], float(fine[i])) for i in order])
            start += len(errors)


def write_predictions(run_dir: str | Path, inputs: Sequence[str | Path], out: str | Path, topk: int = 5,
                      batch_size: int = 64, workers: int | None = None) -> tuple[Path, int, int]:
    """Predict every image under ``inputs`` with the run's best checkpoint; returns (csv, rows, errors)."""
    run = load_run(run_dir)
    files = find_images(inputs)
    if not files:
        raise RunError(f"no image files found in {', '.join(map(str, inputs))} (looked for "
                       f"{', '.join(sorted(IMAGE_SUFFIXES))})")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ranks, fine = run.taxonomy.ranks, run.taxonomy.finest
    k = min(topk, run.taxonomy.num_classes[-1])
    columns = ["path"] + [c for r in ranks for c in (r, f"{r}_score")]
    columns += [c for i in range(1, k + 1) for c in (f"{fine}_top{i}", f"{fine}_top{i}_score")] + ["error"]
    tmp = out.with_name(f".{out.name}.tmp")
    n = errors = 0
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for p in predict_files(run, files, topk, batch_size, workers):
            row: dict[str, object] = {"path": p.path, "error": p.error}
            for rank, (label, score) in p.labels.items():
                row[rank], row[f"{rank}_score"] = label, round(score, 6)
            for i, (label, score) in enumerate(p.topk, 1):
                row[f"{fine}_top{i}"], row[f"{fine}_top{i}_score"] = label, round(score, 6)
            writer.writerow(row)
            n += 1
            errors += bool(p.error)
    os.replace(tmp, out)
    return out, n, errors
