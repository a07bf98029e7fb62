"""From per-rank probabilities to prediction records and CSV rows: the consistent path through the tree, the
roll-up to the deepest rank the model is sure of, and the finest rank's top-k.

``taxotrain predict RUN`` and ``taxotrain-runtime predict BUNDLE`` both write their CSV through here, so the same
probabilities give the same rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from taxotrain_runtime.decoding import decode, roll_up
from taxotrain_runtime.tree import NULL, Tree

DEFAULT_THRESHOLD = 0.5  # roll-up threshold of a run whose thresholds were never chosen on val


def read_rollup(path: Path, ranks: list[str], never_evaluated: str = "") -> tuple[list[float], str]:
    """The roll-up thresholds of ``rollup.json`` (one per rank) and a sentence saying where they come from; 0.5 at
    every rank when the file is missing or chose none (``never_evaluated`` says how to choose them)."""
    saved = json.loads(path.read_text()) if path.is_file() else {}
    if not saved.get("chosen_on"):
        return [DEFAULT_THRESHOLD] * len(ranks), (f"{DEFAULT_THRESHOLD} at every rank: the run was never evaluated"
                                                  + (f" ({never_evaluated})" if never_evaluated else ""))
    values = [float(saved["thresholds"].get(r, DEFAULT_THRESHOLD)) for r in ranks]
    shown = ", ".join(f"{r} {v:.3g}" for r, v in zip(ranks, values, strict=True))
    return values, f"{shown}, chosen on {saved['chosen_on']} for a precision of {saved.get('target_precision')}"


@dataclass
class PredictionRecord:
    """One predicted record: its ids, the consistent label and score per rank (``None`` where the path skips a
    rank), the roll-up (deepest confident rank, its label and the threshold it passed), the finest rank's top-k,
    extra columns and any error."""

    ids: dict[str, str]
    labels: dict[str, tuple[str | None, float]] = field(default_factory=dict)
    topk: list[tuple[str, float]] = field(default_factory=list)
    deepest: tuple[str, str] | None = None
    deepest_threshold: float | None = None
    extra: dict[str, str] = field(default_factory=dict)
    error: str = ""


def rank_columns(tree: Tree, topk: int) -> list[str]:
    """The CSV columns of the prediction itself: label and score per rank, the roll-up, the finest rank's top-k."""
    fine, k = tree.finest, min(topk, tree.num_classes[-1])
    rollup = ["deepest_rank", "deepest_label", "deepest_threshold"]
    return ([c for r in tree.ranks for c in (r, f"{r}_score")] + rollup
            + [c for i in range(1, k + 1) for c in (f"{fine}_top{i}", f"{fine}_top{i}_score")])


def make_records(probs: dict[str, np.ndarray], tree: Tree, ids: list[dict[str, str]], errors: list[str],
                 extra: list[dict[str, str]] | None = None, thresholds: list[float] | None = None,
                 topk: int = 5) -> list[PredictionRecord]:
    """One record per input: ``probs`` (``{rank: [n_readable, n_rank]}``) has a row for each input without an error,
    in order; the roll-up uses ``thresholds`` (one per rank; ``None`` = 0.5 everywhere)."""
    ranks = tree.ranks
    thresholds = thresholds or [DEFAULT_THRESHOLD] * len(ranks)
    if any(not e for e in errors):
        decoded = decode(probs, tree)
        deepest, _ = roll_up(decoded, thresholds)
        fine = probs[tree.finest]
    k = min(topk, tree.num_classes[-1])
    out, row = [], 0
    for b, error in enumerate(errors):
        more = extra[b] if extra else {}
        if error:
            out.append(PredictionRecord(ids[b], extra=more, error=error))
            continue
        labels = {rank: (tree.names[r][i] if (i := int(decoded.labels[row, r])) != NULL else None,
                         float(decoded.scores[row, r])) for r, rank in enumerate(ranks)}
        order = np.argsort(-fine[row], kind="stable")[:k]
        d = int(deepest[row])
        rolled = (ranks[d], tree.names[d][decoded.labels[row, d]]) if d >= 0 else None
        out.append(PredictionRecord(ids[b], labels, [(tree.names[-1][i], float(fine[row, i])) for i in order],
                                    rolled, thresholds[d] if d >= 0 else None, more))
        row += 1
    return out


def record_row(record: PredictionRecord, tree: Tree) -> dict[str, Any]:
    """A record as a CSV row (the :func:`rank_columns`, plus its ids, extra columns and error)."""
    row: dict[str, Any] = {**record.ids, **record.extra, "error": record.error}
    for rank, (label, score) in record.labels.items():
        row[rank], row[f"{rank}_score"] = label or "", round(score, 6) if label else ""
    if record.deepest:
        row["deepest_rank"], row["deepest_label"] = record.deepest
        threshold = record.deepest_threshold
        row["deepest_threshold"] = round(threshold, 6) if threshold is not None else ""
    for i, (label, score) in enumerate(record.topk, 1):
        row[f"{tree.finest}_top{i}"], row[f"{tree.finest}_top{i}_score"] = label, round(score, 6)
    return row
