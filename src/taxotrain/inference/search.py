"""Nearest-neighbour search on L2-normalised float32 embeddings, scored by inner product (= cosine similarity).

:func:`search` uses faiss-cpu: the exact ``IndexFlatIP`` by default, or an approximate index past about a million
gallery vectors (IVF-flat with ``nlist ~ sqrt(N)`` cells, or HNSW). The gallery is added and the queries are searched
in chunks, so memory holds the gallery once plus ``chunk x k`` results, never a ``Q x N`` similarity matrix.
:func:`search_torch` is the plain chunked matmul + top-k reference, and the fallback when faiss cannot be imported.

Results are ``(similarities [Q, k] float32, indices [Q, k] int64)``, best first. Where fewer than ``k`` neighbours
exist (a small gallery, an approximate index that probed too few cells) the row is padded with index ``-1`` and
similarity ``-inf``. Ties: neighbours of equal similarity are listed by ascending gallery index; which of several
items tied at the k-th place is kept is up to the backend (faiss's flat index keeps the lowest indices).

Prototypes (few-shot enrolment, gallery prediction) and the weighted k-NN vote live here too: they are how a
gallery predicts, and evaluation scores them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from taxotrain.taxonomy import NULL

METHODS = ("exact", "ivf", "hnsw")
QUERY_CHUNK = 1024
GALLERY_CHUNK = 65536


@dataclass(frozen=True)
class IndexSpec:
    """Which faiss index to build. ``None`` fields take defaults from the gallery size: ``nlist = sqrt(N)`` (at most
    ``N / 39``, the fewest training points per cell faiss's k-means accepts without a warning), ``nprobe =
    max(8, nlist / 16)``, ``ef_search = max(64, 2 k)``."""

    method: str = "exact"
    nlist: int | None = None
    nprobe: int | None = None
    hnsw_m: int = 32
    ef_search: int | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"index method {self.method!r} is not one of {', '.join(METHODS)}")


@dataclass
class Index:
    """A searchable gallery: a faiss index, or (without faiss) the gallery itself for :func:`search_torch`."""

    spec: IndexSpec
    size: int
    faiss_index: Any = None
    gallery: np.ndarray | None = None


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32 (all-zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def faiss_available() -> bool:
    """Whether faiss can be imported here."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def build_index(gallery: np.ndarray, index: str | IndexSpec = "exact", *, chunk: int = GALLERY_CHUNK) -> Index:
    """Index the gallery ``[N, D]`` for repeated :func:`search_index` calls (added ``chunk`` rows at a time)."""
    spec = index if isinstance(index, IndexSpec) else IndexSpec(index)
    gallery = _matrix(gallery, "gallery")
    if not faiss_available():
        return Index(spec, len(gallery), gallery=gallery)
    import faiss

    n, d = gallery.shape
    if spec.method == "ivf" and n > 0:
        nlist = spec.nlist or max(1, min(round(math.sqrt(n)), n // 39))
        built = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        built.train(gallery)  # faiss samples at most 256 points per cell itself
        built.nprobe = min(nlist, spec.nprobe or max(8, nlist // 16))
    elif spec.method == "hnsw":
        built = faiss.IndexHNSWFlat(d, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    else:
        built = faiss.IndexFlatIP(d)
    for start in range(0, n, chunk):
        built.add(np.ascontiguousarray(gallery[start:start + chunk]))
    return Index(spec, n, faiss_index=built)


def as_index(gallery: np.ndarray, index: str | IndexSpec | Index) -> Index:
    """``index`` if it is already built (for ``gallery``: it must hold as many items), else ``gallery`` indexed as
    ``index`` says."""
    if not isinstance(index, Index):
        return build_index(gallery, index)
    if index.size != len(gallery):
        raise ValueError(f"the index holds {index.size} items but the gallery {len(gallery)}: build it from this "
                         "gallery")
    return index


def search_index(index: Index, queries: np.ndarray, k: int, *, chunk: int = QUERY_CHUNK, exclude_self: bool = False,
                 query_offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest gallery items of each query: ``(similarities [Q, k], indices [Q, k])``, best first.

    With ``exclude_self``, query ``i`` is gallery item ``query_offset + i`` and is left out of its own neighbours
    (leave-one-out, searching a set against itself in chunks)."""
    queries = _matrix(queries, "queries")
    if index.faiss_index is None:
        assert index.gallery is not None
        return search_torch(queries, index.gallery, k, chunk=chunk, exclude_self=exclude_self,
                            query_offset=query_offset)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if index.spec.method == "hnsw":
        index.faiss_index.hnsw.efSearch = index.spec.ef_search or max(64, 2 * (k + exclude_self))
    sims, idx = [], []
    for start in range(0, len(queries), chunk):
        s, i = index.faiss_index.search(np.ascontiguousarray(queries[start:start + chunk]), k + exclude_self)
        if exclude_self:
            s, i = _drop_self(s, i, query_offset + start, k)
        sims.append(s)
        idx.append(i)
    return _tidy(_stack(sims, k, np.float32), _stack(idx, k, np.int64))


def search(queries: np.ndarray, gallery: np.ndarray, k: int, *, chunk: int = QUERY_CHUNK,
           index: str | IndexSpec | Index = "exact", exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest gallery items of each query by inner product: ``(similarities [Q, k], indices [Q, k])``.

    ``index`` is ``"exact"`` (faiss ``IndexFlatIP``), ``"ivf"`` or ``"hnsw"`` (approximate, for galleries past
    about 1M), an :class:`IndexSpec`, or an :class:`Index` of ``gallery`` already built (:func:`build_index`: an
    approximate index is trained once for several searches). ``exclude_self`` is for leave-one-out: ``queries``
    is ``gallery`` and each query's own row is dropped. Falls back to :func:`search_torch` (exact) when faiss is
    not installed.

    >>> sims, idx = search(l2_normalize(q), l2_normalize(g), k=5)
    """
    return search_index(as_index(gallery, index), queries, k, chunk=chunk, exclude_self=exclude_self)


def search_torch(queries: np.ndarray, gallery: np.ndarray, k: int, *, chunk: int = QUERY_CHUNK,
                 gallery_chunk: int = GALLERY_CHUNK, exclude_self: bool = False, query_offset: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Exact search as chunked matmul + top-k in PyTorch, with the same output and conventions as :func:`search`."""
    import torch

    queries, gallery = _matrix(queries, "queries"), _matrix(gallery, "gallery")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    g = torch.from_numpy(gallery)
    sims, idx = [], []
    for start in range(0, len(queries), chunk):
        q = torch.from_numpy(queries[start:start + chunk])
        best_s = torch.full((len(q), 0), -math.inf)
        best_i = torch.zeros((len(q), 0), dtype=torch.int64)
        for g_start in range(0, len(g), gallery_chunk):
            block = q @ g[g_start:g_start + gallery_chunk].T
            if exclude_self:
                own = torch.arange(len(q)) + query_offset + start - g_start
                hit = (own >= 0) & (own < block.shape[1])
                block[hit.nonzero()[:, 0], own[hit]] = -math.inf
            s, i = block.topk(min(k, block.shape[1]), dim=1)
            best_s, order = torch.cat([best_s, s], 1).topk(min(k, best_s.shape[1] + s.shape[1]), dim=1)
            best_i = torch.cat([best_i, i + g_start], 1).gather(1, order)
        sims.append(best_s.numpy())
        idx.append(best_i.numpy())
    s_all, i_all = _stack(sims, k, np.float32), _stack(idx, k, np.int64)
    if exclude_self:  # a masked self (or a set of one) may still fill a slot when the gallery is smaller than k
        i_all[np.isneginf(s_all)] = -1
    return _tidy(s_all, i_all)


# ---------------------------------------------------------------------------------------------------- prototypes


def class_prototypes(emb: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class mean embedding, L2-normalised: ``(prototypes [C, D], present [C])``. Classes without a sample
    (records labelled ``NULL`` are ignored) have a NaN row and ``present`` False."""
    emb, labels = _matrix(emb, "embeddings"), np.asarray(labels)
    known = labels != NULL
    sums = np.zeros((num_classes, emb.shape[1]), dtype=np.float64)
    np.add.at(sums, labels[known], emb[known])
    present = np.bincount(labels[known], minlength=num_classes)[:num_classes] > 0
    protos = l2_normalize(sums)
    protos[~present] = np.nan
    return protos, present


def nearest_prototype(queries: np.ndarray, prototypes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class of the most similar prototype and that similarity: ``(labels [Q], similarities [Q])``. NaN
    prototypes are never chosen; equal similarities go to the lower class id; no prototype at all gives ``NULL``."""
    queries = _matrix(queries, "queries")
    sims = queries @ np.nan_to_num(prototypes, nan=0.0).T
    sims[:, np.isnan(prototypes).any(1)] = -np.inf
    if sims.shape[1] == 0:
        return np.full(len(queries), NULL, dtype=np.int64), np.full(len(queries), -np.inf, dtype=np.float32)
    best = sims.argmax(1)
    score = sims[np.arange(len(queries)), best]
    return np.where(np.isfinite(score), best, NULL).astype(np.int64), score.astype(np.float32)


def knn_vote(neighbour_labels: np.ndarray, similarities: np.ndarray, temperature: float | None = 0.07
             ) -> tuple[np.ndarray, np.ndarray]:
    """Weighted k-NN vote over each row of neighbours: ``(labels [Q], share [Q])``, ``share`` being the winner's
    fraction of the total weight.

    Weights are ``exp(sim / temperature)`` (DINO's k-NN classifier), or the similarity clipped at 0 when
    ``temperature`` is None. Neighbours labelled ``NULL`` (unknown at this rank, or missing) do not vote. When
    classes tie, the one of the nearer neighbour wins; a row with no voter gives ``NULL`` and share 0."""
    labels = np.asarray(neighbour_labels)
    sims = np.asarray(similarities, dtype=np.float64)
    valid = (labels != NULL) & np.isfinite(sims)
    if labels.shape[1] == 0:
        return np.full(len(labels), NULL, dtype=np.int64), np.zeros(len(labels))
    if temperature is None:
        weights = np.clip(sims, 0.0, None)
    else:  # shifting by the row's best similarity keeps exp finite and changes no ratio
        top = np.max(np.where(valid, sims, -np.inf), axis=1, keepdims=True)
        weights = np.exp((sims - np.where(np.isfinite(top), top, 0.0)) / temperature)
    weights = np.where(valid, weights, 0.0)
    votes = np.empty_like(weights)
    for start in range(0, len(labels), 16384):  # bounds the [rows, K, K] agreement array
        part = slice(start, start + 16384)
        same = labels[part, :, None] == labels[part, None, :]  # neighbours j and j' agree
        votes[part] = np.einsum("qjk,qk->qj", same, weights[part])
    votes = np.where(valid, votes, -1.0)
    best = votes.argmax(1)  # the first maximum: the nearest neighbour of a tied class
    rows = np.arange(len(labels))
    total = weights.sum(1)
    share = np.divide(votes[rows, best], total, out=np.zeros(len(labels)), where=total > 0)
    ok = valid.any(1)
    return np.where(ok, labels[rows, best], NULL).astype(np.int64), np.where(ok, share, 0.0)


# ---------------------------------------------------------------------------------------------------- helpers


def _matrix(x: np.ndarray, what: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{what} must be a [rows, dim] matrix, got shape {x.shape}")
    return x


def _drop_self(sims: np.ndarray, idx: np.ndarray, offset: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    own = idx == (np.arange(len(idx)) + offset)[:, None]
    # keep the first k entries that are not the query itself (the last one goes when self was not found)
    order = np.argsort(own, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, 1), np.take_along_axis(idx, order, 1)


def _stack(parts: list[np.ndarray], k: int, dtype: type) -> np.ndarray:
    fill = -np.inf if dtype is np.float32 else -1
    out = [np.concatenate([p, np.full((len(p), k - p.shape[1]), fill, dtype=dtype)], 1) for p in parts]
    return np.concatenate(out).astype(dtype, copy=False) if out else np.zeros((0, k), dtype=dtype)


def _tidy(sims: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sims = np.where(idx < 0, -np.inf, sims).astype(np.float32)
    idx = np.where(np.isneginf(sims), -1, idx)
    order = np.lexsort((np.where(idx < 0, np.iinfo(np.int64).max, idx), -sims), axis=1)
    return np.take_along_axis(sims, order, 1), np.take_along_axis(idx, order, 1)
