"""Ranks, label encoders per rank and ancestor maps of a taxonomy.

A taxonomy here is a list of rank names, coarse to fine (``["family", "genus", "species"]``), and the set of nodes
seen at each rank. A node may be unknown at some coarser rank (a plankton class that hangs directly under its group
has no subgroup): that rank's label is *null* (index ``NULL = -1``) and losses mask it out.

Nodes at each rank are ordered by their lineage, so index order is taxonomy order (used by confusion matrices).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from taxotrain.errors import TaxotrainError
from taxotrain_runtime.tree import NULL, Tree

__all__ = ["NULL", "Taxonomy", "TaxonomyError", "Tree"]


class TaxonomyError(TaxotrainError):
    """The taxonomy contradicts itself or does not cover the data; the message names the offending rows."""


Row = Sequence[str | None]


def _clean(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


class Taxonomy(Tree):
    """A :class:`~taxotrain_runtime.tree.Tree` built from data: label rows (with contradictions refused), label
    encoding, and the store's HDF5 form."""

    # ------------------------------------------------------------------ building

    @classmethod
    def from_rows(cls, ranks: Sequence[str], rows: Iterable[Row], sources: Sequence[str] | None = None) -> Taxonomy:
        """Build a taxonomy from label rows (one name or ``None`` per rank, coarse to fine).

        Raises ``TaxonomyError`` naming the rows when a node has two different parents at some rank.
        ``sources`` labels each row in messages (e.g. ``"taxonomy.csv line 12"``).
        """
        ranks = list(ranks)
        rows = [tuple(_clean(v) for v in row) for row in rows]
        sources = list(sources) if sources is not None else [f"row {i + 1}" for i in range(len(rows))]
        # (rank, name) -> coarser rank -> value -> first source that said so
        seen: dict[tuple[int, str], dict[int, dict[str, str]]] = defaultdict(lambda: defaultdict(dict))
        for row, src in zip(rows, sources, strict=True):
            if len(row) != len(ranks):
                raise TaxonomyError(f"{src}: has {len(row)} rank values, expected {len(ranks)} ({', '.join(ranks)})")
            for r, name in enumerate(row):
                if name is None:
                    continue
                node = seen[(r, name)]
                for q in range(r):
                    if row[q] is not None:
                        node[q].setdefault(row[q], src)
        problems = []
        for (r, name), parents in seen.items():
            for q, options in parents.items():
                if len(options) > 1:
                    listed = "; ".join(f"'{v}' ({s})" for v, s in options.items())
                    problems.append(f"{ranks[r]} '{name}' is under two {ranks[q]} values: {listed}")
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise TaxonomyError(f"taxonomy contradicts itself: {problems[0]}{more}; fix those rows so each name has "
                                "one parent")

        def lineage(r: int, name: str) -> tuple[str | None, ...]:
            parents = seen[(r, name)]
            return tuple(next(iter(parents[q])) if parents.get(q) else None for q in range(r)) + (name,)

        names, ancestors = [], []
        for r in range(len(ranks)):
            nodes = sorted({n for (q, n) in seen if q == r}, key=lambda n, r=r: tuple(v or "" for v in lineage(r, n)))
            names.append(nodes)
        lookups = [{n: i for i, n in enumerate(ns)} for ns in names]
        for r, nodes in enumerate(names):
            table = np.full((len(nodes), len(ranks)), NULL, dtype=np.int64)
            for i, n in enumerate(nodes):
                for q, v in enumerate(lineage(r, n)):
                    if v is not None:
                        table[i, q] = lookups[q][v]
            ancestors.append(table)
        return cls(ranks, names, ancestors)

    def encode(self, row: Row) -> np.ndarray:
        """Label indices for one row of names; coarser ranks missing from the row are filled from the taxonomy."""
        out = np.full(len(self.ranks), NULL, dtype=np.int64)
        for r, name in enumerate(row):
            name = _clean(name)
            if name is not None:
                out[r] = self._lookup[r][name]
        for r in range(len(self.ranks) - 1, -1, -1):  # impute from the deepest known node
            if out[r] != NULL:
                known = self.ancestors[r][out[r]]
                out[:r] = np.where(out[:r] == NULL, known[:r], out[:r])
                break
        return out

    def encode_many(self, rows: Iterable[Row], count: int) -> np.ndarray:
        """:meth:`encode` of ``count`` rows into one ``[count, R]`` array; rows repeat (one per class, typically), so
        each distinct row is encoded once and the memory is that of the result."""
        out = np.empty((count, len(self.ranks)), dtype=np.int64)
        seen: dict[Row, np.ndarray] = {}
        for i, row in enumerate(rows):
            code = seen.get(row)
            if code is None:
                code = seen[row] = self.encode(row)
            out[i] = code
        return out

    # ------------------------------------------------------------------ (de)serialising

    def to_h5(self, group: Any) -> None:
        """Write into an h5py group: per rank ``names``, ``parent`` (index at the previous rank) and ``ancestors``."""
        import h5py

        group.attrs["ranks"] = np.array(self.ranks, dtype=h5py.string_dtype())
        for r, rank in enumerate(self.ranks):
            g = group.create_group(f"rank{r}")
            g.attrs["name"] = rank
            g.create_dataset("names", data=np.array(self.names[r], dtype=h5py.string_dtype()))
            parent = self.ancestors[r][:, r - 1] if r else np.full(len(self.names[r]), NULL)
            g.create_dataset("parent", data=parent.astype(np.int32))
            g.create_dataset("ancestors", data=self.ancestors[r].astype(np.int32))

    @classmethod
    def from_h5(cls, group: Any) -> Taxonomy:
        """Inverse of ``to_h5``."""
        ranks = [r.decode() if isinstance(r, bytes) else str(r) for r in group.attrs["ranks"]]
        names, anc = [], []
        for r in range(len(ranks)):
            g = group[f"rank{r}"]
            names.append([n.decode() if isinstance(n, bytes) else str(n) for n in g["names"][()]])
            anc.append(np.asarray(g["ancestors"][()], dtype=np.int64).reshape(len(names[-1]), len(ranks)))
        return cls(ranks, names, anc)
