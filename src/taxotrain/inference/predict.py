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
import shlex
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError

from taxotrain.config import Config, one_line_error
from taxotrain.data.specs import InputSpec
from taxotrain.inference.gallery import Gallery, gallery_embedder
from taxotrain.inference.prior import PriorFusion
from taxotrain.run import LoadedRun, RunError, load_run, torch_threads
from taxotrain.run_folder import RunPaths
from taxotrain.tasks import PredictionRecord, Task, create_task
from taxotrain.taxonomy import Taxonomy
from taxotrain_runtime.bundle import Bundle, BundleError, is_bundle
from taxotrain_runtime.records import read_rollup


@dataclass
class Thresholds:
    """The roll-up thresholds a prediction uses, one per rank, and where they come from."""

    values: list[float]
    source: str


def load_thresholds(run: LoadedRun) -> Thresholds:
    """Roll-up thresholds from ``rollup.json`` (chosen on val by evaluate); 0.5 per rank before any evaluation."""
    values, source = read_rollup(RunPaths(run.root).rollup, run.taxonomy.ranks,
                                 f"taxotrain evaluate {shlex.quote(str(run.root))} chooses them on val")
    return Thresholds(values, source)


@dataclass
class Predictor:
    """What predicts: a trained run's model on PyTorch, or an exported bundle on ONNX Runtime, with the task that
    reads its inputs and names its records, and its roll-up thresholds."""

    task: Task
    thresholds: Thresholds
    # the model's inputs of a batch (raw ``input``, and ``meta`` for a run with metadata), resolved tta -> probs
    probabilities: Callable[[dict[str, torch.Tensor], str], dict[str, np.ndarray]]
    threads: int | None = None
    gallery: Gallery | None = None  # names records by the nearest gallery prototype instead (predict --gallery)

    @classmethod
    def from_gallery(cls, run_dir: str | Path) -> Predictor:
        """A run folder with a gallery (``taxotrain gallery build``): each rank named by the nearest prototype of
        the gallery, ``unknown`` below the gallery's threshold for the rank."""
        run = load_run(run_dir)
        gallery = Gallery.load(run.root)
        return cls(run.task, Thresholds(gallery.thresholds, gallery.describe_thresholds()),
                   gallery_embedder(run, gallery), run.config.trainer.cpu_threads, gallery)

    def columns(self, topk: int) -> list[str]:
        """The prediction CSV's columns."""
        return self.gallery.columns(self.task, topk) if self.gallery else self.task.prediction_columns(topk)

    def row(self, record: PredictionRecord) -> dict[str, object]:
        """A prediction record as a CSV row."""
        return self.gallery.row(record) if self.gallery else self.task.prediction_row(record)

    @classmethod
    def from_run(cls, run_dir: str | Path) -> Predictor:
        """A run folder (its best checkpoint) or a checkpoint file."""
        run = load_run(run_dir)
        module = run.task.inference_module(run.model)
        return cls(run.task, load_thresholds(run),
                   lambda inputs, tta: run.task.predict_step(module, inputs, tta), run.config.trainer.cpu_threads)

    @classmethod
    def from_bundle(cls, folder: str | Path) -> Predictor:
        """An exported bundle: its ONNX model, spec, taxonomy and thresholds."""
        try:
            bundle = Bundle.open(folder)
        except BundleError as exc:
            raise RunError(str(exc)) from exc
        try:
            config = Config.model_validate({"task": bundle.spec["task"]})
        except ValidationError as exc:
            raise RunError(f"{folder}: {one_line_error(exc)} (a bundle of a task this installation does not have)") \
                from exc
        task = create_task(config, taxonomy=Taxonomy.from_dict(bundle.tree.to_dict()),
                           spec=InputSpec.from_dict(bundle.spec["spec"]))
        thresholds = Thresholds(bundle.thresholds, bundle.thresholds_source)
        return cls(task, thresholds, lambda inputs, tta: bundle.probabilities(inputs["input"].numpy(), tta))


def predict_records(predictor: Predictor, inputs: Sequence[str | Path], topk: int = 5, batch_size: int = 64,
                    workers: int | None = None, tta: str = "auto", prior: PriorFusion | None = None
                    ) -> Iterator[list[PredictionRecord]]:
    """The prediction records of each batch of inputs, in order (the task reads ``inputs``: files, folders,
    manifest CSVs); with ``prior``, its probabilities at each record's place and date multiplied in first."""
    task = predictor.task
    # a gallery and its thresholds were embedded without test-time views: auto means none there
    tta = "none" if predictor.gallery is not None and tta == "auto" else task.resolve_tta(tta)
    prototypes = predictor.gallery.prototypes() if predictor.gallery is not None else None
    for batch in task.prediction_batches(inputs, batch_size, task.workers(workers)):
        outputs = predictor.probabilities(task.model_batch(batch), tta) if batch.input is not None else {}
        if prior is not None:
            outputs = prior.apply(outputs, batch)
        if predictor.gallery is not None:
            yield predictor.gallery.records(outputs.get("embedding"), batch, topk, prototypes)
        else:
            yield task.records(outputs, batch, predictor.thresholds.values, topk)


def predict_loader(task: Task, model: torch.nn.Module, loader: Iterable[dict[str, torch.Tensor]], tta: str = "none",
                   device: str | torch.device = "cpu", hide: Sequence[str] = ()
                   ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Outputs (probabilities per rank) of every batch of raw inputs (``task.inference_dataset``), with the labels
    ``[N, R]`` and the record indices ``[N]`` (what evaluate scores); ``hide`` names place/date metadata components
    to treat as missing (a run with metadata)."""
    module = task.inference_module(model.eval()).to(device)
    outputs: dict[str, list[np.ndarray]] = {}
    labels, indices = [], []
    for batch in loader:
        inputs = {k: v.to(device) for k, v in batch.items() if k not in ("target", "index")}
        if hide:
            inputs = task.hide_metadata(inputs, hide)
        for name, value in task.predict_step(module, inputs, tta).items():
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
    seconds: float = 0.0  # reading, predicting and writing every record
    workers: int = 0
    prior: str = ""  # what --prior multiplied in (PriorFusion.summary)

    def summary(self) -> str:
        """One line for the log."""
        rate = f" in {self.seconds:.1f} s ({self.rows / max(self.seconds, 1e-9):.0f} records/s, {self.workers} " \
               "worker(s))" if self.seconds else ""
        return (f"predicted {self.rows - self.errors} record(s), {self.errors} unreadable (see the error column)"
                f"{rate} -> {self.path}; roll-up thresholds: {self.thresholds.source}"
                + (f"; {self.prior}" if self.prior else ""))


def write_predictions(run_dir: str | Path, inputs: Sequence[str | Path], out: str | Path, topk: int = 5,
                      batch_size: int = 64, workers: int | None = None, tta: str = "auto",
                      gallery: bool = False, prior: str | Path | None = None, prior_weight: float = 1.0) -> Written:
    """Predict every record under ``inputs`` into the CSV ``out``, with a run's best checkpoint or, when
    ``run_dir`` is a bundle folder written by ``taxotrain export``, its ONNX model (the same CSV either way).

    With ``gallery``, each rank is named by the nearest prototype of the run's gallery (``inference/gallery.py``:
    taxa enrolled after training included), ``unknown`` below the gallery's threshold for that rank.

    With ``prior`` (a ``task: prior`` run), the prior's probabilities at each record's place and date, raised to
    ``prior_weight``, are multiplied into the model's before decoding (``inference/prior.py``); the records' place
    and date come from manifest CSVs among ``inputs``.

    Rows are written and flushed batch by batch, so whatever stops the run (a kill, a crash in a decoder) leaves the
    rows of every batch already predicted in ``out``.
    """
    if gallery and is_bundle(run_dir):
        raise RunError(f"{run_dir} is an exported bundle; --gallery takes the run folder that holds the gallery")
    if is_bundle(run_dir):
        predictor = Predictor.from_bundle(run_dir)
    else:
        predictor = Predictor.from_gallery(run_dir) if gallery else Predictor.from_run(run_dir)
    fusion = None
    if prior is not None:
        if gallery:
            raise RunError("--prior with --gallery: a gallery names records by similarity, not probability; use one")
        fusion = PriorFusion.load(prior, predictor.task, prior_weight)
        fusion.check_inputs(list(inputs))
    out = Path(out)
    n = errors = 0
    t0 = time.perf_counter()
    with torch_threads(predictor.threads):
        batches = predict_records(predictor, inputs, topk, batch_size, workers, tta, fusion)
        first = next(batches, [])  # inputs are found and the first batch is read before `out` is touched
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=predictor.columns(topk))
            writer.writeheader()
            for records in itertools.chain([first], batches):
                for record in records:
                    writer.writerow(predictor.row(record))
                    n += 1
                    errors += bool(record.error)
                fh.flush()
    return Written(out, n, errors, predictor.thresholds, time.perf_counter() - t0, predictor.task.workers(workers),
                   fusion.summary() if fusion is not None else "")
