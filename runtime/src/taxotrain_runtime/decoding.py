"""Consistent decoding: predictions at every rank that agree with the tree, and the confidence roll-up.

Every root-to-leaf path of the tree is a candidate. A path scores

    log p(leaf) + beta * mean_q log p_q(ancestor) - risk * E_j[height(leaf, j)]

- the leaf's own head probability times the geometric mean of its ancestors' head probabilities to the power beta
  (a mean, not a sum, so paths that skip a rank are not favoured);
- minus ``risk`` times the expected mistake severity of answering that leaf: the lowest-common-ancestor height
  between it and each finest node j, weighted by the finest head's probability of j (the conditional risk of
  Karthik et al., ICLR 2021). It moves an unsure prediction towards the part of the tree that holds most of the
  mass, so that when it is wrong it is wrong by less.

The best path gives the label at every rank. The defaults were chosen on the plankton val split over a flat and
two hierarchical runs (``docs/hierarchy.md``): averaged over the three, ``beta = 0.5, risk = 1`` gives class top-1
0.657 and mistake severity 2.181, against 0.652 and 2.188 for the earlier ``beta = 1, risk = 0`` and 0.659 and 2.207
for the finest head's plain argmax. A top-down decoder (commit to the best coarse node first) lost 1-1.5 points of
class accuracy.

Each rank's confidence, used by the roll-up, is the mean of that node's own head probability and the finest
probabilities summed into it, so it never falls to zero for a node the coarse head doubts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from taxotrain_runtime.tree import NULL, Tree


@dataclass
class Decoded:
    """Consistent path per record: ``labels`` [N, R] (``NULL`` where the path skips a rank) and ``scores`` [N, R]."""

    labels: np.ndarray
    scores: np.ndarray


def endpoints(taxonomy: Tree) -> tuple[np.ndarray, np.ndarray]:
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


DEFAULT_BETA = 0.5
DEFAULT_RISK = 1.0


def endpoint_heights(taxonomy: Tree, paths: np.ndarray) -> np.ndarray:
    """``[E, n_finest]``: ranks from the finest rank up to the lowest common ancestor of each endpoint's path and
    each finest node (0 = the same node, ``R`` = only the root in common); ``Taxonomy.lca_height`` for finest pairs."""
    R = len(taxonomy.ranks)
    leaves = taxonomy.ancestors[R - 1]  # [n, R] path of every finest node
    heights = np.full((len(paths), len(leaves)), R, dtype=np.float64)
    for q in range(R):  # the deepest shared rank wins: later ranks overwrite
        shared = (paths[:, None, q] != NULL) & (paths[:, None, q] == leaves[None, :, q])
        heights[shared] = R - 1 - q
    return heights


def decode(probs: dict[str, np.ndarray], taxonomy: Tree, beta: float = DEFAULT_BETA,
           risk: float = DEFAULT_RISK) -> Decoded:
    """Best consistent path of each record from per-rank probabilities ``{rank: [N, n_rank]}``.

    ``beta`` weighs the coarser heads' say in the path, ``risk`` the expected mistake severity (module docstring).
    """
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
    score = own + beta * above / np.maximum(count, 1)
    if risk:
        score -= risk * (probs[ranks[-1]] @ endpoint_heights(taxonomy, paths).T)
    best = score.argmax(1)
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
    """Roll-up thresholds chosen for the cascade as :func:`roll_up` applies it: the finest rank first, each coarser
    rank on the records that no finer rank reported (the hard ones). At each rank, the lowest confidence at which
    those records' decoded labels reach ``precision`` on ``target``.

    Records unknown at a rank do not count towards its precision (but leave the cascade there if they pass). A rank
    that never reaches the precision gets a threshold above 1, so the roll-up never stops there.
    """
    n_ranks = target.shape[1]
    thresholds = [1.01] * n_ranks
    reached = np.ones(len(scores), dtype=bool)  # records that no finer rank has reported yet
    for r in reversed(range(n_ranks)):
        ok = reached & (target[:, r] != NULL) & (decoded[:, r] != NULL)
        conf, hit = scores[ok, r], decoded[ok, r] == target[ok, r]
        order = np.argsort(-conf, kind="stable")
        conf, prec = conf[order], np.cumsum(hit[order]) / np.arange(1, len(order) + 1)
        ends = np.append(conf[1:] != conf[:-1], True)  # a threshold admits every tie: judge it after the last one
        good = np.flatnonzero(ends & (prec >= precision))
        thresholds[r] = float(conf[good[-1]]) if len(good) else 1.01
        reached &= ~((decoded[:, r] != NULL) & (scores[:, r] >= thresholds[r]))
    return thresholds


def rollup_precision(decoded: np.ndarray, target: np.ndarray, deepest: np.ndarray, ranks: list[str]
                     ) -> dict[str, object]:
    """What a roll-up achieved on labelled records: the fraction reported at each rank and at none, and the precision
    at each rank and overall (records unknown at their reported rank are left out of the precision)."""
    per_rank: dict[str, float | None] = {}
    hits = total = 0
    for r, rank in enumerate(ranks):
        rows = np.flatnonzero((deepest == r) & (target[:, r] != NULL))
        right = int((decoded[rows, r] == target[rows, r]).sum())
        per_rank[rank] = right / len(rows) if len(rows) else None
        hits, total = hits + right, total + len(rows)
    return {"reported_at": {rank: float((deepest == r).mean()) for r, rank in enumerate(ranks)},
            "reported_at_none": float((deepest < 0).mean()),
            "precision_per_rank": per_rank,
            "precision_at_reported_rank": hits / total if total else None}


def roll_up(decoded: Decoded, thresholds: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Deepest rank whose decoded confidence passes its threshold, and that rank's label (``-1`` if none)."""
    passes = (decoded.scores >= np.asarray(thresholds)[None, :]) & (decoded.labels != NULL)
    deepest = np.where(passes.any(1), passes.shape[1] - 1 - np.argmax(passes[:, ::-1], axis=1), -1)
    label = np.where(deepest >= 0, decoded.labels[np.arange(len(deepest)), np.maximum(deepest, 0)], NULL)
    return deepest, label
