"""Open-set prediction: say "unknown" when the nearest neighbour (or prototype) is not similar enough.

A threshold per rank is chosen on val so that the predictions it accepts reach a target precision
(:func:`choose_threshold`); at predict time :func:`apply_thresholds` accepts each rank on its own and reports the
deepest rank that can be trusted. The roll-up rule: the deepest rank such that it *and every coarser rank* clear
their thresholds. A confident species under a genus the model is unsure of is not reported, because the two
disagree about how sure the model is, and a coarser answer must hold whenever a finer one is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PRECISION_EPS = 1e-12  # 9/10 must count as reaching 0.9


@dataclass(frozen=True)
class ThresholdChoice:
    """A chosen threshold: predictions with similarity ``>= threshold`` are accepted. ``precision`` and
    ``coverage`` (the accepted fraction) are measured on the records it was chosen on; ``reached`` is False when
    no threshold reaches the target precision, and the threshold is then the one of the highest precision."""

    threshold: float
    precision: float | None
    coverage: float
    reached: bool


def choose_threshold(similarities: np.ndarray, correct: np.ndarray, target_precision: float) -> ThresholdChoice:
    """The smallest similarity threshold at which the accepted predictions (``similarity >= threshold``) are right
    at least ``target_precision`` of the time on these records.

    Records of equal similarity are accepted or rejected together. NaN similarities are never accepted and leave
    the precision alone. When no threshold reaches the target, the one of the highest precision (the smallest of
    those, to accept the most) is returned with ``reached=False``; with no records, ``threshold=inf`` (accept
    nothing)."""
    sims = np.asarray(similarities, dtype=np.float64).ravel()
    right = np.asarray(correct, dtype=bool).ravel()
    if sims.shape != right.shape:
        raise ValueError(f"similarities {sims.shape} and correct {right.shape} differ in length")
    total = len(sims)
    keep = ~np.isnan(sims)
    sims, right = sims[keep], right[keep]
    if len(sims) == 0:
        return ThresholdChoice(float("inf"), None, 0.0, False)
    order = np.argsort(-sims, kind="stable")
    sims, right = sims[order], right[order]
    precision = np.cumsum(right) / np.arange(1, len(sims) + 1)
    ends = np.flatnonzero(np.append(sims[1:] != sims[:-1], True))  # a threshold admits every tie: judge the last
    good = ends[precision[ends] >= target_precision - PRECISION_EPS]
    reached = len(good) > 0
    if reached:
        at = good[-1]
    else:
        best = precision[ends].max()
        at = ends[np.flatnonzero(precision[ends] >= best - PRECISION_EPS)[-1]]
    return ThresholdChoice(float(sims[at]), float(precision[at]), (at + 1) / total, reached)


def apply_thresholds(per_rank_similarity: np.ndarray, thresholds: np.ndarray | list[float]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per-rank acceptance and the roll-up: ``(accepted [N, R], deepest [N])``.

    ``per_rank_similarity`` is ``[N, R]``, ranks coarse to fine. ``accepted[n, r]`` is each rank on its own
    (``similarity >= threshold``, NaN never accepted); ``deepest[n]`` is the deepest rank ``r`` such that ranks
    ``0..r`` are all accepted, ``-1`` when the coarsest is not (the record is unknown)."""
    sims = np.asarray(per_rank_similarity, dtype=np.float64)
    thr = np.asarray(thresholds, dtype=np.float64)
    if sims.ndim != 2 or sims.shape[1] != len(thr):
        raise ValueError(f"need [records, {len(thr)}] similarities for {len(thr)} thresholds, got {sims.shape}")
    with np.errstate(invalid="ignore"):
        accepted = sims >= thr[None, :]
    deepest = np.cumprod(accepted, axis=1).sum(1) - 1  # length of the accepted run from the coarsest rank
    return accepted, deepest.astype(np.int64)
