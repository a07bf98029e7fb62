"""Paired bootstrap intervals for the difference between two runs scored on the same test records.

Every resample draws the test records with replacement once and scores both runs on that same draw, so the
interval reflects the noise of the test split, not just each run's own spread: two runs 0.5 points apart on 2,400
records are usually within noise, and ``--compare`` says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from taxotrain.evaluation.metrics import count_scores, macro_f1
from taxotrain.taxonomy import NULL

Statistic = Callable[[np.ndarray], np.ndarray]  # [B, N] resampled record indices -> [B] values
Arrays = dict[str, np.ndarray] | Sequence[dict[str, np.ndarray]]  # one run, or the runs (seeds) of one setting


def record_arrays(path: Path, ranks: list[str]) -> dict[str, np.ndarray]:
    """Per-record outcomes from ``predictions_<split>.npz``: ``<rank> top1`` (1/0, NaN when unknown), ``chain``
    (every known rank of the decoded path right, NaN without a finest label), ``heights`` (LCA height of the
    decoded finest prediction, 0 when right), ``<rank> predicted`` and ``<rank> label`` (each rank's top class and
    label, for macro-F1) and, for runs evaluated with retrieval, ``<rank> precision_at_1`` (the nearest train record
    shares the label; NaN when unscored)."""
    with np.load(path) as z:
        labels, decoded, heights = z["labels"], z["decoded"], z["heights"]
        out = {"indices": z["indices"]}
        for r, rank in enumerate(ranks):
            known = labels[:, r] != NULL
            predicted = z[f"probs_{rank}"].argmax(1)
            out[f"{rank} top1"] = np.where(known, (predicted == labels[:, r]).astype(np.float64), np.nan)
            out[f"{rank} predicted"], out[f"{rank} label"] = predicted, labels[:, r]
            if f"retrieval_{rank}" in z.files:
                out[f"{rank} precision_at_1"] = z[f"retrieval_{rank}"].astype(np.float64)
    known = labels != NULL
    chain = ((decoded == labels) | ~known).all(1).astype(np.float64)
    out["chain_accuracy"] = np.where(known[:, -1], chain, np.nan)
    out["heights"] = heights.astype(np.float64)
    return out


def _nanmean(values: np.ndarray) -> Statistic:
    def stat(idx: np.ndarray) -> np.ndarray:
        v = values[idx]
        ok = ~np.isnan(v)
        return np.where(ok, v, 0.0).sum(1) / np.maximum(ok.sum(1), 1)

    return stat


def _macro_f1(predicted: np.ndarray, labels: np.ndarray) -> Statistic:
    """Macro-F1 as ``metrics.json`` has it (the mean F1 of the classes with a label or a prediction among the
    records known at the rank), of each resample: per-class counts weighted by how often each record was drawn."""
    known = labels != NULL
    classes = int(max(predicted.max(initial=0), labels.max(initial=0))) + 1
    rows = np.flatnonzero(known)
    truth = np.zeros((len(labels), classes), np.float32)
    truth[rows, labels[rows]] = 1.0
    guess = np.zeros((len(labels), classes), np.float32)
    guess[rows, predicted[rows]] = 1.0

    def stat(idx: np.ndarray) -> np.ndarray:
        weights = np.zeros((len(idx), len(labels)), np.float32)
        np.add.at(weights, (np.arange(len(idx))[:, None], idx), 1.0)
        support, said, tp = weights @ truth, weights @ guess, weights @ (truth * guess)
        return macro_f1(count_scores(tp, support, said)["f1"], support, said)

    return stat


def _severity(heights: np.ndarray) -> Statistic:
    def stat(idx: np.ndarray) -> np.ndarray:
        v = heights[idx]
        wrong = v > 0  # NaN compares False: unscored records drop out
        return np.where(wrong, v, 0.0).sum(1) / np.maximum(wrong.sum(1), 1)

    return stat


def statistics(arrays: dict[str, np.ndarray]) -> dict[str, Statistic]:
    """The resampled statistics, keyed by the metric names of the comparison table."""
    stats = {k: _nanmean(v) for k, v in arrays.items()
             if k.endswith((" top1", " precision_at_1")) or k == "chain_accuracy"}
    for key in arrays:
        if key.endswith(" predicted"):
            rank = key[: -len(" predicted")]
            stats[f"{rank} macro_f1"] = _macro_f1(arrays[key], arrays[f"{rank} label"])
    stats["mistake_severity"] = _severity(arrays["heights"])
    stats["hierarchical_distance_at_1"] = _nanmean(arrays["heights"])
    return stats


def paired_differences(base: Arrays, other: Arrays, resamples: int = 2000, seed: int = 0,
                       level: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """``{metric: (other - base, low, high)}``: the observed difference and its percentile bootstrap interval.

    ``base`` and ``other`` are one run's arrays each, or a list of runs of one setting (seeds). With several runs, a
    setting's value is the mean over its runs, and every resample also draws each setting's runs with replacement
    (a two-level bootstrap), so the interval carries the spread between seeds as well as the test split's noise."""
    base_runs, other_runs = _as_runs(base), _as_runs(other)
    indices = base_runs[0]["indices"]
    if any(not np.array_equal(indices, r["indices"]) for r in (*base_runs, *other_runs)):
        raise ValueError("the runs' prediction files hold different test records")
    n = len(indices)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    picks = [rng.integers(0, len(runs), size=(resamples, len(runs))) for runs in (base_runs, other_runs)]
    full = np.arange(n)[None, :]
    stats = [[statistics(r) for r in runs] for runs in (base_runs, other_runs)]
    out = {}
    for key in _shared_keys([s for setting in stats for s in setting]):
        resampled, observed = [], []
        for setting, pick in zip(stats, picks, strict=True):
            per_run = np.stack([s[key](idx) for s in setting])  # [runs, B]
            resampled.append(per_run[pick.T, np.arange(resamples)].mean(0))
            observed.append(float(np.mean([s[key](full)[0] for s in setting])))
        diff = resampled[1] - resampled[0]
        lo, hi = np.quantile(diff, [(1 - level) / 2, (1 + level) / 2])
        out[key] = (observed[1] - observed[0], float(lo), float(hi))
    return out


def unpaired_differences(base: Arrays, other: Arrays, resamples: int = 2000, seed: int = 0,
                         level: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """As :func:`paired_differences` for two settings scored on *different* test records (e.g. a random split
    against a split grouped by date): each setting's records are resampled on their own, so the interval also
    carries the noise of two independent test sets. The runs of one setting must share their records."""
    rng = np.random.default_rng(seed)
    resampled, observed = [], []
    keys = _shared_keys([statistics(r) for arrays in (base, other) for r in _as_runs(arrays)])
    for arrays in (base, other):
        runs = _as_runs(arrays)
        indices = runs[0]["indices"]
        if any(not np.array_equal(indices, r["indices"]) for r in runs):
            raise ValueError("the runs of one setting hold different test records")
        n = len(indices)
        idx = rng.integers(0, n, size=(resamples, n))
        pick = rng.integers(0, len(runs), size=(resamples, len(runs)))
        stats = [statistics(r) for r in runs]
        full = np.arange(n)[None, :]
        resampled.append({k: np.stack([s[k](idx) for s in stats])[pick.T, np.arange(resamples)].mean(0)
                          for k in keys})
        observed.append({k: float(np.mean([s[k](full)[0] for s in stats])) for k in keys})
    out = {}
    for key in resampled[0]:
        diff = resampled[1][key] - resampled[0][key]
        lo, hi = np.quantile(diff, [(1 - level) / 2, (1 + level) / 2])
        out[key] = (observed[1][key] - observed[0][key], float(lo), float(hi))
    return out


def _shared_keys(stats: list[dict[str, Statistic]]) -> list[str]:
    """The statistics every run has, in the first run's order (a run evaluated without retrieval has none of its
    precision@1 arrays, so those rows get no interval)."""
    return [k for k in stats[0] if all(k in s for s in stats[1:])]


def _as_runs(arrays: Arrays) -> list[dict[str, np.ndarray]]:
    runs = [arrays] if isinstance(arrays, dict) else list(arrays)
    if not runs:
        raise ValueError("a setting needs at least one run")
    return runs
