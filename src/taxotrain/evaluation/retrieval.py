"""Retrieval metrics per rank, scored from nearest-neighbour indices (so the faiss and torch searches are
interchangeable): precision@1, recall@5, MAP@R, weighted k-NN top-1; precision@1 within each top-level group;
leave-one-out precision@1 and SimpleShot few-shot accuracy for held-out classes; known-vs-unknown AUROC.

Neighbours are ``[Q, K]`` gallery indices, best first, ``-1`` where missing (as :mod:`taxotrain.inference.search`
returns them). Labels are integer class ids per rank with ``NULL`` for unknown. At each rank:

* a query whose label is ``NULL`` is skipped, and so is a query with no relevant gallery item (``R = 0``: its class
  is absent from the gallery, or, leave-one-out, it is the class's only record), since nothing could be retrieved;
* a gallery item labelled ``NULL`` is never relevant, and does not vote in the k-NN.

MAP@R (Musgrave et al. 2020, "A Metric Learning Reality Check"): ``R`` = the number of gallery items sharing the
query's label, ``MAP@R = mean_q (1/R) sum_{i<=R} P(i) rel(i)``. It needs ``R`` neighbours per query; a report caps
the search at ``max_r`` neighbours, and a query with ``R > max_r`` (or more than the neighbours given) is scored on
its first ``max_r`` only, with ``R`` taken as ``max_r``: a perfect embedding still scores 1 (pytorch-metric-learning
keeps the full ``R`` instead, a lower bound). The report counts those queries in ``capped``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from taxotrain.inference.search import (
    QUERY_CHUNK,
    Index,
    IndexSpec,
    as_index,
    build_index,
    knn_vote,
    l2_normalize,
    search,
    search_index,
)
from taxotrain.taxonomy import NULL

RECALL_K = 5
KNN_K = 20
KNN_TEMPERATURE = 0.07  # DINO's k-NN classifier
MAX_R = 1000
METRICS = ("precision_at_1", "recall_at_5", "map_at_r", "knn_top1")


# ---------------------------------------------------------------------------------------------------- one rank


def relevant_counts(query_labels: np.ndarray, gallery_labels: np.ndarray, self_in_gallery: bool = False
                    ) -> np.ndarray:
    """``R`` per query: gallery items with its label (less the query itself when it is in the gallery); 0 for a
    ``NULL`` query."""
    q, g = np.asarray(query_labels), np.asarray(gallery_labels)
    counts = np.bincount(g[g != NULL], minlength=int(max(q.max(initial=0), g.max(initial=0))) + 1)
    r = np.where(q != NULL, counts[np.maximum(q, 0)] - int(self_in_gallery), 0)
    return np.maximum(r, 0)


def relevance(neighbours: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray) -> np.ndarray:
    """``[Q, K]`` True where a neighbour exists and shares the query's (known) label."""
    idx, q, g = np.asarray(neighbours), np.asarray(query_labels), np.asarray(gallery_labels)
    labels = np.where(idx >= 0, g[np.maximum(idx, 0)], NULL)
    return (labels == q[:, None]) & (q != NULL)[:, None]


def per_query(neighbours: np.ndarray, similarities: np.ndarray, query_labels: np.ndarray,
              gallery_labels: np.ndarray, *, k_knn: int = KNN_K, temperature: float | None = KNN_TEMPERATURE,
              self_in_gallery: bool = False, relevant: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-query outcomes at one rank: the four metrics (NaN for a skipped query), and ``capped`` (True where
    MAP@R had fewer neighbours than ``R``). ``relevant``: the queries' ``R`` when already counted."""
    q, g = np.asarray(query_labels), np.asarray(gallery_labels)
    r = relevant_counts(q, g, self_in_gallery) if relevant is None else relevant
    scored = r > 0
    rel = relevance(neighbours, q, g)
    k = rel.shape[1]
    r_used = np.minimum(r, k)
    hits = np.cumsum(rel, axis=1)
    within = np.arange(k)[None, :] < r_used[:, None]
    ap = (hits / np.arange(1, k + 1) * rel * within).sum(1) / np.maximum(r_used, 1)
    nb_labels = np.where(neighbours >= 0, g[np.maximum(neighbours, 0)], NULL)[:, :k_knn]
    voted, _ = knn_vote(nb_labels, np.asarray(similarities)[:, :k_knn], temperature)
    out = {"precision_at_1": rel[:, 0] if k else np.zeros(len(q), dtype=bool),
           "recall_at_5": rel[:, :RECALL_K].any(1), "map_at_r": ap, "knn_top1": voted == q}
    result = {name: np.where(scored, v.astype(np.float64), np.nan) for name, v in out.items()}
    result["capped"] = scored & (r > k)
    return result


def _mean(values: np.ndarray) -> float | None:
    ok = ~np.isnan(values)
    return float(values[ok].mean()) if ok.any() else None


def precision_at_1(neighbours: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray,
                   self_in_gallery: bool = False) -> float | None:
    """Fraction of scored queries whose nearest neighbour shares their label (None if no query is scored)."""
    return _mean(_one(neighbours, query_labels, gallery_labels, self_in_gallery)["precision_at_1"])


def precision_at_1_hits(neighbours: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray,
                        self_in_gallery: bool = False) -> np.ndarray:
    """Per query: 1.0 when its nearest neighbour shares its label, 0.0 when not, NaN when it is not scored."""
    return _one(neighbours, query_labels, gallery_labels, self_in_gallery)["precision_at_1"]


def recall_at_k(neighbours: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray, k: int = RECALL_K,
                self_in_gallery: bool = False) -> float | None:
    """Fraction of scored queries with at least one of their ``k`` nearest sharing their label."""
    rel = relevance(np.asarray(neighbours)[:, :k], query_labels, gallery_labels)
    scored = relevant_counts(query_labels, gallery_labels, self_in_gallery) > 0
    return _mean(np.where(scored, rel.any(1), np.nan))


def map_at_r(neighbours: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray,
             self_in_gallery: bool = False) -> float | None:
    """Mean average precision at R (see the module docstring; ``R`` capped at the number of neighbours given)."""
    return _mean(_one(neighbours, query_labels, gallery_labels, self_in_gallery)["map_at_r"])


def knn_top1(neighbours: np.ndarray, similarities: np.ndarray, query_labels: np.ndarray,
             gallery_labels: np.ndarray, k: int = KNN_K, temperature: float | None = KNN_TEMPERATURE,
             self_in_gallery: bool = False) -> float | None:
    """Top-1 accuracy of the weighted vote of the ``k`` nearest (weights ``exp(sim / temperature)``, or the
    similarity when ``temperature`` is None; see :func:`~taxotrain.inference.search.knn_vote`)."""
    return _mean(per_query(neighbours, similarities, query_labels, gallery_labels, k_knn=k,
                           temperature=temperature, self_in_gallery=self_in_gallery)["knn_top1"])


def _one(neighbours: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray,
         self_in_gallery: bool) -> dict[str, np.ndarray]:
    sims = np.zeros(np.shape(neighbours), dtype=np.float32)
    return per_query(neighbours, sims, query_labels, gallery_labels, self_in_gallery=self_in_gallery)


# ---------------------------------------------------------------------------------------------------- all ranks


def retrieval_metrics(neighbours: np.ndarray, similarities: np.ndarray, query_labels: dict[str, np.ndarray],
                      gallery_labels: dict[str, np.ndarray], *, k_knn: int = KNN_K,
                      temperature: float | None = KNN_TEMPERATURE, self_in_gallery: bool = False
                      ) -> dict[str, dict[str, Any]]:
    """``{rank: {"precision_at_1", "recall_at_5", "map_at_r", "knn_top1", "queries", "capped"}}`` from one set of
    neighbours shared by every rank (``queries``: the scored queries; ``capped``: those MAP@R scored on fewer than
    ``R`` neighbours)."""
    parts = {rank: per_query(neighbours, similarities, query_labels[rank], gallery_labels[rank], k_knn=k_knn,
                             temperature=temperature, self_in_gallery=self_in_gallery) for rank in query_labels}
    return {rank: _summary([p]) for rank, p in parts.items()}


def retrieval_report(query_emb: np.ndarray, query_labels: dict[str, np.ndarray], gallery_emb: np.ndarray,
                     gallery_labels: dict[str, np.ndarray], k_knn: int = KNN_K, *, max_r: int = MAX_R,
                     temperature: float | None = KNN_TEMPERATURE, index: str | IndexSpec | Index = "exact",
                     exclude_self: bool = False, chunk: int = QUERY_CHUNK) -> dict[str, dict[str, Any]]:
    """Retrieval metrics per rank (see :func:`retrieval_metrics`) of queries against a gallery, from one index and
    one search of ``max(k_knn, 5, min(largest R, max_r))`` neighbours, run ``chunk`` queries at a time so memory
    stays at ``chunk x k``. ``exclude_self``: the queries are the gallery (leave-one-out). ``index`` may be an
    :class:`Index` of the normalised gallery already built."""
    relevant = {rank: relevant_counts(query_labels[rank], gallery_labels[rank], exclude_self) for rank in query_labels}
    k = max(k_knn, RECALL_K, min(max((int(r.max(initial=0)) for r in relevant.values()), default=0), max_r))
    built = as_index(gallery_emb, index) if isinstance(index, Index) else build_index(l2_normalize(gallery_emb), index)
    queries = l2_normalize(query_emb)
    parts: dict[str, list[dict[str, np.ndarray]]] = {rank: [] for rank in query_labels}
    for start in range(0, len(queries), chunk):
        sims, idx = search_index(built, queries[start:start + chunk], k, chunk=chunk, exclude_self=exclude_self,
                                 query_offset=start)
        for rank in query_labels:
            part = slice(start, start + chunk)
            parts[rank].append(per_query(idx, sims, query_labels[rank][part], gallery_labels[rank], k_knn=k_knn,
                                         temperature=temperature, relevant=relevant[rank][part]))
    return {rank: _summary(p) for rank, p in parts.items()}


def _summary(parts: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    joined = {name: np.concatenate([p[name] for p in parts]) for name in (*METRICS, "capped")}
    out: dict[str, Any] = {name: _mean(joined[name]) for name in METRICS}
    out["queries"] = int((~np.isnan(joined["precision_at_1"])).sum())
    out["capped"] = int(joined["capped"].sum())
    return out


def precision_at_1_by_group(neighbours: np.ndarray, query_labels: dict[str, np.ndarray],
                            gallery_labels: dict[str, np.ndarray], group_names: Sequence[str] | None = None,
                            self_in_gallery: bool = False) -> dict[Hashable, dict[str, Any]]:
    """The NFHM-style table: precision@1 per rank within each top-level group (the query's label at the first,
    coarsest rank) ``{group: {rank: p@1 or None, "queries": n}}``, keyed by name when ``group_names`` is given, else
    by class id. Queries unknown at the top rank belong to no group; ``queries`` counts the group's queries."""
    ranks = list(query_labels)
    top = np.asarray(query_labels[ranks[0]])
    hits = {rank: precision_at_1_hits(neighbours, query_labels[rank], gallery_labels[rank], self_in_gallery)
            for rank in ranks}
    table: dict[Hashable, dict[str, Any]] = {}
    for group in np.unique(top[top != NULL]):
        members = top == group
        row: dict[str, Any] = {rank: _mean(hits[rank][members]) for rank in ranks}
        row["queries"] = int(members.sum())
        table[group_names[group] if group_names is not None else int(group)] = row
    return table


# ---------------------------------------------------------------------------------------------------- held-out classes


def leave_one_out_precision_at_1(emb: np.ndarray, labels: dict[str, np.ndarray], *,
                                 index: str | IndexSpec = "exact") -> dict[str, dict[str, Any]]:
    """Precision@1 per rank of every record against all the others (one search, self excluded):
    ``{rank: {"precision_at_1", "queries"}}``. A record whose class has no other record is not scored."""
    sims, idx = search(l2_normalize(emb), l2_normalize(emb), 1, index=index, exclude_self=True)
    out = {}
    for rank, lab in labels.items():
        hit = _one(idx, lab, lab, True)["precision_at_1"]
        out[rank] = {"precision_at_1": _mean(hit), "queries": int((~np.isnan(hit)).sum())}
    return out


def simpleshot_features(emb: np.ndarray, train_mean: np.ndarray) -> np.ndarray:
    """SimpleShot's CL2N: centre on the train-set mean, then L2-normalise."""
    return l2_normalize(np.asarray(emb, dtype=np.float32) - np.asarray(train_mean, dtype=np.float32)[None, :])


def fewshot_accuracy(train_mean: np.ndarray, emb: np.ndarray, labels: np.ndarray, shots: int, draws: int = 5,
                     seed: int = 0) -> dict[str, Any]:
    """SimpleShot (Wang et al. 2019) few-shot accuracy at one rank: ``{"accuracy", "std", "classes",
    "skipped_classes", "queries"}``.

    Features are centred on the TRAIN-set mean and L2-normalised; each draw picks ``shots`` reference records per
    class at random, a class's prototype is their mean, and every other record is classified by the nearest
    prototype in Euclidean distance (SimpleShot's rule). ``accuracy`` and ``std`` are over ``draws`` draws seeded
    from ``seed``. A class with ``shots`` records or fewer is skipped (no record would be left to classify, and
    fewer shots would score another task), as are ``NULL`` labels; fewer than two classes left gives None."""
    labels = np.asarray(labels)
    counts = np.bincount(labels[labels != NULL], minlength=1)
    usable = np.flatnonzero(counts > shots)
    skipped = int((counts > 0).sum()) - len(usable)
    keep = np.isin(labels, usable) & (labels != NULL)
    if len(usable) < 2 or shots < 1:
        return {"accuracy": None, "std": None, "classes": len(usable), "skipped_classes": skipped, "queries": 0}
    feats, lab = simpleshot_features(emb, train_mean)[keep], np.searchsorted(usable, labels[keep])
    rng = np.random.default_rng(seed)
    scores = [_fewshot_draw(feats, lab, len(usable), shots, rng) for _ in range(draws)]
    return {"accuracy": float(np.mean(scores)), "std": float(np.std(scores)), "classes": len(usable),
            "skipped_classes": skipped, "queries": int(len(lab) - shots * len(usable))}


def _fewshot_draw(feats: np.ndarray, labels: np.ndarray, num_classes: int, shots: int,
                  rng: np.random.Generator) -> float:
    order = np.lexsort((rng.random(len(labels)), labels))  # records grouped by class, shuffled within it
    starts = np.searchsorted(labels[order], np.arange(num_classes))
    place = np.empty(len(labels), dtype=np.int64)
    place[order] = np.arange(len(labels)) - np.repeat(starts, np.bincount(labels, minlength=num_classes))
    support = place < shots
    protos = np.zeros((num_classes, feats.shape[1]), dtype=np.float64)
    np.add.at(protos, labels[support], feats[support])
    protos /= shots
    queries = feats[~support].astype(np.float64)
    # argmin |q - c|^2 = argmax (2 q.c - |c|^2)
    predicted = (2 * queries @ protos.T - (protos ** 2).sum(1)[None, :]).argmax(1)
    return float((predicted == labels[~support]).mean())


# ---------------------------------------------------------------------------------------------------- open set


def known_vs_unknown_auroc(scores_known: np.ndarray, scores_unknown: np.ndarray) -> float | None:
    """Area under the ROC curve of telling known-class records (positives) from unknown ones by a score that is
    higher for known (e.g. the top similarity): 1 = perfectly apart, 0.5 = chance. None if either side is empty."""
    from sklearn.metrics import roc_auc_score

    known, unknown = np.asarray(scores_known, dtype=np.float64), np.asarray(scores_unknown, dtype=np.float64)
    if len(known) == 0 or len(unknown) == 0:
        return None
    y = np.concatenate([np.ones(len(known)), np.zeros(len(unknown))])
    return float(roc_auc_score(y, np.concatenate([known, unknown])))
