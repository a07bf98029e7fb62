"""prepare: verification report, taxonomy errors, manifests with Darwin Core columns, splits, atomic writes."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import taxotrain.data.prepare_images as prepare_mod
from taxotrain.cli import main
from taxotrain.data.images import image_norm
from taxotrain.data.ingest import IngestError
from taxotrain.data.prepare import prepare_images
from taxotrain.data.report import report_path
from taxotrain.data.split import stratified_split
from taxotrain.data.store import Store
from taxotrain.taxonomy import NULL, TaxonomyError
from tests.conftest import need_plankton, taxonomy_rows


def _plankton_folder(tmp_path: Path, classes: dict[str, int]) -> Path:
    """Class folders of real plankton images (copied into tmp so bad files can be planted beside them)."""
    root = need_plankton() / "images"
    out = tmp_path / "images"
    for cls, n in classes.items():
        (out / cls).mkdir(parents=True)
        for img in sorted((root / cls).glob("*.jpg"))[:n]:
            shutil.copy(img, out / cls / img.name)
    return out


def _taxonomy_csv(tmp_path: Path, classes: list[str], extra: list[list[str]] = ()) -> Path:
    rows = taxonomy_rows()
    path = tmp_path / "taxonomy.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["class", "subgroup", "group"])
        for c in classes:
            w.writerow([c, rows[c]["subgroup"], rows[c]["group"]])
        w.writerows(extra)
    return path


def test_bad_files_are_skipped_and_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    classes = {"amphipods": 12, "chaetognath_sagitta": 12, "acantharia_protist": 12}
    images = _plankton_folder(tmp_path, classes)
    good = next((images / "amphipods").glob("*.jpg")).read_bytes()
    (images / "amphipods" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (images / "amphipods" / "empty.jpg").write_bytes(b"")
    (images / "chaetognath_sagitta" / "readme.txt").write_text("not an image")
    (images / "chaetognath_sagitta" / ".DS_Store").write_bytes(b"\0\0")
    (images / "stray.jpg").write_bytes(good)
    tax = _taxonomy_csv(tmp_path, list(classes))
    out = tmp_path / "p.h5"
    code = main(["prepare", str(images), "--taxonomy", str(tax), "--ranks", "group,subgroup,class", "--out",
                 str(out), "--workers", "1"])
    assert code == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert "prepared 36 images" in summary and "skipped 5 file(s)" in summary
    with report_path(out).open() as fh:
        report = {r["path"]: r["reason"] for r in csv.DictReader(fh)}
    assert report["amphipods/truncated.jpg"] == "truncated image"
    assert report["amphipods/empty.jpg"].startswith("empty file")
    assert report["chaetognath_sagitta/readme.txt"].startswith("not an image")
    assert report["chaetognath_sagitta/.DS_Store"] == "hidden file"
    assert report["stray.jpg"] == "not inside a class folder"
    store = Store(out)
    assert len(store) == 36 and store.ranks == ["group", "subgroup", "class"]
    assert not list(tmp_path.glob(".*.tmp")), "temporary files must be gone"


def test_store_contents_round_trip(tmp_path: Path) -> None:
    classes = {"amphipods": 10, "protist_noctiluca": 10, "copepod_cyclopoid_oithona": 10}
    images = _plankton_folder(tmp_path, classes)
    out = tmp_path / "s.h5"
    prepare_images(images, out, ["group", "subgroup", "class"], _taxonomy_csv(tmp_path, list(classes)), workers=1)
    store = Store(out)
    for i, rel in enumerate(store.paths):  # bytes are the original encoded files, not decoded pixels
        assert bytes(store.read(i)) == (images / rel).read_bytes()
    tax = store.taxonomy
    sub = tax.ranks.index("subgroup")
    amph = [i for i, p in enumerate(store.paths) if p.startswith("amphipods/")]
    assert (store.labels[amph, sub] == NULL).all(), "a class directly under its group has a null subgroup"
    assert tax.names[0][store.labels[amph[0], 0]] == "crustaceans"
    assert store.attrs["grayscale"] and len(image_norm(store, 1)[0]) == 1 and len(image_norm(store, 3)[0]) == 3
    train = store.splits["train"]
    assert 0.2 < image_norm(store, 1)[0][0] < 1.0 and image_norm(store, 1)[1][0] > 0.01
    assert sorted(np.concatenate(list(store.splits.values())).tolist()) == list(range(len(store)))
    with h5py.File(out) as f:
        assert f.attrs["taxotrain_version"] and f.attrs["created"] and f.attrs["source"].endswith("images")
        assert f["images/bytes"].chunks is None, "contiguous, so it can be memory-mapped"
    assert len(train) == 24


def test_contradictory_taxonomy_names_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    classes = {"amphipods": 3, "chaetognath_sagitta": 3}
    images = _plankton_folder(tmp_path, classes)
    tax = _taxonomy_csv(tmp_path, list(classes), extra=[["amphipods", "", "protists"]])
    out = tmp_path / "x.h5"
    code = main(["prepare", str(images), "--taxonomy", str(tax), "--ranks", "group,subgroup,class", "--out",
                 str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "class 'amphipods' is under two group values" in err and "taxonomy.csv line 2" in err
    assert "taxonomy.csv line 4" in err
    assert not out.exists()


def test_folder_without_taxonomy_row_is_named(tmp_path: Path) -> None:
    classes = {"amphipods": 3, "chaetognath_sagitta": 3}
    images = _plankton_folder(tmp_path, classes)
    tax = _taxonomy_csv(tmp_path, ["amphipods"])
    with pytest.raises(TaxonomyError, match="no row for class folder.*chaetognath_sagitta"):
        prepare_images(images, tmp_path / "x.h5", ["group", "subgroup", "class"], tax)


def test_manifest_with_darwin_core_columns_and_partial_labels(tmp_path: Path) -> None:
    root = need_plankton() / "images"
    man = tmp_path / "m" / "manifest.csv"
    (tmp_path / "m" / "pics").mkdir(parents=True)
    rows = []
    for genus, family, cls in (("Oithona", "Oithonidae", "copepod_cyclopoid_oithona"),
                               ("Sagitta", "Sagittidae", "chaetognath_sagitta")):
        for k, img in enumerate(sorted((root / cls).glob("*.jpg"))[:8]):
            shutil.copy(img, tmp_path / "m" / "pics" / img.name)
            species = f"{genus} sp{k % 2}" if k < 6 else ""  # two records known only to genus
            rows.append([f"pics/{img.name}", family, genus, species, "25.1", "2014-06-01"])
    rows.append(["pics/missing.jpg", "Oithonidae", "Oithona", "Oithona sp0", "", ""])
    with man.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filepath", "family", "genus", "scientificName", "decimalLatitude", "eventDate"])
        w.writerows(rows)
    out = tmp_path / "m.h5"
    assert main(["prepare", "--manifest", str(man), "--out", str(out), "--workers", "1"]) == 0  # ranks from DwC
    store = Store(out)
    assert store.ranks == ["family", "genus", "scientificName"]
    assert store.taxonomy.names[2] == ["Sagitta sp0", "Sagitta sp1", "Oithona sp0", "Oithona sp1"] or \
        set(store.taxonomy.names[2]) == {"Oithona sp0", "Oithona sp1", "Sagitta sp0", "Sagitta sp1"}
    assert (store.labels[:, 2] == NULL).sum() == 4 and (store.labels[:, :2] != NULL).all()
    with report_path(out).open() as fh:
        assert [r["path"] for r in csv.DictReader(fh)] == ["pics/missing.jpg"]


def test_interrupted_prepare_leaves_old_store_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = _plankton_folder(tmp_path, {"amphipods": 4, "chaetognath_sagitta": 4})
    tax = _taxonomy_csv(tmp_path, ["amphipods", "chaetognath_sagitta"])
    out = tmp_path / "keep.h5"
    out.write_bytes(b"an older store the user still needs")

    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_mod, "_write_store", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare_images(images, out, ["group", "subgroup", "class"], tax, workers=1, overwrite=True)
    assert out.read_bytes() == b"an older store the user still needs"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_several_ranks_without_taxonomy_is_clear(tmp_path: Path) -> None:
    images = _plankton_folder(tmp_path, {"amphipods": 2})
    with pytest.raises(IngestError, match="add --taxonomy"):
        prepare_images(images, tmp_path / "x.h5", ["group", "class"])


def test_split_is_seeded_stratified_and_keeps_tiny_classes_in_train() -> None:
    labels = np.array([[0]] * 50 + [[1]] * 20 + [[2]] * 3 + [[3]] * 2 + [[4]] * 1)
    splits, small = stratified_split(labels, 0.1, 0.1, seed=0)
    again, _ = stratified_split(labels, 0.1, 0.1, seed=0)
    other, _ = stratified_split(labels, 0.1, 0.1, seed=1)
    assert all(np.array_equal(splits[k], again[k]) for k in splits)
    assert not np.array_equal(splits["test"], other["test"])
    for cls, n in ((0, 5), (1, 2), (2, 1)):
        assert (labels[splits["test"], 0] == cls).sum() == n
        assert (labels[splits["val"], 0] == cls).sum() == n
    assert sorted(k[1] for k in small) == [3, 4]
    assert (labels[splits["train"], 0] == 4).sum() == 1
