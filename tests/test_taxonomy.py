"""Taxonomy building: contradictions, imputation of coarser ranks, taxonomy order, (de)serialisation."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from taxotrain.taxonomy import NULL, Taxonomy, TaxonomyError

RANKS = ["family", "genus", "species"]
ROWS = [("Felidae", "Panthera", "Panthera leo"), ("Felidae", "Panthera", "Panthera tigris"),
        ("Felidae", "Felis", "Felis catus"), ("Canidae", "Canis", "Canis lupus"), ("Canidae", None, "Vulpes vulpes")]


def test_contradiction_names_both_rows() -> None:
    rows = ROWS + [("Canidae", "Panthera", "Panthera onca")]
    with pytest.raises(TaxonomyError) as err:
        Taxonomy.from_rows(RANKS, rows, [f"tax.csv line {i + 2}" for i in range(len(rows))])
    msg = str(err.value)
    assert "genus 'Panthera' is under two family values" in msg
    assert "tax.csv line 2" in msg and "tax.csv line 7" in msg and "\n" not in msg


def test_order_is_taxonomic_and_ancestors_known() -> None:
    tax = Taxonomy.from_rows(RANKS, ROWS)
    assert tax.names[0] == ["Canidae", "Felidae"]
    assert tax.names[2][:2] == ["Vulpes vulpes", "Canis lupus"]  # '' (no genus) sorts first within Canidae
    leo = tax.index(2, "Panthera leo")
    assert tax.lineage_names(2, leo) == ["Felidae", "Panthera", "Panthera leo"]
    vulpes = tax.index(2, "Vulpes vulpes")
    assert tax.ancestors[2][vulpes, 1] == NULL
    assert tax.parent(2, vulpes) == (0, tax.index(0, "Canidae"))


def test_encode_imputes_coarser_ranks_from_deepest_label() -> None:
    tax = Taxonomy.from_rows(RANKS, ROWS)
    enc = tax.encode((None, None, "Felis catus"))
    assert [tax.names[r][i] for r, i in enumerate(enc)] == ["Felidae", "Felis", "Felis catus"]
    genus_only = tax.encode((None, "Canis", ""))
    assert genus_only[2] == NULL and tax.names[0][genus_only[0]] == "Canidae"


def test_round_trips(tmp_path) -> None:
    tax = Taxonomy.from_rows(RANKS, ROWS)
    again = Taxonomy.from_dict(tax.to_dict())
    assert again.names == tax.names
    assert all(np.array_equal(a, b) for a, b in zip(again.ancestors, tax.ancestors, strict=True))
    with h5py.File(tmp_path / "t.h5", "w") as f:
        tax.to_h5(f.create_group("taxonomy"))
    with h5py.File(tmp_path / "t.h5", "r") as f:
        back = Taxonomy.from_h5(f["taxonomy"])
        parent = f["taxonomy/rank1/parent"][()]
    assert back.to_dict() == tax.to_dict()
    assert [tax.names[0][p] for p in parent] == [tax.lineage_names(1, g)[0] for g in range(len(tax.names[1]))]


def test_lca_height_and_tree_distance_on_an_uneven_tree() -> None:
    tax = Taxonomy.from_rows(RANKS, ROWS)
    sp = lambda name: tax.index(2, name)  # noqa: E731
    assert tax.lca_height(2, sp("Panthera leo"), sp("Panthera leo")) == 0
    assert tax.lca_height(2, sp("Panthera leo"), sp("Panthera tigris")) == 1  # same genus
    assert tax.lca_height(2, sp("Panthera leo"), sp("Felis catus")) == 2  # same family
    assert tax.lca_height(2, sp("Panthera leo"), sp("Canis lupus")) == 3  # only the root
    assert tax.tree_distance(2, sp("Panthera leo"), sp("Panthera tigris")) == 2
    assert tax.tree_distance(2, sp("Panthera leo"), sp("Canis lupus")) == 6
    assert tax.tree_distance(2, sp("Vulpes vulpes"), sp("Canis lupus")) == 3  # Vulpes hangs straight under Canidae
