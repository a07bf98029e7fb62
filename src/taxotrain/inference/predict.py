"""``taxotrain predict``: classify files and folders with a trained run into a CSV, one row per record.

Whatever the task, the rows come from the task's hooks: it reads the inputs (image files, or every series of signal
files) in batches, the model scores them, and the task turns the outputs into records. Rank columns hold the
consistent path (every rank agrees with the tree); ``deepest_rank``/``deepest_label`` hold the roll-up: the
deepest rank confident enough for the target precision chosen at evaluate time. A record that cannot be read gets a
row with its ``error`` and empty predictions; it never stops the batch.
"""

from __future__ import annotations

import csv
import itertools
import json
import shlex
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from taxotrain.run import LoadedRun, load_run, torch_threads
from taxotrain.tasks import PredictionRecord, Task
from taxotrain.tasks.classification import DEFAULT_THRESHOLD


@dataclass
class Thresholds:
    """The roll-up thresholds a prediction uses, one per rank, and where they come from."""

    values: list[float]
    source: str


def load_thresholds(run: LoadedRun) -> Thresholds:
    """Roll-up thresholds from ``rollup.json`` (chosen on val by evaluate); 0.5 per rank before any evaluation."""
    path = run.root / "rollup.json"
    if not path.is_file():
        return Thresholds([DEFAULT_THRESHOLD] * len(run.taxonomy.ranks),
                          f"{DEFAULT_THRESHOLD} at every rank: the run was never evaluated, so none were chosen "
                          f"(taxotrain evaluate {shlex.quote(str(run.root))} chooses them on val)")
    saved = json.loads(path.read_text())
    values = [float(saved["thresholds"].get(r, DEFAULT_THRESHOLD)) for r in run.taxonomy.ranks]
    shown = ", ".join(f"{r} {v:.3g}" for r, v in zip(run.taxonomy.ranks, values, strict=True))
    return Thresholds(values, f"{shown}, chosen on {saved.get('chosen_on', 'val')} for a precision of "
                              f"{saved.get('target_precision', '?')}")


def predict_records(run: LoadedRun, inputs: Sequence[str | Path], topk: int = 5, batch_size: int = 64,
                    workers: int | None = None, tta: str = "auto",
                    thresholds: Thresholds | None = None) -> Iterator[list[PredictionRecord]]:
    """The prediction records of each batch of inputs, in order (the task reads ``inputs``: files, folders)."""
    task = run.task
    tta = task.resolve_tta(tta)
    values = (thresholds or load_thresholds(run)).values
    for batch in task.prediction_batches(inputs, batch_size, task.workers(workers)):
        outputs = task.predict_step(run.model, {"input": batch.input}, tta) if batch.input is not None else {}
        yield task.records(outputs, batch, values, topk)


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


@dataclass
class Written:
    """What ``predict`` wrote: the CSV, its rows, how many were errors, and the roll-up thresholds used."""

    path: Path
    rows: int
    errors: int
    thresholds: Thresholds

    def summary(self) -> str:
        """One line for the log."""
        return (f"predicted {self.rows - self.errors} record(s), {self.errors} unreadable (see the error column) -> "
                f"{self.path}; roll-up thresholds: {self.thresholds.source}")


def write_predictions(run_dir: str | Path, inputs: Sequence[str | Path], out: str | Path, topk: int = 5,
                      batch_size: int = 64, workers: int | None = None, tta: str = "auto") -> Written:
    """Predict every record under ``inputs`` with the run's best checkpoint into the CSV ``out``.

    Rows are written and flushed batch by batch, so whatever stops the run (a kill, a crash in a decoder) leaves the
    rows of every batch already predicted in ``out``.
    """
    run = load_run(run_dir)
    thresholds = load_thresholds(run)
    out = Path(out)
    n = errors = 0
    with torch_threads(run.config.trainer.cpu_threads):
        batches = predict_records(run, inputs, topk, batch_size, workers, tta, thresholds)
        first = next(batches, [])  # inputs are found and the first batch is read before `out` is touched
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=run.task.prediction_columns(topk))
            writer.writeheader()
            for records in itertools.chain([first], batches):
                for record in records:
                    writer.writerow(run.task.prediction_row(record))
                    n += 1
                    errors += bool(record.error)
                fh.flush()
    return Written(out, n, errors, thresholds)
