"""Per-rank metrics from predicted probabilities: top-1, top-5, macro-F1, balanced accuracy, per-class table.

Definitions follow scikit-learn: macro-F1 averages over classes present in the labels or the predictions;
balanced accuracy is the mean recall over classes present in the labels. Records unknown at a rank are left out
of that rank's metrics.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_confusion_matrix

from taxotrain.taxonomy import NULL, Taxonomy

TTA_VIEWS = {"none": 1, "flip": 2, "dihedral": 8}
TTA_CHOICES = ["auto", *TTA_VIEWS]


def resolve_tta(tta: str, config: Any) -> str:
    """``auto`` = the views the run was trained to be invariant to: ``dihedral`` when it trained with both flips and
    90-degree rotations (the default for orientation-free organisms), ``flip`` with horizontal flips only, else
    ``none``; signal runs are never flipped."""
    if tta != "auto":
        return tta
    if getattr(config, "task", "image") != "image":
        return "none"
    aug = config.data.augment
    if aug.rot90 and aug.hflip > 0 and aug.vflip > 0:
        return "dihedral"
    return "flip" if aug.hflip > 0 else "none"


def tta_views(x: torch.Tensor, tta: str) -> list[torch.Tensor]:
    """Test-time views of a batch: itself, + horizontal flip, or all 8 flips/90-degree rotations (dihedral)."""
    if tta not in TTA_VIEWS:
        raise ValueError(f"--tta {tta!r}: choose one of {', '.join(TTA_VIEWS)}")
    if tta == "none":
        return [x]
    if tta == "flip":
        return [x, x.flip(-1)]
    return [torch.rot90(v, k, dims=(-2, -1)) for v in (x, x.flip(-1)) for k in range(4)]


@torch.no_grad()
def model_probs(model: torch.nn.Module, x: torch.Tensor, ranks: list[str], tta: str = "none") -> dict[str, np.ndarray]:
    """Softmax probabilities per rank for one batch, averaged over the test-time views."""
    views = tta_views(x, tta)
    out = {r: 0.0 for r in ranks}
    for v in views:
        logits = model(v)
        for r in ranks:
            out[r] = out[r] + logits[r].float().softmax(-1)
    return {r: (p / len(views)).cpu().numpy() for r, p in out.items()}


def predict_probs(model: torch.nn.Module, loader: Iterable, ranks: list[str], device: str | torch.device = "cpu",
                  tta: str = "none") -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Probabilities per rank for every batch of ``loader`` and the stacked labels ``[N, R]``."""
    model.eval().to(device)
    probs: dict[str, list[np.ndarray]] = {r: [] for r in ranks}
    labels = []
    for x, y in loader:
        for r, p in model_probs(model, x.to(device), ranks, tta).items():
            probs[r].append(p)
        labels.append(y.numpy())
    return {r: np.concatenate(v) for r, v in probs.items()}, np.concatenate(labels)


def confusion(probs: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Confusion matrix ``[true, predicted]`` of the records with a known label."""
    known = target != NULL
    num_classes = probs.shape[1]
    if not known.any():
        return np.zeros((num_classes, num_classes), dtype=np.int64)
    cm = multiclass_confusion_matrix(torch.from_numpy(probs[known]), torch.from_numpy(target[known]), num_classes)
    return cm.numpy().astype(np.int64)


def class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support from a confusion matrix (0 where undefined)."""
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(1).astype(np.float64)
    predicted = cm.sum(0).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64),
            "predicted": predicted.astype(np.int64)}


def rank_metrics(probs: np.ndarray, target: np.ndarray) -> dict[str, Any]:
    """``top1``, ``top5``, ``macro_f1``, ``balanced_accuracy`` (fractions) and ``n`` for one rank."""
    known = target != NULL
    n = int(known.sum())
    if n == 0:
        return {"top1": None, "top5": None, "macro_f1": None, "balanced_accuracy": None, "n": 0}
    p, t = torch.from_numpy(probs[known]), torch.from_numpy(target[known])
    num_classes = probs.shape[1]
    top1 = multiclass_accuracy(p, t, num_classes, top_k=1, average="micro")
    top5 = multiclass_accuracy(p, t, num_classes, top_k=min(5, num_classes), average="micro")
    scores = class_scores(confusion(probs, target))
    present = (scores["support"] > 0) | (scores["predicted"] > 0)
    return {"top1": float(top1), "top5": float(top5), "macro_f1": float(scores["f1"][present].mean()),
            "balanced_accuracy": float(scores["recall"][scores["support"] > 0].mean()), "n": n}


def evaluate_probs(probs: dict[str, np.ndarray], labels: np.ndarray, taxonomy: Taxonomy
                   ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics per rank (keyed by rank name) and the per-class rows of every rank."""
    metrics: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for r, rank in enumerate(taxonomy.ranks):
        metrics[rank] = rank_metrics(probs[rank], labels[:, r])
        scores = class_scores(confusion(probs[rank], labels[:, r]))
        for i, name in enumerate(taxonomy.names[r]):
            rows.append({"rank": rank, "class": name, "precision": round(float(scores["precision"][i]), 6),
                         "recall": round(float(scores["recall"][i]), 6), "f1": round(float(scores["f1"][i]), 6),
                         "support": int(scores["support"][i])})
    return metrics, rows


def loader_for(dataset: torch.utils.data.Dataset, batch_size: int, workers: int) -> DataLoader:
    """A plain evaluation loader (no shuffling)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      persistent_workers=False)
