"""Embeddings of a trained run: ``taxotrain embed`` (one row per file) and the split embeddings that retrieval
evaluation and galleries use.

Any run gives one: a ``task: embedding`` run its L2-normalised embedding, a classifier its backbone's pooled
features, which are L2-normalised here too, so that inner products are cosine similarities whatever the run. Inputs
are prepared as ``predict`` prepares them (the evaluation transforms; test-time views where the caller asks, as
``evaluate --tta`` does for retrieval).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from taxotrain.data.store import Store
from taxotrain.files import atomic_path
from taxotrain.inference.search import l2_normalize
from taxotrain.run import LoadedRun, RunError, load_run, torch_threads
from taxotrain.tasks import InputBatch, Task
from taxotrain_runtime.bundle import is_bundle

FORMATS = (".npz", ".parquet")


@torch.no_grad()
def embed_loader(task: Task, model: torch.nn.Module, loader: Iterable[dict[str, torch.Tensor]],
                 device: str | torch.device = "cpu", tta: str = "none") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model's embedding of every batch of raw inputs (``task.inference_dataset``), as it gives it (or
    averaged over the test-time views ``tta``, see ``Task.embed_step``), with the labels ``[N, R]`` and the record
    indices ``[N]``."""
    module = task.inference_module(model.eval()).to(device)
    emb, labels, indices = [], [], []
    for batch in loader:
        inputs = {k: v.to(device) for k, v in batch.items() if k not in ("target", "index")}
        emb.append(task.embed_step(module, inputs, tta))
        labels.append(batch["target"].numpy())
        indices.append(np.asarray(batch["index"]))
    if not emb:
        return np.zeros((0, 0), np.float32), np.zeros((0, len(task.taxonomy.ranks)), np.int64), np.zeros(0, np.int64)
    return np.concatenate(emb).astype(np.float32), np.concatenate(labels), np.concatenate(indices)


def embed_split(run: LoadedRun, store: Store, split: str, batch_size: int | None = None,
                workers: int | None = None, tta: str = "none") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(embeddings [N, D], labels [N, R], indices [N])`` of a split of ``store`` (``heldout`` included) with the
    run's model, as the model gives them (not normalised), or averaged over the test-time views ``tta`` (resolved)."""
    task = run.task
    with torch_threads(run.config.trainer.cpu_threads):
        return embed_loader(task, run.model, task.inference_loader(store, split, batch_size, workers), tta=tta)


def embed_inputs(run: LoadedRun, inputs: Sequence[str | Path], batch_size: int = 64, workers: int | None = None
                 ) -> Iterator[tuple[InputBatch, np.ndarray]]:
    """Each batch of the files and folders ``inputs`` (read by the task, as ``predict`` reads them) with the
    L2-normalised embeddings of its readable records ``[n_readable, D]``."""
    task = run.task
    module = task.inference_module(run.model.eval())
    for batch in task.prediction_batches(inputs, batch_size, task.workers(workers)):
        emb = task.embed_step(module, task.model_batch(batch)) if batch.input is not None else np.zeros((0, 0))
        yield batch, l2_normalize(emb) if len(emb) else emb.astype(np.float32)


@dataclass
class EmbeddingsWritten:
    """What ``embed`` wrote: the file, its rows (one per input record), the unreadable ones and the width."""

    path: Path
    rows: int
    errors: int
    dim: int

    def summary(self) -> str:
        """One line for the log."""
        return (f"embedded {self.rows - self.errors} record(s) ({self.dim} dimensions, L2-normalised), "
                f"{self.errors} unreadable (see the error column) -> {self.path}")


def check_output(out: Path) -> None:
    """Refuse, before any work, an output ``embed`` cannot write: another format, or parquet without pyarrow."""
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise RunError(f"--out {out}: embeddings are written as .npz or .parquet; name the file e.g. embeddings.npz")
    if suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        raise RunError(f"--out {out}: writing .parquet needs pyarrow, which is not installed; write --out "
                       f"{out.with_suffix('.npz').name} instead (or pip install pyarrow)")


def write_embeddings(run_dir: str | Path, inputs: Sequence[str | Path], out: str | Path, batch_size: int = 64,
                     workers: int | None = None) -> EmbeddingsWritten:
    """Write the L2-normalised embedding of every record under ``inputs`` to ``out`` (``.npz`` or ``.parquet``):
    one row per record with its id columns (``path`` for images), ``embedding`` and ``error`` (an unreadable file
    keeps its row, with NaNs for its embedding).

    ``.npz`` holds plain arrays (``path`` str ``[N]``, ``embedding`` float32 ``[N, D]``, ``error`` str ``[N]``),
    readable with ``np.load(out)`` (no pickle); ``.parquet`` a table with ``embedding`` as a fixed-size list.
    """
    out = Path(out)
    check_output(out)
    if is_bundle(run_dir):
        raise RunError(f"{run_dir} is an exported bundle; taxotrain embed takes the run folder it was exported from")
    run = load_run(run_dir)
    ids: list[dict[str, str]] = []
    errors: list[str] = []
    parts: list[np.ndarray] = []
    dim = int(getattr(run.model, "num_features", 0))
    with torch_threads(run.config.trainer.cpu_threads):
        for batch, emb in embed_inputs(run, inputs, batch_size, workers):
            dim = emb.shape[1] if emb.size else dim
            rows = np.full((len(batch.errors), dim), np.nan, dtype=np.float32)
            good = [i for i, e in enumerate(batch.errors) if not e]
            if good:
                rows[good] = emb
            parts.append(rows)
            ids += batch.ids
            errors += batch.errors
    embedding = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
    columns = {c: np.array([i.get(c, "") for i in ids], dtype=str) for c in run.task.id_columns}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".npz":
            with tmp.open("wb") as fh:
                np.savez(fh, **columns, embedding=embedding, error=np.array(errors, dtype=str))
        else:
            _write_parquet(tmp, columns, embedding, errors)
    return EmbeddingsWritten(out, len(errors), sum(bool(e) for e in errors), dim)


def _write_parquet(path: Path, columns: dict[str, np.ndarray], embedding: np.ndarray, errors: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    values = pa.array(embedding.reshape(-1), type=pa.float32())
    table = pa.table({**{c: pa.array(v.tolist(), type=pa.string()) for c, v in columns.items()},
                      "embedding": pa.FixedSizeListArray.from_arrays(values, max(embedding.shape[1], 1))
                      if embedding.shape[1] else pa.array([[] for _ in errors], type=pa.list_(pa.float32())),
                      "error": pa.array(errors, type=pa.string())})
    pq.write_table(table, str(path))
