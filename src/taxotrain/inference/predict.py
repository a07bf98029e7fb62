"""``taxotrain predict``: classify files and folders with a trained run into a CSV, one row per record.

Whatever the task, the rows come from the task's hooks: it reads the inputs (image files, or every series of signal
files) in batches, the model scores them, and the task turns the outputs into records. Rank columns hold the
consistent path (every rank agrees with the tree); ``deepest_rank``/``deepest_label`` hold the roll-up: the
deepest rank confident enough for the target precision chosen at evaluate time. A record that cannot be read gets a
row with its ``error`` and empty predictions; it never stops the batch.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from taxotrain.files import atomic_path
from taxotrain.run import LoadedRun, load_run, torch_threads
from taxotrain.tasks import PredictionRecord, Task


def load_thresholds(run: LoadedRun) -> list[float] | None:
    """Roll-up thresholds from ``rollup.json`` (written by evaluate); ``None`` before any evaluation."""
    path = run.root / "rollup.json"
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())["thresholds"]
    return [float(saved.get(r, 0.5)) for r in run.taxonomy.ranks]


def predict_records(run: LoadedRun, inputs: Sequence[str | Path], topk: int = 5, batch_size: int = 64,
                    workers: int | None = None, tta: str = "auto") -> Iterator[PredictionRecord]:
    """A prediction record per input record, in order (the task reads ``inputs``: files, folders)."""
    task = run.task
    tta = task.resolve_tta(tta)
    thresholds = load_thresholds(run)
    for batch in task.prediction_batches(inputs, batch_size, task.workers(workers)):
        outputs = task.predict_step(run.model, {"input": batch.input}, tta) if batch.input is not None else {}
        yield from task.records(outputs, batch, thresholds, topk)


def predict_loader(task: Task, model: torch.nn.Module, loader: Iterable[dict[str, torch.Tensor]], tta: str = "none",
                   device: str | torch.device = "cpu") -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Outputs (probabilities per rank) of every batch of a store loader, with the labels ``[N, R]`` and the record
    indices ``[N]`` (what evaluate scores)."""
    model.eval().to(device)
    outputs: dict[str, list[np.ndarray]] = {}
    labels, indices = [], []
    for batch in loader:
        inputs = {k: v.to(device) for k, v in batch.items() if k not in ("target", "index")}
        for name, value in task.predict_step(model, inputs, tta).items():
            outputs.setdefault(name, []).append(value)
        labels.append(batch["target"].numpy())
        indices.append(np.asarray(batch["index"]))
    return {k: np.concatenate(v) for k, v in outputs.items()}, np.concatenate(labels), np.concatenate(indices)


def write_predictions(run_dir: str | Path, inputs: Sequence[str | Path], out: str | Path, topk: int = 5,
                      batch_size: int = 64, workers: int | None = None, tta: str = "auto") -> tuple[Path, int, int]:
    """Predict every record under ``inputs`` with the run's best checkpoint into the CSV ``out``; returns (csv, rows,
    errors)."""
    run = load_run(run_dir)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = errors = 0
    with torch_threads(run.config.trainer.cpu_threads), atomic_path(out) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=run.task.prediction_columns(topk))
        writer.writeheader()
        for record in predict_records(run, inputs, topk, batch_size, workers, tta):
            writer.writerow(run.task.prediction_row(record))
            n += 1
            errors += bool(record.error)
    return out, n, errors
