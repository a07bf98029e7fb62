"""Per-rank metrics from predicted probabilities: top-1, top-5, macro-F1, balanced accuracy, expected calibration
error, per-class table.

Definitions follow scikit-learn: macro-F1 averages over classes present in the labels or the predictions;
balanced accuracy is the mean recall over classes present in the labels. The expected calibration error (ECE) is
torchmetrics' top-label form over ``ECE_BINS`` equal-width confidence bins: the record-weighted mean gap between a
bin's mean confidence and its accuracy (0 = a score of 0.8 is right 80% of the time). Records unknown at a rank are
left out of that rank's metrics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_calibration_error,
    multiclass_confusion_matrix,
)

from taxotrain.taxonomy import NULL, Taxonomy

ECE_BINS = 15


def confusion(probs: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Confusion matrix ``[true, predicted]`` of the records with a known label."""
    known = target != NULL
    num_classes = probs.shape[1]
    if not known.any():
        return np.zeros((num_classes, num_classes), dtype=np.int64)
    cm = multiclass_confusion_matrix(torch.from_numpy(probs[known]), torch.from_numpy(target[known]), num_classes)
    return cm.numpy().astype(np.int64)


def count_scores(tp: np.ndarray, support: np.ndarray, predicted: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall and F1 (0 where undefined) from per-class counts of any shape ``[..., C]``: true
    positives, records of the class and records predicted as it."""
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1}


def macro_f1(f1: np.ndarray, support: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Mean F1 over the last axis of the classes that occur as a label or a prediction (``metrics.json``'s)."""
    present = (support > 0) | (predicted > 0)
    return (f1 * present).sum(-1) / np.maximum(present.sum(-1), 1)


def class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support from a confusion matrix (0 where undefined)."""
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(1).astype(np.float64)
    predicted = cm.sum(0).astype(np.float64)
    return {**count_scores(tp, support, predicted), "support": support.astype(np.int64),
            "predicted": predicted.astype(np.int64)}


def rank_scores(probs: np.ndarray, target: np.ndarray) -> dict[str, Any]:
    """``top1``, ``top5``, ``macro_f1``, ``balanced_accuracy``, ``ece`` (fractions) and ``n`` for one rank."""
    known = target != NULL
    n = int(known.sum())
    if n == 0:
        return {"top1": None, "top5": None, "macro_f1": None, "balanced_accuracy": None, "ece": None, "n": 0}
    p, t = torch.from_numpy(probs[known]), torch.from_numpy(target[known])
    num_classes = probs.shape[1]
    top1 = multiclass_accuracy(p, t, num_classes, top_k=1, average="micro")
    top5 = multiclass_accuracy(p, t, num_classes, top_k=min(5, num_classes), average="micro")
    scores = class_scores(confusion(probs, target))
    return {"top1": float(top1), "top5": float(top5),
            "macro_f1": float(macro_f1(scores["f1"], scores["support"], scores["predicted"])),
            "balanced_accuracy": float(scores["recall"][scores["support"] > 0].mean()),
            "ece": float(multiclass_calibration_error(p.float(), t, num_classes, n_bins=ECE_BINS, norm="l1")), "n": n}


def evaluate_probs(probs: dict[str, np.ndarray], labels: np.ndarray, taxonomy: Taxonomy
                   ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics per rank (keyed by rank name) and the per-class rows of every rank."""
    metrics: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for r, rank in enumerate(taxonomy.ranks):
        metrics[rank] = rank_scores(probs[rank], labels[:, r])
        scores = class_scores(confusion(probs[rank], labels[:, r]))
        for i, name in enumerate(taxonomy.names[r]):
            rows.append({"rank": rank, "class": name, "precision": round(float(scores["precision"][i]), 6),
                         "recall": round(float(scores["recall"][i]), 6), "f1": round(float(scores["f1"][i]), 6),
                         "support": int(scores["support"][i])})
    return metrics, rows


SECTIONS = ("ranks", "hierarchy", "baseline", "fit", "evaluation")


def per_rank(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-rank figures of a ``metrics.json``: its ``ranks`` section, or, in files written before that section
    existed, the top-level entries that are not sections."""
    section = metrics.get("ranks")
    if isinstance(section, dict) and all(isinstance(v, dict) for v in section.values()):
        return section
    return {k: v for k, v in metrics.items() if k not in SECTIONS and isinstance(v, dict)}


def reliability(probs: np.ndarray, target: np.ndarray, bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Per equal-width bin of top-label confidence (records with a known label): ``confidence`` (mean), ``accuracy``
    and ``count``; empty bins hold NaN and 0. The record-weighted mean of ``|accuracy - confidence|`` is the ECE."""
    known = target != NULL
    top = probs[known].max(1)
    right = probs[known].argmax(1) == target[known]
    which = np.clip(np.ceil(top * bins).astype(int) - 1, 0, bins - 1)  # (lo, hi] bins, as torchmetrics bins them
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore"):
        confidence = np.bincount(which, weights=top, minlength=bins) / count
        accuracy = np.bincount(which, weights=right.astype(float), minlength=bins) / count
    return {"confidence": confidence, "accuracy": accuracy, "count": count}
