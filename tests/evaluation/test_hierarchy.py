"""Hierarchy metrics and consistent decoding on hand-made cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from taxotrain.evaluation.hierarchy import hierarchy_metrics
from taxotrain.taxonomy import NULL, Taxonomy
from taxotrain_runtime.decoding import choose_thresholds, decode, endpoint_heights, endpoints, roll_up

RANKS = ["family", "genus", "species"]
TAX = Taxonomy.from_rows(RANKS, [("F1", "G1", "S1"), ("F1", "G1", "S2"), ("F1", "G2", "S3"), ("F2", "G3", "S4"),
                                 ("F2", None, "S5"), ("F2", "G4", None)])


def path(species: str) -> list[int]:
    s = TAX.index(2, species)
    return TAX.ancestors[2][s].tolist()


def onehot_probs(paths: list[list[int]]) -> dict[str, np.ndarray]:
    out = {}
    for r, rank in enumerate(RANKS):
        p = np.full((len(paths), TAX.num_classes[r]), 0.01)
        for i, row in enumerate(paths):
            if row[r] != NULL:
                p[i, row[r]] = 1.0
        out[rank] = p / p.sum(1, keepdims=True)
    return out


def test_metrics_known_answers() -> None:
    target = np.array([path("S1"), path("S1"), path("S3"), path("S4"), path("S5"), [0, 0, NULL]])
    pred = np.array([path("S1"), path("S2"), path("S4"), path("S4"), path("S5"), path("S2")])
    m = hierarchy_metrics(pred, target, onehot_probs(pred.tolist()), TAX)
    # fully labelled: rows 0-4; all known ranks right in rows 0, 3, 4
    assert m["chain_accuracy"] == pytest.approx(3 / 5)
    # row 5 is known only to genus G1 and the prediction S2 is in G1: right at every known rank
    assert m["partial_chain_accuracy"] == pytest.approx(4 / 6)
    # mistakes: S1->S2 (siblings: height 1, distance 2), S3->S4 (other family: height 3, distance 6)
    assert m["mistakes"] == 2 and m["mistake_severity"] == pytest.approx(2.0)
    assert m["mistake_tree_distance"] == pytest.approx(4.0)
    # node sets: predicted 3+3+3+3+2+3 = 17 nodes; true 3+3+3+3+2+2 = 16; shared 3+2+0+3+2+2 = 12
    assert m["hierarchical_precision"] == pytest.approx(12 / 17)
    assert m["hierarchical_recall"] == pytest.approx(12 / 16)
    assert m["decoded_top1"]["species"] == pytest.approx(3 / 5)
    # the two mistakes' heights (1 and 3) over the 5 records with a species label
    assert m["hierarchical_distance_at_1"] == pytest.approx(4 / 5)


def test_coarse_from_fine_sums_fine_probabilities() -> None:
    probs = {"family": np.array([[0.1, 0.9]]), "genus": np.full((1, 4), 0.25),
             # S1 and S2 (family F1) get 0.3 each, S4 0.4: the fine head alone says F1 with 0.6
             "species": np.array([[0.3, 0.3, 0.0, 0.0, 0.4]])}
    target = np.array([path("S4")])
    m = hierarchy_metrics(np.array([path("S4")]), target, probs, TAX)
    assert m["coarse_from_fine"]["family"] == 0.0 and m["head_top1"]["family"] == 1.0


def test_decoding_is_consistent_with_the_tree() -> None:
    rng = np.random.default_rng(0)
    probs = {rank: rng.dirichlet(np.ones(n), size=200) for rank, n in zip(RANKS, TAX.num_classes, strict=True)}
    labels = decode(probs, TAX).labels
    paths, _ = endpoints(TAX)
    valid = {tuple(p) for p in paths}
    assert all(tuple(row) in valid for row in labels)
    assert len({tuple(r) for r in labels}) > 3


def test_decoding_follows_the_path_the_finer_heads_support() -> None:
    # the family head slightly prefers F2, but the species head puts 0.8 of its mass under F1 (S1+S2+S3)
    probs = {"family": np.array([[0.45, 0.55]]), "genus": np.array([[0.3, 0.3, 0.2, 0.2]]),
             "species": np.array([[0.3, 0.3, 0.2, 0.05, 0.15]])}
    d = decode(probs, TAX)
    assert d.labels[0].tolist() == path("S1") or d.labels[0].tolist() == path("S2")
    assert d.labels[0, 0] == TAX.index(0, "F1") and d.scores[0, 0] == pytest.approx(0.5 * (0.45 + 0.8))


def test_decoding_can_end_at_a_node_without_children_and_skip_a_rank() -> None:
    g4 = TAX.index(1, "G4")
    probs = onehot_probs([[1, g4, NULL], path("S5")])
    labels = decode(probs, TAX).labels
    assert labels[0].tolist() == [1, g4, NULL]
    assert labels[1].tolist() == path("S5") and labels[1, 1] == NULL


def test_roll_up_stops_at_the_deepest_confident_rank() -> None:
    rng = np.random.default_rng(1)
    target = np.array([path("S1")] * 50 + [path("S4")] * 50)
    scores = np.column_stack([np.full(100, 0.95), np.full(100, 0.8), rng.uniform(0, 1, 100)])
    decoded = target.copy()
    wrong = scores[:, 2] < 0.5  # species wrong exactly when unsure
    decoded[wrong, 2] = np.where(decoded[wrong, 2] == path("S1")[2], path("S2")[2], path("S5")[2])
    th = choose_thresholds(scores, decoded, target, precision=0.99)
    assert th[1] <= 0.8 and 0.5 <= th[2] <= 0.6  # genus takes what species leaves; family then gets nothing
    from taxotrain_runtime.decoding import Decoded

    deepest, label = roll_up(Decoded(decoded, scores), th)
    assert (deepest[~wrong] == 2).all() and (deepest[wrong] == 1).all()
    assert (label[wrong] == decoded[wrong, 1]).all()


def test_endpoint_heights_match_the_taxonomy() -> None:
    paths, end_rank = endpoints(TAX)
    heights = endpoint_heights(TAX, paths)
    for e in np.flatnonzero(end_rank == 2):
        for j in range(TAX.num_classes[2]):
            assert heights[e, j] == TAX.lca_height(2, int(paths[e, 2]), j)
    g4 = next(e for e in range(len(paths)) if paths[e, 1] == TAX.index(1, "G4"))
    # G4 (no species below it) shares only F2 with S4 and S5, nothing with S1
    assert heights[g4, TAX.index(2, "S4")] == 2 and heights[g4, TAX.index(2, "S1")] == 3


def test_risk_moves_an_unsure_prediction_to_where_the_mass_is() -> None:
    # S4 alone is the likeliest species (0.36), but 0.64 of the mass sits in genus G1 (S1, S2): answering S1 risks
    # an expected height of 0.32 * 1 + 0.36 * 3 = 1.40 against S4's 0.64 * 3 = 1.92
    species = np.zeros((1, 5))
    for name, p in (("S1", 0.32), ("S2", 0.32), ("S4", 0.36)):
        species[0, TAX.index(2, name)] = p
    probs = {"family": np.full((1, 2), 0.5), "genus": np.full((1, 4), 0.25), "species": species}
    assert decode(probs, TAX, beta=0, risk=0).labels[0].tolist() == path("S4")
    assert decode(probs, TAX, beta=0, risk=2).labels[0].tolist() in (path("S1"), path("S2"))


def _cascade_case(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two ranks, 400 records. Species is sure and right on the 300 easy ones, unsure and wrong on the 100 hard ones.
    Genus says 0.8 everywhere: right on the easy ones, right on only 70% of the hard ones. Over all records genus is
    about 92% precise at 0.8; over the records species leaves to it (hard ones only) it is 70%."""
    rng = np.random.default_rng(seed)
    n = 400
    target = np.column_stack([rng.integers(0, 3, n), rng.integers(0, 6, n)])
    hard = np.arange(n) >= 300
    decoded = target.copy()
    wrong_genus = hard & (rng.uniform(size=n) < 0.3)
    decoded[wrong_genus, 0] = (target[wrong_genus, 0] + 1) % 3
    decoded[hard, 1] = (target[hard, 1] + 1) % 6
    scores = np.column_stack([np.full(n, 0.8), np.where(hard, rng.uniform(0.2, 0.5, n), 0.97)])
    return scores, decoded, target


def test_thresholds_are_chosen_for_the_cascade_and_keep_their_precision_on_other_records() -> None:
    from taxotrain_runtime.decoding import Decoded, rollup_precision

    scores, decoded, target = _cascade_case(0)
    th = choose_thresholds(scores, decoded, target, precision=0.9)
    assert th[1] < 0.97 and th[0] > 1  # species reports the easy ones; what genus gets is never 90% right
    scores2, decoded2, target2 = _cascade_case(1)  # records the thresholds were not chosen on
    deepest, _ = roll_up(Decoded(decoded2, scores2), th)
    achieved = rollup_precision(decoded2, target2, deepest, ["genus", "species"])
    assert achieved["precision_at_reported_rank"] >= 0.85 and achieved["reported_at"]["genus"] == 0.0
    assert 0.1 < achieved["reported_at_none"] < 0.25  # most hard records are reported at no rank, and it says so
    assert sum(achieved["reported_at"].values()) + achieved["reported_at_none"] == pytest.approx(1.0)

    # choosing each rank over all records (the old way) lets genus report the hard ones at 70% precision
    independent = [choose_thresholds(scores[:, [r]], decoded[:, [r]], target[:, [r]], 0.9)[0] for r in range(2)]
    deepest, _ = roll_up(Decoded(decoded2, scores2), independent)
    broken = rollup_precision(decoded2, target2, deepest, ["genus", "species"])
    assert broken["precision_per_rank"]["genus"] < 0.8 and broken["reported_at_none"] == 0
