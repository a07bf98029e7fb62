"""Galleries on small hand-made embeddings: new taxa get ids after the known ones, a taxon under a second parent is a
one-line error, the nearest prototype names each rank, 'unknown' below a threshold and the roll-up skips a rank a
taxon has no node at; plain arrays round-trip without pickle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from taxotrain.inference.gallery import UNKNOWN, Gallery, GalleryError, extend_tree
from taxotrain.tasks import InputBatch
from taxotrain.taxonomy import NULL, Tree


def _tree() -> Tree:
    # group -> subgroup -> class; 'snail' hangs straight under molluscs (no subgroup)
    ranks = ["group", "subgroup", "class"]
    names = [["crustaceans", "molluscs"], ["copepods"], ["calanus", "snail"]]
    ancestors = [np.array([[0, NULL, NULL], [1, NULL, NULL]]), np.array([[0, 0, NULL]]),
                 np.array([[0, 0, 0], [1, NULL, 1]])]
    return Tree(ranks, names, ancestors)


def test_new_taxa_get_ids_after_the_known_ones_and_known_ones_their_lineage() -> None:
    tree, labels, new = extend_tree(_tree(), [[None, None, "snail"], ["worms", None, "sagitta"],
                                              ["crustaceans", "copepods", "oithona"], [None, None, "sagitta"]])
    assert labels.tolist() == [[1, NULL, 1], [2, NULL, 2], [0, 0, 3], [2, NULL, 2]]
    assert new == {"group": ["worms"], "subgroup": [], "class": ["sagitta", "oithona"]}
    assert tree.names[2] == ["calanus", "snail", "sagitta", "oithona"] and tree.names[0][2] == "worms"
    assert tree.ancestors[2][3].tolist() == [0, 0, 3] and tree.ancestors[0][2].tolist() == [2, NULL, NULL]
    with pytest.raises(GalleryError, match="class 'snail' is under group 'molluscs', not 'crustaceans'"):
        extend_tree(_tree(), [["crustaceans", None, "snail"]])


def _gallery(thresholds: dict[str, float]) -> Gallery:
    # 2-D unit embeddings: calanus near (1, 0), snail near (0, 1)
    emb = np.array([[1.0, 0.0], [0.98, 0.2], [0.0, 1.0], [0.2, 0.98]], dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.array([[0, 0, 0], [0, 0, 0], [1, NULL, 1], [1, NULL, 1]])
    return Gallery(_tree(), emb, labels, np.array(["a", "b", "c", "d"]), np.zeros(4, np.int8),
                   {"format": "taxotrain-gallery", "thresholds": thresholds, "embedding_dim": 2})


def test_nearest_prototype_names_each_rank_unknown_below_its_threshold_and_the_roll_up() -> None:
    gallery = _gallery({"group": 0.5, "subgroup": 0.5, "class": 0.9})
    queries = np.array([[1.0, 0.05], [0.05, 1.0], [0.8, 0.6], [-1.0, 0.0]], dtype=np.float32)
    batch = InputBatch(None, [{"path": f"q{i}"} for i in range(5)], ["", "", "", "broken", ""])
    records = gallery.records(np.concatenate([queries[:3], queries[3:]]), batch, topk=2)
    assert [r.error for r in records] == ["", "", "", "broken", ""]
    calanus, snail, between, _, far = records
    assert {k: v[0] for k, v in calanus.labels.items()} == {"group": "crustaceans", "subgroup": "copepods",
                                                            "class": "calanus"}
    assert calanus.deepest == ("class", "calanus") and calanus.topk[0][0] == "calanus" and len(calanus.topk) == 2
    # snail skips the subgroup: the column is empty and the roll-up reaches the class all the same
    assert snail.labels["subgroup"][0] is None and snail.deepest == ("class", "snail")
    # cos 0.86 to calanus: enough for the group and subgroup (0.5), not for the class (0.9)
    assert [between.labels[r][0] for r in ("group", "subgroup", "class")] == ["crustaceans", "copepods", UNKNOWN]
    assert between.deepest == ("subgroup", "copepods") and between.deepest_threshold == 0.5
    assert between.labels["class"][1] == pytest.approx(float(np.dot([0.8, 0.6], [0.995, 0.1])), abs=0.02)
    assert far.labels["group"][0] == UNKNOWN and far.deepest is None  # opposite every prototype: unknown


def test_a_coarser_rank_that_disagrees_stops_the_roll_up() -> None:
    gallery = _gallery({"group": 0.0, "subgroup": 2.0, "class": 0.0})  # the subgroup never clears its threshold
    batch = InputBatch(None, [{"path": "q"}], [""])
    (record,) = gallery.records(np.array([[1.0, 0.0]], dtype=np.float32), batch, topk=1)
    assert record.labels["subgroup"][0] == UNKNOWN and record.deepest == ("group", "crustaceans")


def test_a_gallery_round_trips_as_plain_arrays(tmp_path: Path) -> None:
    gallery = _gallery({"group": 0.5, "subgroup": None, "class": 0.9})
    gallery.save(tmp_path)
    with np.load(tmp_path / "gallery" / "gallery.npz", allow_pickle=False) as arrays:
        assert set(arrays.files) == {"embedding", "labels", "path", "source"}
    back = Gallery.load(tmp_path)
    assert back.tree.to_dict() == gallery.tree.to_dict() and np.array_equal(back.embedding, gallery.embedding)
    assert back.thresholds == [0.5, float("inf"), 0.9]
    with pytest.raises(GalleryError, match="gallery build"):
        Gallery.load(tmp_path / "elsewhere")
