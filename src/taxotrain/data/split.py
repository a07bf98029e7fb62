"""Seeded, stratified train/val/test split that copes with tiny classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from taxotrain.taxonomy import NULL

MIN_TO_STRATIFY = 3


def _strata(labels: np.ndarray, with_keys: bool = False) -> Any:
    """Each record's stratum, its deepest known label, as one integer code per (depth, label) in sorted order;
    with ``with_keys`` also the ``(depth, label)`` of each code."""
    labels = np.asarray(labels, dtype=np.int64)
    labels = labels.reshape(len(labels), labels.shape[-1] if labels.ndim > 1 else 1)
    known = labels != NULL
    # the deepest known rank of each row (-1 for a row known at no rank), and its label there
    depth = np.where(known.any(1), labels.shape[1] - 1 - np.argmax(known[:, ::-1], axis=1), -1)
    label = np.where(depth >= 0, labels[np.arange(len(labels)), np.maximum(depth, 0)], NULL)
    unique, index = np.unique(np.stack([depth, label], axis=1), axis=0, return_inverse=True)
    index = index.reshape(-1)
    return (index, [tuple(int(v) for v in u) for u in unique]) if with_keys else index


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
    codes, keys = _strata(labels, with_keys=True)
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    too_small = []
    by_stratum = np.split(np.argsort(codes, kind="stable"), np.cumsum(np.bincount(codes, minlength=len(keys)))[:-1])
    for key, idx in zip(keys, by_stratum, strict=True):  # in (depth, label) order, records in file order
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




def grouped_split(labels: np.ndarray, groups: list[str], val: float, test: float,
                  seed: int) -> dict[str, np.ndarray]:
    """Split record indices so that every group (a site, cruise, observation or date: ``groups[i]`` is record
    ``i``'s) lies inside one split, stratified as far as the groups allow.

    Groups are placed largest first (ties in seeded random order), each into the split whose class counts are
    furthest below their share of that group's classes, among the splits it does not push more than a tenth past
    their share of all records (train always takes one). A held-out split with a fraction above 0 that no group
    went to then takes the smallest group left in train (when train keeps another).
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"--val {val} and --test {test} must be fractions in [0, 1) that sum to less than 1")
    rng = np.random.default_rng(seed)
    strata = _strata(labels)
    names, group_of = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    n_strata = int(strata.max()) + 1 if len(strata) else 0
    counts = np.zeros((len(names), n_strata), dtype=np.int64)
    np.add.at(counts, (group_of, strata), 1)
    fractions = np.array([1.0 - val - test, val, test])
    target = fractions[:, None] * counts.sum(0)[None, :]  # records of each stratum each split should hold
    total_target = fractions * len(labels)
    held = np.zeros_like(target)
    order = sorted(range(len(names)), key=lambda g: (-counts[g].sum(), rng.random()))
    split_of_group = np.zeros(len(names), dtype=np.int64)
    for g in order:
        c, size = counts[g], counts[g].sum()
        need = np.minimum(c[None, :], np.clip(target - held, 0, None)).sum(1) / size  # share of g each split lacks
        room = held.sum(1) + size <= total_target * 1.1 + 1e-9
        room[0] = True
        room &= fractions > 0
        deficit = (total_target - held.sum(1)) / max(len(labels), 1)
        score = np.where(room, need + 1e-3 * deficit, -np.inf)
        s = int(np.argmax(score))
        split_of_group[g] = s
        held[s] += c
    for s in (1, 2):  # a held-out split asked for gets a group, the smallest train can spare, even past its share
        in_train = [g for g in order if split_of_group[g] == 0]
        if fractions[s] > 0 and not (split_of_group == s).any() and len(in_train) > 1:
            split_of_group[in_train[-1]] = s
    record_split = split_of_group[group_of]
    return {name: np.flatnonzero(record_split == s).astype(np.int64)
            for s, name in enumerate(("train", "val", "test"))}


def class_mix_distance(labels: np.ndarray, splits: dict[str, np.ndarray]) -> dict[str, float]:
    """Per split, the total variation distance between its class mix (each record's deepest known label) and the
    whole set's: 0 = the same proportions, 1 = no class in common."""
    strata = _strata(labels)
    whole = np.bincount(strata, minlength=int(strata.max()) + 1) / len(strata)
    out = {}
    for name, idx in splits.items():
        if len(idx) == 0:
            continue
        mix = np.bincount(strata[idx], minlength=len(whole)) / len(idx)
        out[name] = round(float(0.5 * np.abs(mix - whole).sum()), 4)
    return out


def choose_holdout(labels: np.ndarray, names: list[str], rank: int, spec: str, seed: int) -> list[int]:
    """The classes at ``rank`` to hold out: ``spec`` is a fraction of the classes that have records (drawn with
    ``seed``) or a file with one class name per line (its first CSV column). Raises ``ValueError`` with a one-line
    reason for a bad fraction or a name the data does not hold."""
    present = sorted({int(c) for c in labels[:, rank] if c != NULL})
    try:
        fraction = float(spec)
    except ValueError:
        fraction = None
    if fraction is not None:
        if not 0 < fraction < 1:
            raise ValueError(f"--holdout-classes {spec}: give a fraction in (0, 1), or a file of class names")
        count = max(1, int(round(fraction * len(present))))
        if count >= len(present):
            raise ValueError(f"--holdout-classes {spec} would hold out all {len(present)} classes; give a smaller "
                             "fraction")
        return sorted(int(c) for c in np.random.default_rng(seed + 104_729).choice(present, count, replace=False))
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"--holdout-classes {spec}: neither a fraction nor a file; give e.g. 0.2 or classes.txt "
                         "(one class name per line)")
    wanted = [ln.split(",")[0].strip() for ln in path.read_text().splitlines() if ln.strip()]
    lookup = {n: i for i, n in enumerate(names)}
    unknown = [w for w in wanted if lookup.get(w) not in present]
    if unknown:
        raise ValueError(f"--holdout-classes {spec}: {len(unknown)} name(s) are no class with records at this rank, "
                         f"e.g. {unknown[0]!r}; check the spelling against the taxonomy")
    return sorted({lookup[w] for w in wanted})


def holdout_split(labels: np.ndarray, rank: int, classes: list[int]) -> np.ndarray:
    """Indices of the records whose class at ``rank`` is one of ``classes``."""
    return np.flatnonzero(np.isin(labels[:, rank], classes)).astype(np.int64)
