"""Hierarchy metrics of decoded (consistent) predictions: does the taxonomy pay?

- ``chain_accuracy``: records labelled down to the finest rank whose every known rank is right;
- ``partial_chain_accuracy``: all records, every rank they are labelled at is right;
- ``mistake_severity``: mean height (in ranks) of the lowest common ancestor of wrong finest predictions and the
  truth (1 = a sibling, R = only the root in common); ``mistake_tree_distance``: mean edges between them;
- ``hierarchical_distance_at_1``: the same height averaged over all records labelled at the finest rank, right ones
  counting 0 (Bertinetto et al. 2020): unlike severity it does not reward making more, milder mistakes;
- ``hierarchical_precision/recall/f1`` (Kiritchenko et al. 2005): over the sets of nodes on the predicted and the
  true paths, so a wrong species in the right genus still earns the genus and family;
- ``decoded_top1``: per-rank accuracy of the consistent path; ``coarse_from_fine``: per coarser rank, the accuracy
  of summing the finest head's probabilities into that rank, beside the coarse head's own ``head_top1``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from taxotrain.taxonomy import NULL, Taxonomy


def _path_nodes(labels: np.ndarray) -> list[set[tuple[int, int]]]:
    return [{(r, int(v)) for r, v in enumerate(row) if v != NULL} for row in labels]


def record_heights(decoded: np.ndarray, target: np.ndarray, taxonomy: Taxonomy) -> np.ndarray:
    """Per record, the LCA height between the decoded and the true finest node: 0 when right, ``NaN`` when the
    record has no finest label or the decoded path stops above the finest rank."""
    fine = len(taxonomy.ranks) - 1
    out = np.full(len(target), np.nan)
    for i in np.flatnonzero((target[:, fine] != NULL) & (decoded[:, fine] != NULL)):
        out[i] = taxonomy.lca_height(fine, int(decoded[i, fine]), int(target[i, fine]))
    return out


def hierarchy_metrics(decoded: np.ndarray, target: np.ndarray, probs: dict[str, np.ndarray],
                      taxonomy: Taxonomy) -> dict[str, Any]:
    """All hierarchy metrics for decoded paths ``[N, R]`` against targets ``[N, R]`` (``NULL`` = unknown)."""
    R = len(taxonomy.ranks)
    fine = R - 1
    known = target != NULL
    right = (decoded == target) | ~known
    full = known[:, fine]
    out: dict[str, Any] = {
        "chain_accuracy": float(right[full].all(1).mean()) if full.any() else None,
        "partial_chain_accuracy": float(right[known.any(1)].all(1).mean()) if known.any() else None,
    }
    wrong = full & (decoded[:, fine] != target[:, fine]) & (decoded[:, fine] != NULL)
    all_heights = record_heights(decoded, target, taxonomy)
    heights = all_heights[wrong]
    dists = [taxonomy.tree_distance(fine, int(p), int(t)) for p, t in zip(decoded[wrong, fine],
                                                                         target[wrong, fine], strict=True)]
    out["mistake_severity"] = float(np.mean(heights)) if len(heights) else 0.0
    scored = ~np.isnan(all_heights)
    out["hierarchical_distance_at_1"] = float(all_heights[scored].mean()) if scored.any() else None
    out["mistake_tree_distance"] = float(np.mean(dists)) if dists else 0.0
    out["mistakes"] = int(wrong.sum())

    pred_sets, true_sets = _path_nodes(decoded), _path_nodes(target)
    inter = sum(len(p & t) for p, t in zip(pred_sets, true_sets, strict=True))
    n_pred, n_true = sum(map(len, pred_sets)), sum(map(len, true_sets))
    hp = inter / n_pred if n_pred else 0.0
    hr = inter / n_true if n_true else 0.0
    out.update({"hierarchical_precision": hp, "hierarchical_recall": hr,
                "hierarchical_f1": 2 * hp * hr / (hp + hr) if hp + hr else 0.0})

    out["decoded_top1"] = {rank: float((decoded[known[:, r], r] == target[known[:, r], r]).mean())
                           if known[:, r].any() else None for r, rank in enumerate(taxonomy.ranks)}
    out["coarse_from_fine"], out["head_top1"] = {}, {}
    fine_probs = probs[taxonomy.finest]
    for r, rank in enumerate(taxonomy.ranks[:-1]):
        summed = fine_probs @ taxonomy.membership(r)
        k = known[:, r]
        out["coarse_from_fine"][rank] = float((summed[k].argmax(1) == target[k, r]).mean()) if k.any() else None
        out["head_top1"][rank] = float((probs[rank][k].argmax(1) == target[k, r]).mean()) if k.any() else None
    return out
