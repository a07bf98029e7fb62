"""Paired bootstrap intervals for the difference between two runs scored on the same test records.

Every resample draws the test records with replacement once and scores both runs on that same draw, so the
interval reflects the noise of the test split, not just each run's own spread: two runs 0.5 points apart on 2,400
records are usually within noise, and ``--compare`` says so.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from taxotrain.taxonomy import NULL

Statistic = Callable[[np.ndarray], np.ndarray]  # [B, N] resampled record indices -> [B] values


def record_arrays(path: Path, ranks: list[str]) -> dict[str, np.ndarray]:
    """Per-record outcomes from ``predictions_<split>.npz``: ``<rank> top1`` (1/0, NaN when unknown), ``chain``
    (every known rank of the decoded path right, NaN without a finest label) and ``heights`` (LCA height of the
    decoded finest prediction, 0 when right)."""
    with np.load(path) as z:
        labels, decoded, heights = z["labels"], z["decoded"], z["heights"]
        out = {"indices": z["indices"]}
        for r, rank in enumerate(ranks):
            known = labels[:, r] != NULL
            hit = (z[f"probs_{rank}"].argmax(1) == labels[:, r]).astype(np.float64)
            out[f"{rank} top1"] = np.where(known, hit, np.nan)
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


def _severity(heights: np.ndarray) -> Statistic:
    def stat(idx: np.ndarray) -> np.ndarray:
        v = heights[idx]
        wrong = v > 0  # NaN compares False: unscored records drop out
        return np.where(wrong, v, 0.0).sum(1) / np.maximum(wrong.sum(1), 1)

    return stat


def statistics(arrays: dict[str, np.ndarray]) -> dict[str, Statistic]:
    """The resampled statistics, keyed by the metric names of the comparison table."""
    stats = {k: _nanmean(v) for k, v in arrays.items() if k.endswith(" top1") or k == "chain_accuracy"}
    stats["mistake_severity"] = _severity(arrays["heights"])
    stats["hierarchical_distance_at_1"] = _nanmean(arrays["heights"])
    return stats


def paired_differences(base: dict[str, np.ndarray], other: dict[str, np.ndarray], resamples: int = 2000,
                       seed: int = 0, level: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """``{metric: (other - base, low, high)}``: the observed difference and its percentile bootstrap interval."""
    n = len(base["heights"])
    if not np.array_equal(base["indices"], other["indices"]):
        raise ValueError("the runs' prediction files hold different test records")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    full = np.arange(n)[None, :]
    sa, sb = statistics(base), statistics(other)
    out = {}
    for key in sa:
        diff = sb[key](idx) - sa[key](idx)
        observed = float(sb[key](full)[0] - sa[key](full)[0])
        lo, hi = np.quantile(diff, [(1 - level) / 2, (1 + level) / 2])
        out[key] = (observed, float(lo), float(hi))
    return out
