"""What the report shows of a run's mistakes: the most confused class pairs of a rank, each class's most frequent
wrong prediction, and the most confident wrong records (the gallery)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from taxotrain.taxonomy import NULL, Taxonomy


@dataclass
class ConfusedPair:
    """Records of class ``true`` predicted as ``predicted``: how many, their share of the true class, and how far
    apart the two sit in the tree (edges, and the lowest common ancestor)."""

    true: str
    predicted: str
    count: int
    fraction: float
    distance: int
    shared: str


@dataclass
class Mistake:
    """One wrong record at the finest rank: its store index, names, the confidence of the wrong answer, tree
    distance and common ancestor, and a PNG thumbnail when the task draws one."""

    index: int
    true: str
    predicted: str
    confidence: float
    distance: int
    shared: str
    thumbnail: bytes | None = None


def shared_ancestor(taxonomy: Taxonomy, rank: int, a: int, b: int) -> str:
    """The lowest common ancestor of two nodes of ``rank`` as ``"<rank> <name>"``, or ``"root"``."""
    q = rank - taxonomy.lca_height(rank, a, b)
    if q < 0:
        return "root"
    return f"{taxonomy.ranks[q]} {taxonomy.names[q][int(taxonomy.ancestors[rank][a, q])]}"


def confused_pairs(cm: np.ndarray, taxonomy: Taxonomy, rank: int, top: int = 25) -> list[ConfusedPair]:
    """The ``top`` largest off-diagonal cells of a ``[true, predicted]`` confusion matrix, by count (ties: larger
    share of the true class first)."""
    off = cm.astype(np.int64).copy()
    np.fill_diagonal(off, 0)
    support = cm.sum(1)
    t, p = np.nonzero(off)
    counts = off[t, p]
    fractions = counts / support[t]
    order = np.lexsort((p, t, -fractions, -counts))[:top]
    names = taxonomy.names[rank]
    return [ConfusedPair(names[t[k]], names[p[k]], int(counts[k]), float(fractions[k]),
                         taxonomy.tree_distance(rank, int(t[k]), int(p[k])),
                         shared_ancestor(taxonomy, rank, int(t[k]), int(p[k]))) for k in order]


def most_confused_with(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per true class, the class it is most often wrongly predicted as and how often (``-1`` and 0 when never)."""
    off = cm.astype(np.int64).copy()
    np.fill_diagonal(off, 0)
    best = off.argmax(1)
    counts = off[np.arange(len(off)), best]
    return np.where(counts > 0, best, -1), counts


def worst_mistakes(decoded: np.ndarray, labels: np.ndarray, fine_probs: np.ndarray, indices: np.ndarray,
                   taxonomy: Taxonomy, limit: int = 40) -> list[Mistake]:
    """Records whose decoded finest label is wrong, most confident first (confidence = the finest head's
    probability of the wrong answer), at most ``limit``; ``indices`` maps rows to store records."""
    fine = len(taxonomy.ranks) - 1
    true, pred = labels[:, fine], decoded[:, fine]
    wrong = np.flatnonzero((true != NULL) & (pred != NULL) & (pred != true))
    conf = fine_probs[wrong, pred[wrong]]
    rows = wrong[np.argsort(-conf, kind="stable")][:limit]
    names = taxonomy.names[fine]
    return [Mistake(int(indices[i]), names[true[i]], names[pred[i]], float(fine_probs[i, pred[i]]),
                    taxonomy.tree_distance(fine, int(true[i]), int(pred[i])),
                    shared_ancestor(taxonomy, fine, int(true[i]), int(pred[i]))) for i in rows]
