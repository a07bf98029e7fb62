"""Metrics on hand-made cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from taxotrain.evaluation.metrics import class_scores, confusion, evaluate_probs, rank_scores, reliability
from taxotrain.taxonomy import NULL, Taxonomy


def _onehot(pred: list[int], n: int) -> np.ndarray:
    p = np.full((len(pred), n), 0.01)
    p[np.arange(len(pred)), pred] = 0.9
    return p / p.sum(1, keepdims=True)


def test_known_answers() -> None:
    target = np.array([0, 0, 1, 1, 2, 2, NULL])
    probs = _onehot([0, 1, 1, 1, 2, 0, 2], 3)
    m = rank_scores(probs, target)
    assert m["n"] == 6
    assert m["top1"] == pytest.approx(4 / 6)
    assert m["top5"] == pytest.approx(1.0)  # 3 classes: top-k capped at 3
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    s = class_scores(confusion(probs, target))
    assert s["precision"].tolist() == pytest.approx([0.5, 2 / 3, 1.0])
    assert s["support"].tolist() == [2, 2, 2]


def test_top5_counts_second_to_fifth_guess() -> None:
    probs = np.tile(np.linspace(1, 0.1, 8), (4, 1))  # always ranks class 0 first, 7 last
    target = np.array([0, 4, 5, 7])
    m = rank_scores(probs, target)
    assert m["top1"] == pytest.approx(0.25) and m["top5"] == pytest.approx(0.5)


def test_classes_absent_from_labels_and_predictions_do_not_dilute_macro() -> None:
    probs = _onehot([0, 1], 10)
    m = rank_scores(probs, np.array([0, 1]))
    assert m["macro_f1"] == pytest.approx(1.0) and m["balanced_accuracy"] == pytest.approx(1.0)


def test_rank_with_no_known_label_reports_none_and_per_class_rows() -> None:
    tax = Taxonomy.from_rows(["g", "s"], [("A", "a1"), ("A", "a2"), ("B", "b1")])
    labels = np.array([[0, NULL], [1, NULL]])
    probs = {"g": _onehot([0, 1], 2), "s": _onehot([0, 2], 3)}
    metrics, rows = evaluate_probs(probs, labels, tax)
    assert metrics["g"]["top1"] == 1.0 and metrics["s"]["top1"] is None and metrics["s"]["n"] == 0
    assert [(r["rank"], r["class"]) for r in rows] == [("g", "A"), ("g", "B"), ("s", "a1"), ("s", "a2"), ("s", "b1")]


def test_calibration_error_on_known_answers() -> None:
    # 10 records scored 0.8 for their top class, 8 of them right: calibrated, ECE 0
    probs = np.tile([0.8, 0.2], (10, 1))
    target = np.array([0] * 8 + [1] * 2)
    assert rank_scores(probs, target)["ece"] == pytest.approx(0.0, abs=1e-6)
    # the same scores, only half right: 0.3 too confident everywhere
    assert rank_scores(probs, np.array([0] * 5 + [1] * 5))["ece"] == pytest.approx(0.3, abs=1e-6)
    # two bins: 4 records at 0.95 all right (gap 0.05), 4 at 0.6 with 1 right (gap 0.35); unknown records left out
    probs = np.array([[0.95, 0.05]] * 4 + [[0.6, 0.4]] * 4 + [[0.5, 0.5]])
    target = np.array([0, 0, 0, 0, 0, 1, 1, 1, NULL])
    curve = reliability(probs, target)
    assert curve["count"].sum() == 8 and sorted(curve["count"][curve["count"] > 0].tolist()) == [4, 4]
    assert rank_scores(probs, target)["ece"] == pytest.approx((4 * 0.05 + 4 * 0.35) / 8, abs=1e-6)
