"""prepare --holdout-classes: whole classes moved out of train/val/test into a 'heldout' split, on real plankton."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from taxotrain.cli import main
from taxotrain.data.store import Store


def _prepare(manifest: Path, out: Path, *extra: str) -> int:
    return main(["prepare", "--manifest", str(manifest), "--ranks", "group,subgroup,class", "--out", str(out),
                 "--workers", "1", "--no-leak-check", *extra])


def test_a_fraction_of_the_classes_is_held_out_whole(plankton_manifest: Path, tmp_path: Path) -> None:
    assert _prepare(plankton_manifest, tmp_path / "h.h5", "--holdout-classes", "0.34") == 0
    store = Store(tmp_path / "h.h5")
    held = set(store.labels[store.splits["heldout"], 2].tolist())
    rest = np.concatenate([store.splits[s] for s in ("train", "val", "test")])
    assert len(held) == 2  # 34% of the subset's 6 classes
    assert not held & set(store.labels[rest, 2].tolist())
    assert len(rest) + len(store.splits["heldout"]) == len(store)
    assert sorted(np.concatenate([rest, store.splits["heldout"]]).tolist()) == list(range(len(store)))
    for name in ("val", "test"):  # the other classes are still stratified into every split
        assert set(store.labels[store.splits[name], 2].tolist()) == set(store.labels[rest, 2].tolist())


def test_a_file_of_names_and_a_coarser_rank(plankton_manifest: Path, tmp_path: Path) -> None:
    names = tmp_path / "new.txt"
    names.write_text("protist_noctiluca\namphipods\n")
    assert _prepare(plankton_manifest, tmp_path / "f.h5", "--holdout-classes", str(names)) == 0
    store = Store(tmp_path / "f.h5")
    assert {store.taxonomy.names[2][c] for c in store.labels[store.splits["heldout"], 2]} == {
        "protist_noctiluca", "amphipods"}
    groups = tmp_path / "groups.txt"
    groups.write_text("crustaceans\n")
    assert _prepare(plankton_manifest, tmp_path / "g.h5", "--holdout-classes", str(groups), "--holdout-rank",
                    "group") == 0
    store = Store(tmp_path / "g.h5")
    held_groups = {store.taxonomy.names[0][c] for c in store.labels[store.splits["heldout"], 0]}
    assert held_groups == {"crustaceans"} and len(set(store.labels[store.splits["heldout"], 2].tolist())) >= 2


@pytest.mark.parametrize("spec, says", [("1.5", "give a fraction in (0, 1)"), ("nofile.txt", "neither a fraction"),
                                        ("0.99", "would hold out all")])
def test_bad_holdout_is_one_line_and_writes_nothing(plankton_manifest: Path, tmp_path: Path, spec: str, says: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert _prepare(plankton_manifest, tmp_path / "bad.h5", "--holdout-classes", spec) != 0
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "bad.h5").exists()


def test_a_misspelt_class_name_is_named(plankton_manifest: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    names = tmp_path / "typo.txt"
    names.write_text("amphipods\nprotist_noctilucca\n")
    assert _prepare(plankton_manifest, tmp_path / "t.h5", "--holdout-classes", str(names)) != 0
    assert "'protist_noctilucca'" in capsys.readouterr().err


def test_a_store_without_holdout_has_no_heldout_split(plankton_store: Path) -> None:
    assert set(Store(plankton_store).splits) == {"train", "val", "test"}
