"""The floor every image run is measured against: nearest class means on raw pixels.

A model has learnt something only where it beats a rule that learns nothing. The pixels are the run's own
evaluation input (the image decoded, resized and padded to ``data.image_size`` by the evaluation transform, before
normalisation), flattened and scaled to 0-1, so the floor sees exactly what the network sees. ``metrics.json`` ->
``baseline`` -> ``pixel_centroid`` holds:

- ``<rank>`` -> ``top1``: each record of the evaluated split named by the nearest (Euclidean) mean of the train
  split's records of each class (scikit-learn's ``NearestCentroid``), the closed-set floor;
- ``heldout`` -> ``<rank>`` (stores with held-out classes): ``fewshot_1`` / ``fewshot_5`` by the same SimpleShot rule
  and the same seeded draws as the embeddings' (pixels centred on the train split's mean pixel vector and
  L2-normalised, nearest mean of 1 or 5 references per class) and ``loo_precision_at_1`` on the centred pixels, the
  few-shot floor;
- ``seconds``, ``train_records`` and ``dim`` (pixels per record).

The train split is read once and summed per class, so memory holds the class means, not the records. A store
whose class means would not fit in ``MAX_BYTES`` is skipped with the reason, and so is the held-out part whose records
(held in memory for leave-one-out) would not fit in ``HELDOUT_MAX_BYTES``: ``heldout_skipped`` says why.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from taxotrain.data.store import HELDOUT, Store
from taxotrain.evaluation.retrieval import fewshot_accuracy, leave_one_out_precision_at_1
from taxotrain.tasks import Task
from taxotrain.taxonomy import NULL

MAX_BYTES = 2 << 30  # class means larger than this are not computed
HELDOUT_MAX_BYTES = 2 << 30  # nor held-out pixels (float32) larger than this
SHOTS = (1, 5)
DRAWS = 5


def _batches(task: Task, store: Store, split: str, batch_size: int,
             workers: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The flattened input pixels (0-1, float64) and labels of ``split``, a batch at a time."""
    for batch in task.inference_loader(store, split, batch_size, workers):
        x = batch["input"]
        yield x.reshape(len(x), -1).to(torch.float64).numpy() / 255.0, batch["target"].numpy()


def class_means(task: Task, store: Store, batch_size: int, workers: int) -> tuple[list[np.ndarray], np.ndarray, int]:
    """Per rank, the mean pixel vector of each class of the train split ``[K_r, D]`` (NaN rows for a class without a
    train record), the mean of all train records ``[D]`` and their number."""
    num = [len(n) for n in task.taxonomy.names]
    sums: list[np.ndarray] = []
    counts = [np.zeros(k) for k in num]
    total, n = None, 0
    for x, y in _batches(task, store, "train", batch_size, workers):
        if not sums:
            sums = [np.zeros((k, x.shape[1])) for k in num]
            total = np.zeros(x.shape[1])
        total += x.sum(0)
        n += len(x)
        for r in range(len(num)):
            known = y[:, r] != NULL
            onehot = np.zeros((int(known.sum()), num[r]))
            onehot[np.arange(len(onehot)), y[known, r]] = 1.0
            sums[r] += onehot.T @ x[known]
            counts[r] += onehot.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = [s / c[:, None] for s, c in zip(sums, counts, strict=True)]
    return means, (total / max(n, 1)) if total is not None else np.zeros(0), n


def nearest_mean(x: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Index of the nearest row of ``means`` (Euclidean) for each row of ``x``; NaN rows of ``means`` never win."""
    usable = ~np.isnan(means).any(1)
    m = np.where(usable[:, None], means, 0.0)
    d = (m ** 2).sum(1)[None, :] - 2 * x @ m.T
    d[:, ~usable] = np.inf
    return d.argmin(1)


def pixel_centroid_baseline(task: Task, store: Store, split: str, seed: int, batch_size: int,
                            workers: int) -> dict[str, Any]:
    """The ``metrics.json`` -> ``baseline`` -> ``pixel_centroid`` entry of the module docstring for ``split``."""
    t0 = time.perf_counter()
    ranks = list(task.taxonomy.ranks)
    dim = int(np.prod(task.example_input(1).shape[1:]))
    method = "nearest class mean on raw pixels"
    if sum(len(n) for n in task.taxonomy.names) * dim * 8 > MAX_BYTES:
        return {"name": method, "skipped": f"the class means of {dim} pixels would exceed {MAX_BYTES >> 30} GiB"}
    means, train_mean, n_train = class_means(task, store, batch_size, workers)
    hits: list[list[np.ndarray]] = [[] for _ in ranks]
    for x, y in _batches(task, store, split, batch_size, workers):
        for r in range(len(ranks)):
            known = y[:, r] != NULL
            hits[r].append(nearest_mean(x[known], means[r]) == y[known, r])
    out: dict[str, Any] = {"method": method}
    for r, rank in enumerate(ranks):
        h = np.concatenate(hits[r]) if hits[r] else np.zeros(0, bool)
        out[rank] = {"top1": float(h.mean()) if len(h) else None, "records": int(len(h))}
    held = store.splits.get(HELDOUT)
    if held is not None and len(held) and len(held) * dim * 4 > HELDOUT_MAX_BYTES:
        out["heldout_skipped"] = (f"the {len(held)} held-out records of {dim} pixels would exceed "
                                  f"{HELDOUT_MAX_BYTES / 2 ** 30:.3g} GiB")
    elif held is not None and len(held):
        parts = list(_batches(task, store, HELDOUT, batch_size, workers))
        x = np.concatenate([p[0] for p in parts]).astype(np.float32)
        y = np.concatenate([p[1] for p in parts])
        loo = leave_one_out_precision_at_1(x - train_mean.astype(np.float32), {rank: y[:, r]
                                                                               for r, rank in enumerate(ranks)})
        out["heldout"] = {}
        for r, rank in enumerate(ranks):
            row: dict[str, Any] = {"loo_precision_at_1": loo[rank]["precision_at_1"]}
            for shots in SHOTS:
                row[f"fewshot_{shots}"] = fewshot_accuracy(train_mean, x, y[:, r], shots, draws=DRAWS,
                                                           seed=seed)["accuracy"]
            out["heldout"][rank] = row
    out.update(seconds=round(time.perf_counter() - t0, 2), train_records=n_train, dim=dim)
    return out
