"""``taxotrain predict``: classify image files and folders into a CSV, one row per file.

Rank columns hold the consistent path (every rank agrees with the tree); ``deepest_rank``/``deepest_label`` hold the
roll-up: the deepest rank confident enough for the target precision chosen at evaluate time. A file that cannot be
read gets a row with its ``error`` and empty predictions; it never stops the batch.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from taxotrain.data.images import build_transforms, read_image_file
from taxotrain.data.ingest import IMAGE_SUFFIXES
from taxotrain.evaluation.metrics import model_probs, resolve_tta
from taxotrain.files import atomic_path
from taxotrain.inference.decode import decode, roll_up
from taxotrain.run import LoadedRun, RunError, load_run
from taxotrain.taxonomy import NULL
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
    """Consistent path (label, score per rank; ``None`` where the path skips a rank), the roll-up and top-k."""

    path: str
    labels: dict[str, tuple[str | None, float]]
    topk: list[tuple[str, float]]
    deepest: tuple[str, str] | None = None
    error: str = ""


def load_thresholds(run: LoadedRun) -> list[float]:
    """Roll-up thresholds from ``rollup.json`` (written by evaluate), or 0.5 per rank before any evaluation."""
    path = run.checkpoint.parent.parent / "rollup.json"
    if path.is_file():
        saved = json.loads(path.read_text())["thresholds"]
        return [float(saved.get(r, 0.5)) for r in run.taxonomy.ranks]
    return [0.5] * len(run.taxonomy.ranks)


def predict_files(run: LoadedRun, files: list[Path], topk: int = 5, batch_size: int = 64,
                  workers: int | None = None, tta: str = "none") -> Iterator[Prediction]:
    """Yield a ``Prediction`` per file, in order."""
    meta, tax = run.meta, run.taxonomy
    size = int(meta["image_size"])
    tf = build_transforms(size, meta["mean"], meta["std"], train=False, pad_fill=meta.get("pad_fill", "edge"))
    nw = resolve_workers(run.config.data.num_workers if workers is None else workers)
    loader = DataLoader(_Files(files, tf, run.in_chans, size), batch_size=batch_size, num_workers=nw)
    k = min(topk, tax.num_classes[-1])
    thresholds = load_thresholds(run)
    start = 0
    for x, errors in loader:
        probs = model_probs(run.model, x, tax.ranks, tta)
        decoded = decode(probs, tax)
        deepest, _ = roll_up(decoded, thresholds)
        for b, err in enumerate(errors):
            path = str(files[start + b])
            if err:
                yield Prediction(path, {}, [], error=err)
                continue
            labels = {rank: (tax.names[r][i] if (i := int(decoded.labels[b, r])) != NULL else None,
                             float(decoded.scores[b, r])) for r, rank in enumerate(tax.ranks)}
            fine = probs[tax.finest][b]
            order = np.argsort(-fine)[:k]
            d = int(deepest[b])
            rolled = (tax.ranks[d], tax.names[d][decoded.labels[b, d]]) if d >= 0 else None
            yield Prediction(path, labels, [(tax.names[-1][i], float(fine[i])) for i in order], rolled)
        start += len(errors)


def write_predictions(run_dir: str | Path, inputs: Sequence[str | Path], out: str | Path, topk: int = 5,
                      batch_size: int = 64, workers: int | None = None, tta: str = "auto") -> tuple[Path, int, int]:
    """Predict every image (or, for a signal run, every series) under ``inputs`` with the run's best checkpoint;
    returns (csv, rows, errors)."""
    run = load_run(run_dir)
    if run.config.task == "signal":
        from taxotrain.inference.predict_signals import write_signal_predictions

        if tta not in ("none", "auto"):
            raise RunError(f"--tta {tta} flips images; a signal run takes --tta none")
        return write_signal_predictions(run, inputs, out, topk=topk, batch_size=batch_size)
    tta = resolve_tta(tta, run.config)
    files = find_images(inputs)
    if not files:
        raise RunError(f"no image files found in {', '.join(map(str, inputs))} (looked for "
                       f"{', '.join(sorted(IMAGE_SUFFIXES))})")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ranks, fine = run.taxonomy.ranks, run.taxonomy.finest
    k = min(topk, run.taxonomy.num_classes[-1])
    columns = ["path"] + [c for r in ranks for c in (r, f"{r}_score")]
    columns += ["deepest_rank", "deepest_label"]
    columns += [c for i in range(1, k + 1) for c in (f"{fine}_top{i}", f"{fine}_top{i}_score")] + ["error"]
    n = errors = 0
    with atomic_path(out) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for p in predict_files(run, files, topk, batch_size, workers, tta):
            row: dict[str, object] = {"path": p.path, "error": p.error}
            for rank, (label, score) in p.labels.items():
                row[rank], row[f"{rank}_score"] = label or "", round(score, 6) if label else ""
            if p.deepest:
                row["deepest_rank"], row["deepest_label"] = p.deepest
            for i, (label, score) in enumerate(p.topk, 1):
                row[f"{fine}_top{i}"], row[f"{fine}_top{i}_score"] = label, round(score, 6)
            writer.writerow(row)
            n += 1
            errors += bool(p.error)
    return out, n, errors
