"""Consistent decoding: predictions at every rank that agree with the tree, and the confidence roll-up.

Every root-to-leaf path of the tree is a candidate. A path scores ``log p(leaf) + beta * mean_q log p_q(ancestor)``:
the leaf's own head probability times the geometric mean of its ancestors' head probabilities to the power beta
(a mean, not a sum, so paths that skip a rank are not favoured). The best path gives the label at every rank.

``beta = 1`` was chosen on the plankton val split (class and group accuracy both highest there; an earlier
top-down decoder lost 1-1.5 points of class accuracy to the head alone by committing to a coarse node first).

Each rank's confidence, used by the roll-up, is the mean of that node's own head probability and the finest
probabilities summed into it, so it never falls to zero for a node the coarse head doubts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from taxotrain.taxonomy import NULL, Taxonomy


@dataclass
class Decoded:
    """Consistent path per record: ``labels`` [N, R] (``NULL`` where the path skips a rank) and ``scores`` [N, R]."""

    labels: np.ndarray
    scores: np.ndarray


def endpoints(taxonomy: Taxonomy) -> tuple[np.ndarray, np.ndarray]:
    """Nodes a path can end at: every finest node, plus coarser nodes with nothing below them.

    Returns (paths [E, R] label per rank with ``NULL`` below the end, rank of each endpoint [E]).
    """
    R = len(taxonomy.ranks)
    paths, ranks = [], []
    for r in range(R):
        anc = taxonomy.ancestors[r]
        has_child = np.zeros(len(anc), dtype=bool)
        for q in range(r + 1, R):
            col = taxonomy.ancestors[q][:, r]
            has_child[col[col != NULL]] = True
        for i in np.flatnonzero(~has_child) if r < R - 1 else range(len(anc)):
            row = anc[i].copy()
            row[r + 1:] = NULL
            paths.append(row)
            ranks.append(r)
    return np.asarray(paths, dtype=np.int64), np.asarray(ranks, dtype=np.int64)


DEFAULT_BETA = 1.0


def decode(probs: dict[str, np.ndarray], taxonomy: Taxonomy, beta: float = DEFAULT_BETA) -> Decoded:
    """Best consistent path of each record from per-rank probabilities ``{rank: [N, n_rank]}``."""
    ranks = taxonomy.ranks
    paths, end_rank = endpoints(taxonomy)
    n = len(next(iter(probs.values())))
    logp = {r: np.log(np.clip(probs[r], 1e-12, None)) for r in ranks}
    own = np.stack([logp[ranks[r]][:, paths[e, r]] for e, r in enumerate(end_rank)], axis=1)  # [N, E]
    above = np.zeros_like(own)
    count = np.zeros(len(paths))
    for q, rank in enumerate(ranks[:-1]):
        has = (paths[:, q] != NULL) & (end_rank > q)
        above[:, has] += logp[rank][:, paths[has, q]]
        count += has
    best = (own + beta * above / np.maximum(count, 1)).argmax(1)
    labels = paths[best]
    scores = np.zeros((n, len(ranks)))
    fine = probs[ranks[-1]]
    rows = np.arange(n)
    for r, rank in enumerate(ranks):
        known = labels[:, r] != NULL
        if r == len(ranks) - 1:
            scores[:, r] = np.where(known, fine[rows, np.maximum(labels[:, r], 0)], 0.0)
            continue
        summed = fine @ taxonomy.membership(r)
        node = np.maximum(labels[:, r], 0)
        scores[:, r] = np.where(known, 0.5 * (probs[rank][rows, node] + summed[rows, node]), 0.0)
    return Decoded(labels, scores)


def choose_thresholds(scores: np.ndarray, decoded: np.ndarray, target: np.ndarray, precision: float) -> list[float]:
    """Per rank, the lowest confidence threshold at which decoded predictions reach ``precision`` on ``target``.

    Records unknown at a rank do not count. A rank that never reaches the precision gets a threshold above 1, so
    the roll-up never stops there.
    """
    out = []
    for r in range(target.shape[1]):
        ok = (target[:, r] != NULL) & (decoded[:, r] != NULL)
        conf, hit = scores[ok, r], decoded[ok, r] == target[ok, r]
        order = np.argsort(-conf, kind="stable")
        prec = np.cumsum(hit[order]) / np.arange(1, len(order) + 1)
        good = np.flatnonzero(prec >= precision)
        out.append(float(conf[order][good[-1]]) if len(good) else 1.01)
    return out


def roll_up(decoded: Decoded, thresholds: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Deepest rank whose decoded confidence passes its threshold, and that rank's label (``-1`` if none)."""
    passes = (decoded.scores >= np.asarray(thresholds)[None, :]) & (decoded.labels != NULL)
    deepest = np.where(passes.any(1), passes.shape[1] - 1 - np.argmax(passes[:, ::-1], axis=1), -1)
    label = np.where(deepest >= 0, decoded.labels[np.arange(len(deepest)), np.maximum(deepest, 0)], NULL)
    return deepest, label
