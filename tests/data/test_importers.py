"""The platform importers on hand-made exports of real plankton images: an EcoTaxa TSV (with its row of column
types, a hierarchy, an unvalidated label and samples as groups) and a COCO Camera Traps JSON (locations as groups,
an image with two categories, one with none)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from taxotrain.cli import main
from taxotrain.data.store import Store
from tests.conftest import need_plankton

HIERARCHY = {  # EcoTaxa-style hierarchies (root first), of different depths; "part" recurs under two parents
    "acantharia_protist": "living>Eukaryota>Harosa>Rhizaria>Acantharea>part",
    "copepod_cyclopoid_oithona": "living>Eukaryota>Opisthokonta>Arthropoda>Copepoda>Cyclopoida>Oithona",
    "chaetognath_sagitta": "living>Eukaryota>Opisthokonta>Chaetognatha>part",
}
CATEGORY = {"acantharia_protist": "part<Acantharea", "copepod_cyclopoid_oithona": "Oithona",
            "chaetognath_sagitta": "part<Chaetognatha"}  # EcoTaxa's display names are unique


def _images(tmp_path: Path, per_class: int = 12) -> dict[str, list[str]]:
    """Real plankton images copied into ``tmp_path/imgs`` (as an export ships them); names per class."""
    out: dict[str, list[str]] = {}
    (tmp_path / "imgs").mkdir()
    for cls in HIERARCHY:
        out[cls] = []
        for img in sorted((need_plankton() / "images" / cls).glob("*.jpg"))[:per_class]:
            shutil.copy(img, tmp_path / "imgs" / f"{cls}_{img.name}")
            out[cls].append(f"imgs/{cls}_{img.name}")
    return out


def test_ecotaxa_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = _images(tmp_path)
    tsv = tmp_path / "ecotaxa_export.tsv"
    columns = ["object_id", "img_file_name", "object_lat", "object_lon", "object_date", "object_time",
               "object_annotation_status", "object_annotation_category", "object_annotation_hierarchy", "sample_id"]
    sample = {}
    with tsv.open("w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t")
        writer.writerow(columns)
        writer.writerow(["[t]", "[t]", "[f]", "[f]", "[t]", "[t]", "[t]", "[t]", "[t]", "[t]"])
        for cls, names in files.items():
            for i, name in enumerate(names):
                status = "predicted" if i == 0 else "validated"
                hierarchy = HIERARCHY[cls]
                sample[name] = f"tow{i % 4}"
                writer.writerow([f"o{cls[:4]}{i}", name, "43.68", "7.31", "20130512", "101500", status,
                                 CATEGORY[cls], hierarchy, f"tow{i % 4}"])
    out = tmp_path / "eco.h5"
    assert main(["prepare", "--ecotaxa", str(tsv), "--ranks", "parent,category", "--workers", "1",
                 "--out", str(out)]) == 0
    said = capsys.readouterr().out
    store = Store(out)
    assert len(store.paths) == 33  # 3 predicted labels left out
    assert set(store.taxonomy.names[1]) == set(CATEGORY.values())  # the category
    assert set(store.taxonomy.names[0]) == {"Acantharea", "Cyclopoida", "Chaetognatha"}  # the next level up
    assert "4 groups by 'sample_id', each inside one split" in said
    owner: dict[str, str] = {}
    for split in ("train", "val", "test"):
        for i in store.splits[split]:
            assert owner.setdefault(sample[store.paths[i]], split) == split  # a tow never straddles splits
    with (tmp_path / "eco.report.csv").open(newline="") as fh:
        reasons = [r[-1] for r in csv.reader(fh)][1:]
    assert len(reasons) == 3 and all("object_annotation_status is 'predicted'" in r for r in reasons)
    meta = store.metadata()  # object_lat/lon, object_date/time as place and date metadata
    assert bool(meta["place_valid"].all()) and meta["lat"][0] == pytest.approx(43.68)
    assert set(meta["day_of_year"].tolist()) == {132.0} and set(meta["hour"].tolist()) == {10.25}

    capsys.readouterr()
    bad = tmp_path / "not_ecotaxa.tsv"
    bad.write_text("a\tb\n1\t2\n")
    assert main(["prepare", "--ecotaxa", str(bad), "--out", str(tmp_path / "x.h5")]) == 2
    err = capsys.readouterr().err
    assert "not an EcoTaxa export" in err and "img_file_name" in err and err.count("\n") == 1


def test_coco_camera_traps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = _images(tmp_path, per_class=10)
    categories = [{"id": i, "name": cls} for i, cls in enumerate(HIERARCHY)]
    images, annotations = [], []
    for c, names in enumerate(files.values()):
        for i, name in enumerate(names):
            image_id = f"{c}-{i}"
            images.append({"id": image_id, "file_name": name, "location": f"site{i % 5}",
                           "datetime": "2019-06-01 10:00:00", "width": 10, "height": 10})
            if not (c == 0 and i == 0):  # one image nobody annotated
                annotations.append({"id": f"a{image_id}", "image_id": image_id, "category_id": c})
            if c == 1 and i == 1:  # and one with two different animals
                annotations.append({"id": f"b{image_id}", "image_id": image_id, "category_id": 2})
    coco = tmp_path / "cct.json"
    coco.write_text(json.dumps({"info": {}, "images": images, "annotations": annotations,
                                "categories": categories}))
    taxonomy = tmp_path / "taxonomy.csv"
    with taxonomy.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["group", "class"])
        for cls in HIERARCHY:
            writer.writerow(["protist" if "protist" in cls else "metazoa", cls])
    out = tmp_path / "cct.h5"
    # file names are relative to the images' root, given as SOURCE
    assert main(["prepare", str(tmp_path), "--coco-ct", str(coco), "--taxonomy", str(taxonomy), "--ranks",
                 "group,class", "--workers", "1", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    store = Store(out)
    assert len(store.paths) == 28 and set(store.taxonomy.names[0]) == {"protist", "metazoa"}
    assert "5 groups by 'location', each inside one split" in said
    with (tmp_path / "cct.report.csv").open(newline="") as fh:
        reasons = sorted(r[-1] for r in list(csv.reader(fh))[1:])
    assert reasons[0].startswith("2 categories in one image") and reasons[1] == "no annotation"
    meta = store.metadata()  # the image's datetime as its date and hour
    assert set(meta["day_of_year"].tolist()) == {152.0} and set(meta["hour"].tolist()) == {10.0}

    capsys.readouterr()
    assert main(["prepare", str(tmp_path), "--coco-ct", str(coco), "--ranks", "group,class",
                 "--out", str(tmp_path / "y.h5")]) == 2
    err = capsys.readouterr().err
    assert "needs --taxonomy" in err and err.count("\n") == 1
