"""Retrieval metrics on hand-computed cases, MAP@R by its definition, NULL labels, weighted k-NN, leave-one-out,
SimpleShot few-shot accuracy and known-vs-unknown AUROC."""

from __future__ import annotations

import numpy as np
import pytest

from taxotrain.evaluation import retrieval
from taxotrain.evaluation.retrieval import (
    fewshot_accuracy,
    knn_top1,
    known_vs_unknown_auroc,
    leave_one_out_precision_at_1,
    map_at_r,
    precision_at_1,
    precision_at_1_by_group,
    recall_at_k,
    relevance,
    retrieval_metrics,
    retrieval_report,
    simpleshot_features,
)
from taxotrain.inference.search import l2_normalize, search
from taxotrain.taxonomy import NULL

pytest.importorskip("faiss")

# 6 gallery items, 2 ranks; item 5 is unknown at species
GALLERY = {"genus": np.array([0, 0, 1, 1, 1, 1]), "species": np.array([0, 1, 2, 2, 3, NULL])}
# 4 queries: q2 is unknown at species, q3's species (4) is not in the gallery
QUERIES = {"genus": np.array([0, 1, 1, 0]), "species": np.array([0, 2, NULL, 4])}
NEIGHBOURS = np.array([
    [1, 0, 2, 3],  # genus 0 0 1 1 (R=2): rel 1 1 0 0, AP 1   | species 1 0 2 2 (R=1): rel 0 1 0 0, AP 0
    [2, 4, 5, 3],  # genus 1 1 1 1 (R=4): rel 1 1 1 1, AP 1   | species 2 3 - 2 (R=2): rel 1 0 0 1, AP 1/2
    [3, 0, 4, 5],  # genus 1 0 1 1 (R=4): rel 1 0 1 1, AP (1 + 2/3 + 3/4) / 4 | species: skipped (NULL)
    [2, 0, 1, 5],  # genus 1 0 0 1 (R=2): rel 0 1 0 0, AP (1/2) / 2 | species: skipped (R=0)
])
SIMS = np.tile(np.array([0.9, 0.8, 0.7, 0.6], dtype=np.float32), (4, 1))


def test_hand_computed_precision_recall_and_map_per_rank() -> None:
    g, s = (QUERIES["genus"], GALLERY["genus"]), (QUERIES["species"], GALLERY["species"])
    assert precision_at_1(NEIGHBOURS, *g) == pytest.approx(3 / 4)
    assert precision_at_1(NEIGHBOURS, *s) == pytest.approx(1 / 2)
    assert recall_at_k(NEIGHBOURS, *g, k=1) == pytest.approx(3 / 4)
    assert recall_at_k(NEIGHBOURS, *g, k=2) == pytest.approx(1.0)
    assert recall_at_k(NEIGHBOURS, *s, k=1) == pytest.approx(1 / 2)
    assert recall_at_k(NEIGHBOURS, *s, k=2) == pytest.approx(1.0)
    assert map_at_r(NEIGHBOURS, *g) == pytest.approx((1 + 1 + (1 + 2 / 3 + 3 / 4) / 4 + 0.25) / 4)
    assert map_at_r(NEIGHBOURS, *s) == pytest.approx((0 + 0.5) / 2)


def test_retrieval_metrics_reports_every_rank_from_the_same_neighbours() -> None:
    report = retrieval_metrics(NEIGHBOURS, SIMS, QUERIES, GALLERY, k_knn=1)
    assert report["genus"]["queries"] == 4 and report["species"]["queries"] == 2
    assert report["genus"]["precision_at_1"] == pytest.approx(3 / 4)
    assert report["species"]["recall_at_5"] == pytest.approx(1.0)
    assert report["species"]["map_at_r"] == pytest.approx(0.25)
    assert report["genus"]["knn_top1"] == pytest.approx(3 / 4)  # k=1: the nearest neighbour's label
    # genus: q1 has R=4 and 4 neighbours; none has more relevant items than neighbours
    assert report["genus"]["capped"] == 0


def test_null_labels_are_skipped_and_never_relevant() -> None:
    # a NULL query next to a NULL gallery item: not a match, and the query is not scored at all
    assert not relevance(np.array([[5]]), np.array([NULL]), GALLERY["species"]).any()
    assert precision_at_1(np.array([[5]]), np.array([NULL]), GALLERY["species"]) is None
    # a known query whose nearest is unknown at the rank: a miss, not a hit
    assert precision_at_1(np.array([[5, 2]]), np.array([2]), GALLERY["species"]) == 0.0


def test_map_at_r_follows_the_papers_definition() -> None:
    # R = 3 for label 7; both queries find 2 of the 3 in their first R, but order matters:
    # [1, 1, 0] -> (1/1 + 2/2) / 3;  [0, 1, 1] -> (1/2 + 2/3) / 3
    gallery = np.array([7, 7, 7, 8, 8])
    assert map_at_r(np.array([[0, 1, 3, 2]]), np.array([7]), gallery) == pytest.approx(2 / 3)
    assert map_at_r(np.array([[3, 1, 2, 0]]), np.array([7]), gallery) == pytest.approx(7 / 18)
    # relevant items past position R do not count
    assert map_at_r(np.array([[3, 4, 0, 1, 2]]), np.array([7]), gallery) == pytest.approx(1 / 9)


def test_map_at_r_with_fewer_neighbours_than_r_scores_the_neighbours_given() -> None:
    gallery = np.array([7, 7, 7, 8])
    # R = 3 but 2 neighbours, both right: scored as MAP@2 (1.0), not the lower bound 2/3
    assert map_at_r(np.array([[0, 1]]), np.array([7]), gallery) == pytest.approx(1.0)
    report = retrieval_metrics(np.array([[0, 1]]), np.ones((1, 2)), {"s": np.array([7])}, {"s": gallery})
    assert report["s"]["capped"] == 1


def test_weighted_knn_differs_from_the_majority() -> None:
    gallery = np.array([0, 1, 1])
    neighbours, sims = np.array([[0, 1, 2]]), np.array([[0.9, 0.3, 0.3]])
    # weights by similarity: class 0 gets 0.9, class 1 gets 0.6; the plain majority would say 1
    assert knn_top1(neighbours, sims, np.array([0]), gallery, k=3, temperature=None) == 1.0
    assert knn_top1(neighbours, sims, np.array([1]), gallery, k=3, temperature=None) == 0.0
    # with k=1 only the nearest votes, with k=3 and near-equal similarities the majority does
    near = np.array([[0.9, 0.89, 0.89]])
    assert knn_top1(neighbours, near, np.array([1]), gallery, k=3, temperature=None) == 1.0
    assert knn_top1(neighbours, near, np.array([1]), gallery, k=1, temperature=None) == 0.0


def test_group_table_scores_each_top_level_group() -> None:
    table = precision_at_1_by_group(NEIGHBOURS, QUERIES, GALLERY, group_names=["Apidae", "Vespidae"])
    assert table == {"Apidae": {"genus": 0.5, "species": 0.0, "queries": 2},
                     "Vespidae": {"genus": 1.0, "species": 1.0, "queries": 2}}
    assert set(precision_at_1_by_group(NEIGHBOURS, QUERIES, GALLERY)) == {0, 1}


def _two_cluster_set(seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    centres = 3 * rng.normal(size=(6, 8))
    species = np.repeat(np.arange(6), 15)
    emb = l2_normalize(centres[species] + rng.normal(size=(90, 8)))
    labels = {"genus": species // 3, "species": np.where(species == 5, NULL, species)}
    return emb, labels


def test_report_matches_metrics_on_one_search_and_searches_once_per_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    emb, labels = _two_cluster_set()
    queries, gallery = emb[::3], np.delete(emb, np.s_[::3], axis=0)
    q_labels = {r: v[::3] for r, v in labels.items()}
    g_labels = {r: np.delete(v, np.s_[::3]) for r, v in labels.items()}
    calls = []
    real = retrieval.search_index
    monkeypatch.setattr(retrieval, "search_index", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    report = retrieval_report(queries, q_labels, gallery, g_labels, k_knn=7, chunk=8)
    assert len(calls) == 4  # 30 queries in chunks of 8: one search for both ranks
    sims, idx = search(queries, gallery, 30)  # largest R: 30 gallery items of one genus
    expected = retrieval_metrics(idx, sims, q_labels, g_labels, k_knn=7)
    assert report.keys() == expected.keys()
    for rank, row in expected.items():
        assert report[rank] == pytest.approx(row)
    assert report["species"]["queries"] == 25 and report["genus"]["capped"] == 0


def test_report_caps_map_at_r_at_max_r() -> None:
    emb, labels = _two_cluster_set()
    report = retrieval_report(emb, labels, emb, labels, k_knn=5, max_r=10, exclude_self=True)  # 10 neighbours
    assert report["genus"]["capped"] == 90  # R = 44 for every genus query
    assert report["species"]["capped"] == 75  # R = 14 for the 75 known species queries
    full = retrieval_report(emb, labels, emb, labels, k_knn=5, exclude_self=True)
    assert full["genus"]["capped"] == 0 and full["species"]["capped"] == 0
    assert full["genus"]["precision_at_1"] == report["genus"]["precision_at_1"]
    # capped: every query scored on its first 10 neighbours, as MAP@R over exactly those neighbours scores it
    _, idx = search(emb, emb, 10, exclude_self=True)
    capped = map_at_r(idx, labels["genus"], labels["genus"], self_in_gallery=True)
    assert report["genus"]["map_at_r"] == pytest.approx(capped)
    assert full["genus"]["map_at_r"] != pytest.approx(capped)


def test_leave_one_out_excludes_the_query_and_skips_lone_classes() -> None:
    angles = np.radians([0, 10, 25, 60, 90])
    emb = np.stack([np.cos(angles), np.sin(angles)], 1)
    # nearest other: 0->1, 1->0, 2->1, 3->4, 4->3; class 2 has a single record
    labels = {"order": np.zeros(5, dtype=np.int64), "genus": np.array([0, 0, 1, 1, 2])}
    out = leave_one_out_precision_at_1(emb, labels)
    assert out["order"] == {"precision_at_1": 1.0, "queries": 5}
    assert out["genus"] == {"precision_at_1": 0.5, "queries": 4}


def test_simpleshot_features_centre_on_the_train_mean_then_normalise() -> None:
    emb, mean = np.array([[4.0, 5.0], [1.0, 1.0]]), np.array([1.0, 1.0])
    np.testing.assert_allclose(simpleshot_features(emb, mean), [[0.6, 0.8], [0.0, 0.0]], atol=1e-6)


def test_fewshot_on_a_separable_set_is_perfect() -> None:
    rng = np.random.default_rng(1)
    centres = 5 * rng.normal(size=(4, 16))
    labels = np.repeat(np.arange(4), 10)
    emb = centres[labels] + 0.3 * rng.normal(size=(40, 16))
    for shots in (1, 5):
        out = fewshot_accuracy(emb.mean(0), emb, labels, shots)
        assert out["accuracy"] == 1.0 and out["std"] == 0.0
        assert out["classes"] == 4 and out["queries"] == 40 - 4 * shots


def test_fewshot_on_random_labels_is_near_chance_and_repeatable() -> None:
    rng = np.random.default_rng(2)
    emb, labels = rng.normal(size=(400, 64)), rng.integers(0, 5, 400)
    out = fewshot_accuracy(np.zeros(64), emb, labels, shots=5, draws=5, seed=3)
    assert out["accuracy"] == pytest.approx(0.2, abs=0.06) and out["std"] > 0
    assert fewshot_accuracy(np.zeros(64), emb, labels, shots=5, draws=5, seed=3) == out


def test_fewshot_skips_classes_without_a_record_beyond_the_shots() -> None:
    rng = np.random.default_rng(4)
    labels = np.array([0] * 6 + [1] * 6 + [2] * 5 + [3] + [NULL] * 2)
    out = fewshot_accuracy(np.zeros(4), rng.normal(size=(len(labels), 4)), labels, shots=5)
    assert out["classes"] == 2 and out["skipped_classes"] == 2 and out["queries"] == 2
    assert fewshot_accuracy(np.zeros(4), rng.normal(size=(6, 4)), np.zeros(6, dtype=np.int64), 1)["accuracy"] is None


def test_known_vs_unknown_auroc() -> None:
    # 6 known/unknown pairs, 5 ordered right (0.4 < 0.5 is the one wrong)
    assert known_vs_unknown_auroc(np.array([0.9, 0.8, 0.4]), np.array([0.5, 0.1])) == pytest.approx(5 / 6)
    assert known_vs_unknown_auroc(np.array([0.9]), np.array([0.1])) == 1.0
    assert known_vs_unknown_auroc(np.array([0.9]), np.array([])) is None
