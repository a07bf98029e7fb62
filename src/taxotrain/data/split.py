"""Seeded, stratified train/val/test split that copes with tiny classes."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from taxotrain.taxonomy import NULL

MIN_TO_STRATIFY = 3


def stratified_split(labels: np.ndarray, val: float, test: float, seed: int) -> tuple[dict[str, np.ndarray], list]:
    """Split record indices per stratum (the deepest known label of each record).

    A stratum with at least ``MIN_TO_STRATIFY`` records gives at least one record to each held-out split whose
    fraction is above zero and keeps at least one for training. Smaller strata go wholly to train (they are
    returned as the second value, so the caller can report them): a class seen once cannot be both learnt and
    tested.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"--val {val} and --test {test} must be fractions in [0, 1) that sum to less than 1")
    rng = np.random.default_rng(seed)
    strata: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, row in enumerate(labels):
        known = np.flatnonzero(row != NULL)
        depth = int(known[-1]) if len(known) else -1
        strata[(depth, int(row[depth]) if depth >= 0 else NULL)].append(i)
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    too_small = []
    for key in sorted(strata):
        idx = np.array(strata[key])
        rng.shuffle(idx)
        n = len(idx)
        if n < MIN_TO_STRATIFY:
            out["train"].extend(idx.tolist())
            too_small.append(key)
            continue
        n_test = max(1, round(n * test)) if test > 0 else 0
        n_val = max(1, round(n * val)) if val > 0 else 0
        while n - n_test - n_val < 1:  # keep one for training
            if n_val >= n_test and n_val > 0:
                n_val -= 1
            else:
                n_test -= 1
        out["test"].extend(idx[:n_test].tolist())
        out["val"].extend(idx[n_test : n_test + n_val].tolist())
        out["train"].extend(idx[n_test + n_val :].tolist())
    return {k: np.sort(np.asarray(v, dtype=np.int64)) for k, v in out.items()}, too_small
