"""Group-aware splits: `prepare --group-by COLUMN` never lets a group straddle splits, stays stratified as far as
the groups allow, and says how far each split's class mix is from the whole (real iNaturalist photos by date)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from taxotrain.cli import main
from taxotrain.data.split import class_mix_distance, grouped_split, stratified_split
from taxotrain.data.store import Store

INAT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "inat_ucsc"


def test_groups_never_straddle_splits_and_classes_reach_every_split() -> None:
    rng = np.random.default_rng(0)
    # 60 groups (e.g. sites) of 1 to 30 records; each group holds mostly one of 4 classes
    groups, labels = [], []
    for g in range(60):
        size, main_class = int(rng.integers(1, 31)), g % 4
        for _ in range(size):
            groups.append(f"site{g}")
            labels.append([main_class if rng.random() < 0.8 else int(rng.integers(0, 4))])
    labels_ = np.array(labels)
    splits = grouped_split(labels_, groups, 0.15, 0.15, seed=1)
    assert sorted(np.concatenate(list(splits.values())).tolist()) == list(range(len(labels_)))
    owner = {}
    for name, idx in splits.items():
        for i in idx:
            assert owner.setdefault(groups[i], name) == name, f"{groups[i]} in {owner[groups[i]]} and {name}"
    for name, share in (("val", 0.15), ("test", 0.15)):
        assert abs(len(splits[name]) / len(labels_) - share) < 0.05
        assert set(labels_[splits[name], 0]) == {0, 1, 2, 3}  # stratified as far as the groups allow
    distance = class_mix_distance(labels_, splits)
    assert set(distance) == {"train", "val", "test"} and max(distance.values()) < 0.15
    assert grouped_split(labels_, groups, 0.15, 0.15, seed=1)["test"].tolist() == splits["test"].tolist()
    # a random split of the same records shares groups between splits: what --group-by prevents
    random = stratified_split(labels_, 0.15, 0.15, seed=1)[0]
    assert {groups[i] for i in random["train"]} & {groups[i] for i in random["test"]}


def test_prepare_groups_real_inaturalist_photos_by_observation_date(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    if not (INAT / "manifest.csv").is_file():
        pytest.skip(f"real iNaturalist photos not found at {INAT} (the ../shared folder beside the repo)")
    with (INAT / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    keep = {"Sequoia sempervirens", "Eschscholzia californica", "Ariolimax dolichophallus"}
    rows = [r for r in rows if r["scientificName"] in keep][:360]
    manifest = tmp_path / "m.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "filepath": str(INAT / r["filepath"])} for r in rows)
    out = tmp_path / "inat.h5"
    assert main(["prepare", "--manifest", str(manifest), "--ranks", "family,genus,scientificName",
                 "--group-by", "eventDate", "--workers", "1", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    dates = {r["eventDate"] for r in rows}
    assert f"{len(dates)} groups by 'eventDate', each inside one split" in said and "class mix distance" in said
    store = Store(out)
    date_of = {str(INAT / r["filepath"]): r["eventDate"] for r in rows}
    paths = store.paths
    with h5py.File(out) as f:
        attrs = dict(f.attrs)
    seen: dict[str, str] = {}
    for name in ("train", "val", "test"):
        assert len(store.splits[name]) > 0
        for i in store.splits[name]:
            assert seen.setdefault(date_of[paths[i]], name) == name
    assert attrs["group_by"] == "eventDate" and set(json.loads(attrs["class_mix_distance"])) == {"train", "val",
                                                                                                 "test"}


def test_group_by_needs_a_manifest_column(tmp_path: Path, synthetic_set: tuple[Path, Path],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    images, taxonomy = synthetic_set
    assert main(["prepare", str(images), "--taxonomy", str(taxonomy), "--ranks", "family,genus,species",
                 "--group-by", "site", "--out", str(tmp_path / "a.h5")]) == 2
    assert "--group-by site reads a column of a manifest" in capsys.readouterr().err
    manifest = tmp_path / "m.csv"
    manifest.write_text("filepath,species\nx.jpg,a\n")
    assert main(["prepare", "--manifest", str(manifest), "--ranks", "species", "--group-by", "site",
                 "--out", str(tmp_path / "b.h5")]) == 2
    err = capsys.readouterr().err
    assert "missing column(s) site" in err and err.count("\n") == 1
    # two groups cannot fill train, val and test
    some = sorted(images.rglob("*_00[0-5].jpg"))
    manifest.write_text("filepath,species,site\n" + "".join(f"{p},{p.parent.name},s{i % 2}\n"
                                                          for i, p in enumerate(some)))
    assert main(["prepare", "--manifest", str(manifest), "--ranks", "species", "--group-by", "site",
                 "--out", str(tmp_path / "b.h5")]) == 2
    err = capsys.readouterr().err
    assert "only 2 group(s), too few to give" in err and err.count("\n") == 1
    assert main(["prepare", "--manifest", str(manifest), "--ranks", "species", "--near-distance", "300",
                 "--out", str(tmp_path / "b.h5")]) == 2
    assert "--near-distance 300" in capsys.readouterr().err
    assert not (tmp_path / "a.h5").exists() and not (tmp_path / "b.h5").exists()


def test_few_groups_still_give_every_held_out_split_one() -> None:
    labels = np.array([[0]] * 10 + [[1]] * 10 + [[0]] * 10)
    groups = ["a"] * 10 + ["b"] * 10 + ["c"] * 10  # three equal groups, far larger than a 10% share
    splits = grouped_split(labels, groups, 0.1, 0.1, seed=0)
    assert all(len(splits[name]) == 10 for name in ("train", "val", "test"))
    assert grouped_split(labels, groups, 0.1, 0.0, seed=0)["test"].size == 0  # not asked for: none
