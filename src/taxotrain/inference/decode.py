"""Consistent decoding: predictions at every rank that agree with the tree, and the confidence roll-up.

Top-down, each rank chooses among the children of the node already chosen. A node's score is the mean of its own
head's probability and the probability mass that finer heads put on everything below it (fine probabilities summed
into their parents). Where some branches skip a rank (a class straight under its group) the option "no node at this
rank" competes with its summed mass. The result is one root-to-leaf path per record.
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


def decode(probs: dict[str, np.ndarray], taxonomy: Taxonomy) -> Decoded:
    """Best consistent path of each record from per-rank probabilities ``{rank: [N, n_rank]}``."""
    ranks = taxonomy.ranks
    paths, end_rank = endpoints(taxonomy)
    n = len(next(iter(probs.values())))
    # mass of each endpoint: its own rank's head probability
    mass = np.stack([probs[ranks[r]][:, paths[e, r]] for e, r in enumerate(end_rank)], axis=1)  # [N, E]
    alive = np.ones_like(mass, dtype=bool)
    labels = np.full((n, len(ranks)), NULL, dtype=np.int64)
    scores = np.zeros((n, len(ranks)))
    rows = np.arange(n)
    for r, rank in enumerate(ranks):
        member = np.zeros((len(paths), taxonomy.num_classes[r]))
        known = paths[:, r] != NULL
        member[np.flatnonzero(known), paths[known, r]] = 1.0
        live_mass = mass * alive
        summed = live_mass @ member  # [N, n_r]
        reachable = (alive.astype(np.float64) @ member) > 0
        q = np.where(reachable, 0.5 * (probs[rank] + summed), -1.0)
        skip = (live_mass * ~known).sum(1)  # the "no node at this rank" option
        can_skip = (alive & ~known).any(1)
        best = q.argmax(1)
        best_q = q[rows, best]
        take_skip = can_skip & (skip > best_q)
        labels[:, r] = np.where(take_skip, NULL, best)
        scores[:, r] = np.where(take_skip, skip, best_q)
        chosen = labels[:, r][:, None]
        alive &= np.where(take_skip[:, None], ~known[None, :], paths[None, :, r] == chosen)
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
