"""What evaluate reports of a run's embeddings (every task whose ``evaluates_retrieval``: the image tasks, classifier
or embedding): retrieval of the evaluated split against the train split, per rank and per top-level group, and, when
the store has held-out classes (``prepare --holdout-classes``), few-shot and open-set figures on them.

Embeddings are the run's model on the evaluation transforms (averaged over the test-time views ``tta`` names, the
same for every split), L2-normalised, so similarities are cosines. ``metrics.json`` gets:

- ``retrieval[rank]``: ``precision_at_1``, ``recall_at_5``, ``map_at_r`` (Musgrave et al. 2020), ``knn_top1`` (the
  weighted vote of the ``k`` nearest, weights ``exp(cos / 0.07)``), ``queries`` (scored queries), ``capped``;
- ``retrieval_by_group[group][rank]``: precision@1 of the queries of each top-level group, with their count;
- ``retrieval_setup``: the splits, gallery size, ``k``, the embedding width, the search ``index`` and the views
  (``tta``);
- ``heldout[rank]`` (held-out classes only): ``loo_precision_at_1`` (each held-out record against the other
  held-out records), ``fewshot_1`` / ``fewshot_5`` (SimpleShot: features centred on the TRAIN embeddings' mean and
  L2-normalised, nearest class mean of 1 or 5 random references per class, mean of 5 seeded draws, with ``_std``);
- ``openset``: known (the evaluated split) against held-out records by their largest cosine similarity to the train
  split: ``auroc``; the threshold chosen on val for ``target_precision`` of the nearest neighbour's label at the
  finest rank; and at that threshold the open-set ``accuracy`` (a known record counts as right when it is accepted
  and its nearest neighbour's label is right, a held-out one when it is rejected), ``known_accepted`` and
  ``unknown_rejected``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from taxotrain.data.store import HELDOUT, Store
from taxotrain.evaluation.retrieval import (
    KNN_K,
    KNN_TEMPERATURE,
    fewshot_accuracy,
    known_vs_unknown_auroc,
    leave_one_out_precision_at_1,
    precision_at_1_by_group,
    precision_at_1_hits,
    retrieval_report,
)
from taxotrain.inference.embed import embed_split
from taxotrain.inference.openset import choose_threshold
from taxotrain.inference.search import Index, build_index, l2_normalize, search
from taxotrain.run import LoadedRun
from taxotrain.taxonomy import NULL

FEWSHOT_DRAWS = 5
FEWSHOT_SHOTS = (1, 5)


def by_rank(labels: np.ndarray, ranks: list[str]) -> dict[str, np.ndarray]:
    """Label columns ``[N, R]`` as ``{rank: [N]}``."""
    return {rank: labels[:, r] for r, rank in enumerate(ranks)}


def evaluate_embeddings(run: LoadedRun, store: Store, split: str, knn_k: int = KNN_K, target_precision: float = 0.9,
                        batch_size: int | None = None, workers: int | None = None, index: str = "exact",
                        tta: str = "none") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The ``metrics.json`` entries of the module docstring for ``split`` of ``store`` (queries) against its train
    split (gallery), and per rank each query's precision@1 (1/0, NaN when unscored) in the split's record order, for
    ``--compare``'s intervals. ``split == "train"`` searches the train split against itself, each record left out of
    its own neighbours. ``index``: the faiss index every search uses (``exact``, or the approximate ``ivf`` or
    ``hnsw``, for train splits of millions; ``retrieval_setup`` -> ``index`` says which). ``tta`` (resolved): every
    embedding, gallery and queries alike, averaged over these test-time views (``retrieval_setup`` -> ``tta``)."""
    ranks = list(run.taxonomy.ranks)
    g_emb, g_lab, _ = embed_split(run, store, "train", batch_size, workers, tta)
    own = split == "train"
    q_emb, q_lab, _ = (g_emb, g_lab, None) if own else embed_split(run, store, split, batch_size, workers, tta)
    gallery, queries = l2_normalize(g_emb), l2_normalize(q_emb)
    built = build_index(gallery, index)  # one index of the train split for every search against it
    q_ranks, g_ranks = by_rank(q_lab, ranks), by_rank(g_lab, ranks)
    out: dict[str, Any] = {
        "retrieval": retrieval_report(queries, q_ranks, gallery, g_ranks, k_knn=knn_k, exclude_self=own, index=built),
        "retrieval_setup": {"queries": split, "gallery": "train", "gallery_records": int(len(gallery)),
                            "knn_k": knn_k, "knn_temperature": KNN_TEMPERATURE, "embedding_dim": int(gallery.shape[1]),
                            "index": index, "tta": tta},
    }
    q_sims, q_idx = search(queries, gallery, 1, exclude_self=own, index=built)
    out["retrieval_by_group"] = precision_at_1_by_group(q_idx, q_ranks, g_ranks, run.taxonomy.names[0],
                                                        self_in_gallery=own)
    # queries come in the split's record order (an unshuffled loader), as the predictions file keeps its records
    hits = {rank: precision_at_1_hits(q_idx, q_ranks[rank], g_ranks[rank], own) for rank in ranks}
    held = store.splits.get(HELDOUT)
    if held is None or len(held) == 0:
        return out, hits
    h_emb, h_lab, _ = embed_split(run, store, HELDOUT, batch_size, workers, tta)
    out["heldout"] = heldout_figures(g_emb, h_emb, by_rank(h_lab, ranks), run.config.run.seed, index=index)
    out["retrieval_setup"].update(heldout_records=int(len(h_emb)), fewshot_draws=FEWSHOT_DRAWS,
                                  fewshot_seed=run.config.run.seed)
    val = None
    if len(store.splits["val"]):
        v_emb, v_lab, _ = (q_emb, q_lab, None) if split == "val" else embed_split(run, store, "val", batch_size,
                                                                                   workers, tta)
        val = (l2_normalize(v_emb), v_lab[:, -1])
    h_sims, _ = search(l2_normalize(h_emb), gallery, 1, index=built)
    out["openset"] = openset_figures(q_sims[:, 0], g_lab[q_idx[:, 0], -1], q_lab[:, -1], h_sims[:, 0], gallery,
                                     g_lab[:, -1], val, target_precision, index=built)
    out["openset"]["rank"] = ranks[-1]
    return out, hits


def heldout_figures(train_emb: np.ndarray, emb: np.ndarray, labels: dict[str, np.ndarray],
                    seed: int, index: str = "exact") -> dict[str, dict[str, Any]]:
    """Per rank: leave-one-out precision@1 among the held-out records and SimpleShot 1- and 5-shot accuracy
    (centred on the mean of the train embeddings ``train_emb``, as the model gives them)."""
    loo = leave_one_out_precision_at_1(emb, labels, index=index)
    mean = np.asarray(train_emb, dtype=np.float64).mean(0)
    out: dict[str, dict[str, Any]] = {}
    for rank, lab in labels.items():
        row: dict[str, Any] = {"loo_precision_at_1": loo[rank]["precision_at_1"], "loo_queries": loo[rank]["queries"],
                               "records": int((lab != NULL).sum()), "classes": int(len(np.unique(lab[lab != NULL])))}
        for shots in FEWSHOT_SHOTS:
            fs = fewshot_accuracy(mean, emb, lab, shots, draws=FEWSHOT_DRAWS, seed=seed)
            row[f"fewshot_{shots}"], row[f"fewshot_{shots}_std"] = fs["accuracy"], fs["std"]
            row[f"fewshot_{shots}_classes"] = fs["classes"]
        out[rank] = row
    return out


def openset_figures(known_sims: np.ndarray, known_nn_labels: np.ndarray, known_labels: np.ndarray,
                    unknown_sims: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray,
                    val: tuple[np.ndarray, np.ndarray] | None, target_precision: float,
                    index: str | Index = "exact") -> dict[str, Any]:
    """Known against unknown records by their top similarity to the gallery: the AUROC, and the threshold chosen on
    ``val`` (normalised embeddings, labels at the rank) with the open-set accuracy it gives (module docstring)."""
    scored = known_labels != NULL
    out: dict[str, Any] = {"score": "largest cosine similarity to the train split",
                           "auroc": known_vs_unknown_auroc(known_sims, unknown_sims),
                           "known": int(len(known_sims)), "unknown": int(len(unknown_sims)), "threshold": None,
                           "chosen_on": None, "target_precision": target_precision, "reached": None,
                           "accuracy": None, "known_accepted": None, "unknown_rejected": None}
    if val is None:
        return out
    v_emb, v_labels = val
    v_sims, v_idx = search(v_emb, gallery, 1, index=index)
    v_known = v_labels != NULL
    choice = choose_threshold(v_sims[v_known, 0], gallery_labels[v_idx[v_known, 0]] == v_labels[v_known],
                              target_precision)
    t = choice.threshold
    accepted, rejected = known_sims >= t, unknown_sims < t
    right = accepted & (known_nn_labels == known_labels) & scored
    total = int(scored.sum()) + len(unknown_sims)
    out.update(threshold=t if np.isfinite(t) else None, chosen_on="val", reached=choice.reached,
               accuracy=float((right.sum() + rejected.sum()) / total) if total else None,
               known_accepted=float(accepted.mean()) if len(accepted) else None,
               unknown_rejected=float(rejected.mean()) if len(rejected) else None)
    return out
