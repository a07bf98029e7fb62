"""Nearest-neighbour search: faiss and the torch reference agree, chunking changes nothing, leave-one-out drops
the query itself, approximate indexes find most true neighbours; prototypes and the weighted k-NN vote."""

from __future__ import annotations

import numpy as np
import pytest

from taxotrain.inference import search as search_module
from taxotrain.inference.search import (
    IndexSpec,
    build_index,
    class_prototypes,
    knn_vote,
    l2_normalize,
    nearest_prototype,
    search,
    search_index,
    search_torch,
)
from taxotrain.taxonomy import NULL

pytest.importorskip("faiss")


def _random(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    return l2_normalize(np.random.default_rng(seed).normal(size=(n, d)))


def _brute(queries: np.ndarray, gallery: np.ndarray, k: int, exclude_self: bool = False
           ) -> tuple[np.ndarray, np.ndarray]:
    sims = queries.astype(np.float64) @ gallery.T.astype(np.float64)
    if exclude_self:
        np.fill_diagonal(sims, -np.inf)
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, idx, 1), idx


def _same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> None:
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)


def test_faiss_and_torch_agree_with_brute_force_whatever_the_chunks() -> None:
    queries, gallery = _random(100, seed=1), _random(2000, seed=2)
    expected = _brute(queries, gallery, 10)
    _same(search(queries, gallery, 10), expected)
    _same(search(queries, gallery, 10, chunk=7), expected)
    _same(search_torch(queries, gallery, 10), expected)
    _same(search_torch(queries, gallery, 10, chunk=13, gallery_chunk=97), expected)
    sims, idx = search(queries, gallery, 10)
    assert sims.dtype == np.float32 and idx.dtype == np.int64 and idx.shape == (100, 10)
    assert (np.diff(sims, axis=1) <= 0).all()


def test_exclude_self_drops_the_query_itself_in_both_backends() -> None:
    emb = _random(500, seed=3)
    expected = _brute(emb, emb, 5, exclude_self=True)
    faiss_result = search(emb, emb, 5, chunk=64, exclude_self=True)
    torch_result = search_torch(emb, emb, 5, chunk=64, gallery_chunk=111, exclude_self=True)
    _same(faiss_result, expected)
    _same(torch_result, expected)
    assert not (faiss_result[1] == np.arange(500)[:, None]).any()
    # without it, every query finds itself first
    assert (search(emb, emb, 1)[1][:, 0] == np.arange(500)).all()


def test_exclude_self_with_a_query_offset_searches_a_slice_of_the_gallery() -> None:
    emb = _random(300, seed=4)
    index = build_index(emb)
    part = search_index(index, emb[100:150], 4, exclude_self=True, query_offset=100)
    _same(part, tuple(a[100:150] for a in _brute(emb, emb, 4, exclude_self=True)))
    _same(search_torch(emb[100:150], emb, 4, exclude_self=True, query_offset=100, gallery_chunk=64), part)


def test_a_gallery_smaller_than_k_pads_with_minus_one_and_minus_inf() -> None:
    queries, gallery = _random(3, seed=5), _random(2, seed=6)
    for sims, idx in (search(queries, gallery, 4), search_torch(queries, gallery, 4)):
        assert (idx[:, 2:] == -1).all() and np.isneginf(sims[:, 2:]).all()
        assert sorted(idx[0, :2]) == [0, 1]
    sims, idx = search(gallery, gallery, 3, exclude_self=True)
    assert idx.tolist() == [[1, -1, -1], [0, -1, -1]]
    assert search_torch(gallery, gallery, 3, exclude_self=True)[1].tolist() == idx.tolist()


def test_equal_similarities_are_listed_by_ascending_gallery_index() -> None:
    gallery = np.eye(3, dtype=np.float32)[[0, 1, 0, 2, 0]]  # items 0, 2 and 4 are the same vector
    for _, idx in (search(gallery[:1], gallery, 3), search_torch(gallery[:1], gallery, 3)):
        assert idx.tolist() == [[0, 2, 4]]


def _clustered(n: int, clusters: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    return l2_normalize(centres[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, d)))


@pytest.mark.parametrize("method", ["ivf", "hnsw"])
def test_approximate_indexes_find_most_true_neighbours(method: str) -> None:
    gallery, queries = _clustered(5000, 40, 32, seed=7), _clustered(200, 40, 32, seed=7)[:200]
    queries = l2_normalize(queries + 0.05 * np.random.default_rng(8).normal(size=queries.shape))
    _, truth = search(queries, gallery, 10)
    _, found = search(queries, gallery, 10, index=method)
    recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth.tolist(), found.tolist(), strict=True)])
    assert recall >= 0.9


def test_index_spec_refuses_an_unknown_method() -> None:
    with pytest.raises(ValueError, match="ivf"):
        IndexSpec("annoy")


def test_without_faiss_search_falls_back_to_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    queries, gallery = _random(20, seed=9), _random(300, seed=10)
    monkeypatch.setattr(search_module, "faiss_available", lambda: False)
    index = build_index(gallery, "hnsw")
    assert index.faiss_index is None
    _same(search(queries, gallery, 5, index="ivf"), _brute(queries, gallery, 5))


def test_class_prototypes_average_normalise_and_leave_absent_classes_nan() -> None:
    emb = np.array([[1, 0], [0, 1], [3, 0], [5, 5]], dtype=np.float32)
    protos, present = class_prototypes(emb, np.array([0, 0, 2, NULL]), num_classes=3)
    assert present.tolist() == [True, False, True]
    np.testing.assert_allclose(protos[0], [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-6)
    np.testing.assert_allclose(protos[2], [1, 0], atol=1e-6)
    assert np.isnan(protos[1]).all()
    labels, sims = nearest_prototype(np.array([[0.6, 0.8], [0, -1]], dtype=np.float32), protos)
    # the second query scores -0.71 against class 0 and 0 against class 2; absent class 1, were it zeros, would
    # tie with 2 and win as the lower id
    assert labels.tolist() == [0, 2]
    np.testing.assert_allclose(sims[0], 1.4 * np.sqrt(0.5), atol=1e-6)


def test_nearest_prototype_never_picks_an_absent_class() -> None:
    protos = np.array([[np.nan, np.nan], [0.0, 1.0]], dtype=np.float32)
    labels, _ = nearest_prototype(np.array([[0.0, -1.0]], dtype=np.float32), protos)
    assert labels.tolist() == [1]
    labels, sims = nearest_prototype(np.array([[0.0, 1.0]], dtype=np.float32), protos[:1])
    assert labels.tolist() == [NULL] and np.isneginf(sims).all()


def test_weighted_vote_can_overrule_the_majority() -> None:
    labels = np.array([[0, 1, 1]])
    # similarity weights: class 0 has 0.9, class 1 has 0.3 + 0.3; a plain majority would say 1
    assert knn_vote(labels, np.array([[0.9, 0.3, 0.3]]), temperature=None)[0].tolist() == [0]
    # similar similarities: by raw similarity the two class-1 neighbours win (1.6 > 0.9), but exp(sim / 0.07)
    # shrinks each by exp(-0.1 / 0.07) = 0.24, so class 0 wins
    sims = np.array([[0.9, 0.8, 0.8]])
    pred, share = knn_vote(labels, sims, temperature=None)
    assert pred.tolist() == [1] and share[0] == pytest.approx(1.6 / 2.5)
    pred, share = knn_vote(labels, sims, temperature=0.07)
    assert pred.tolist() == [0] and share[0] == pytest.approx(1 / (1 + 2 * np.exp(-0.1 / 0.07)))


def test_vote_ignores_unknown_and_missing_neighbours_and_breaks_ties_by_the_nearer() -> None:
    labels = np.array([[2, NULL, 3], [NULL, NULL, NULL], [5, 4, 4]])
    sims = np.array([[0.5, 0.9, 0.5], [0.9, 0.8, 0.7], [0.8, 0.4, 0.4]])
    pred, share = knn_vote(labels, sims, temperature=None)
    assert pred.tolist() == [2, NULL, 5]
    assert share.tolist() == pytest.approx([0.5, 0.0, 0.5])
