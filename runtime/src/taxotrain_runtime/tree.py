"""The taxonomic tree a trained model names its labels in: ranks (coarse to fine), node names per rank and every
node's ancestor at each coarser rank (``NULL = -1`` where a node has none, e.g. a class hanging straight under its
group). Plain numpy: the light runtime reads it from a bundle, and the training package builds it from data
(``taxotrain.taxonomy.Taxonomy`` adds that).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

NULL = -1


@dataclass
class Tree:
    """Ranks (coarse to fine), node names per rank and each node's ancestor index at every coarser rank."""

    ranks: list[str]
    names: list[list[str]]
    ancestors: list[np.ndarray]  # per rank r: int array [n_r, len(ranks)]; column r is the node itself, NULL unknown
    _lookup: list[dict[str, int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._lookup = [{n: i for i, n in enumerate(names)} for names in self.names]

    @property
    def num_classes(self) -> list[int]:
        """Number of nodes at each rank."""
        return [len(n) for n in self.names]

    @property
    def finest(self) -> str:
        """Name of the finest rank."""
        return self.ranks[-1]

    def index(self, rank: int, name: str) -> int:
        """Index of ``name`` at ``rank``; ``KeyError`` if unknown."""
        return self._lookup[rank][name]

    def has(self, rank: int, name: str) -> bool:
        """Whether ``name`` is a node at ``rank``."""
        return name in self._lookup[rank]

    def lineage_names(self, rank: int, index: int) -> list[str | None]:
        """Names of a node's ancestors at every rank down to itself."""
        return [self.names[q][i] if i != NULL else None for q, i in enumerate(self.ancestors[rank][index][: rank + 1])]

    def parent(self, rank: int, index: int) -> tuple[int, int] | None:
        """(rank, index) of the nearest known ancestor, or ``None`` at the root."""
        for q in range(rank - 1, -1, -1):
            if self.ancestors[rank][index, q] != NULL:
                return q, int(self.ancestors[rank][index, q])
        return None

    def membership(self, rank: int) -> np.ndarray:
        """0/1 matrix ``[n_finest, n_rank]``: which node at ``rank`` each finest node sits under (summing finest
        probabilities into a coarser rank is ``probs @ membership``)."""
        col = self.ancestors[-1][:, rank]
        out = np.zeros((self.num_classes[-1], self.num_classes[rank]))
        out[np.flatnonzero(col != NULL), col[col != NULL]] = 1.0
        return out

    def lca_height(self, rank: int, a: int, b: int) -> int:
        """Ranks between two nodes of ``rank`` and their lowest common ancestor (0 = same node, rank+1 = root)."""
        if a == b:
            return 0
        anc = self.ancestors[rank]
        for q in range(rank - 1, -1, -1):
            if anc[a, q] != NULL and anc[a, q] == anc[b, q]:
                return rank - q
        return rank + 1

    def tree_distance(self, rank: int, a: int, b: int) -> int:
        """Edges between two nodes of ``rank`` in the real tree (ranks where a node has no ancestor are skipped)."""
        if a == b:
            return 0
        anc = self.ancestors[rank]
        lca = rank - self.lca_height(rank, a, b)  # rank index of the LCA, -1 = root
        below = slice(lca + 1, rank + 1)
        return int((anc[a, below] != NULL).sum() + (anc[b, below] != NULL).sum())

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (stored in checkpoints, loadable with ``torch.load(weights_only=True)``)."""
        return {"ranks": list(self.ranks), "names": [list(n) for n in self.names],
                "ancestors": [a.tolist() for a in self.ancestors]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tree:
        """Inverse of ``to_dict``."""
        return cls(list(d["ranks"]), [list(n) for n in d["names"]],
                   [np.asarray(a, dtype=np.int64).reshape(len(n), len(d["ranks"])) for a, n in
                    zip(d["ancestors"], d["names"], strict=True)])

